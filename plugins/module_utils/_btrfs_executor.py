# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: carrying out a plan, with a step boundary between every change for crash tests.

The switch of `current` follows the durability protocol measured in the field notes: everything the new
link directory and generation need is committed first, the new link is staged under a unique name in next/,
renamed over `current`, and then both directories are fsynced and the filesystem is committed (syncfs), so a
bootloader that does not replay the btrfs log tree sees the new generation once the module reports it.
"""

from __future__ import annotations

import os
import random
import string
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._actions import Action
from ansible_collections.immutable.root.plugins.module_utils._btrfs_layout import (
    CURRENT, FSTAB, LINKS, NEXT, ROOT_SUBVOLUME, SNAPSHOTS, STAGING_PREFIX, TEMPORARY_LINK_PREFIX, GenerationError,
    current_target, mounted_subvolumes, parse_current_target, parse_slot_target, render_fstab,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs_plan import DELETION_STEPS, Step
from ansible_collections.immutable.root.plugins.module_utils._btrfs_top import read_mountinfo, syncfs
from ansible_collections.immutable.root.plugins.module_utils._checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._durable import durable_replace, fsync_directory
from ansible_collections.immutable.root.plugins.module_utils._errors import CommandError
from ansible_collections.immutable.root.plugins.module_utils._runner import Runner

BOUNDARY = "btrfs_generation."


def _boundary(name: str) -> None:
    step_boundary(BOUNDARY + name)


class Executor:
    """Carries out steps in order; `done` lists the actions that completed."""

    def __init__(self, runner: Runner, top: str, template: str | None = None) -> None:
        self.runner = runner
        self.top = top
        self.template = template  # content for write_fstab_template
        self.done: list[Action] = []
        self._handlers: dict[str, t.Callable[[Step], None]] = {
            "create_directory": self._create_directory,
            "create_common": self._create_common,
            "write_fstab_template": self._write_fstab_template,
            "create_generation": self._create_generation,
            "inject_fstab": self._inject_fstab,
            "write_links": self._write_links,
            "switch_current": self._switch_current,
            "remove_links": self._remove_links,
            "remove_stray": self._remove_stray,
            "sync_deletions": self._sync_deletions,
        }

    def path(self, relative: str) -> str:
        return os.path.normpath(os.path.join(self.top, relative))

    def run(self, steps: t.Sequence[Step]) -> None:
        index = 0
        while index < len(steps):
            if steps[index].action in DELETION_STEPS:
                # All victims in one `btrfs subvolume delete`: one transaction instead of one per subvolume.
                end = index
                while end < len(steps) and steps[end].action in DELETION_STEPS:
                    end += 1
                self._delete(steps[index:end])
                index = end
                continue
            step = steps[index]
            self._handlers[step.action](step)
            self.done.append(step.as_action())
            _boundary(step.action)
            index += 1

    def _create_directory(self, step: Step) -> None:
        os.mkdir(self.path(step.target), 0o755)
        fsync_directory(self.top)

    def _create_common(self, step: Step) -> None:
        self.runner.run(["btrfs", "subvolume", "create", self.path(step.target)])

    def _write_fstab_template(self, step: Step) -> None:
        if self.template is None:
            raise GenerationError("no fstab template to write to %s" % self.path(FSTAB))
        durable_replace(self.path(FSTAB), self.template.encode("utf-8", "surrogateescape"), 0o644)

    def _create_generation(self, step: Step) -> None:
        name = step.names[0]
        directory = self.path("%s/%s" % (SNAPSHOTS, name))
        if not os.path.isdir(directory) or os.path.islink(directory):
            os.mkdir(directory, 0o755)  # an empty one may be left by an interrupted run
            fsync_directory(self.path(SNAPSHOTS))
        _boundary("generation_directory")
        destination = os.path.join(directory, ROOT_SUBVOLUME)
        source = step.source
        try:
            if source is None or source.kind == "empty":
                self.runner.run(["btrfs", "subvolume", "create", destination])
            elif source.kind == "generation":
                origin = self.path("%s/%s/%s" % (SNAPSHOTS, source.path, ROOT_SUBVOLUME))
                self.runner.run(["btrfs", "subvolume", "snapshot", origin, destination])
            elif source.kind == "snapshot":
                self.runner.run(["btrfs", "subvolume", "snapshot", t.cast(str, source.path), destination])
            else:
                self._copy_into_place(t.cast(str, source.path), name, destination)
        except CommandError:
            if not os.listdir(directory):
                os.rmdir(directory)
            raise

    def _copy_into_place(self, source: str, name: str, destination: str) -> None:
        """Copy into a staging subvolume and rename it into place, so a generation is never seen half-copied."""
        staging = self.path("%s/%s%s" % (SNAPSHOTS, STAGING_PREFIX, name))
        if os.path.lexists(staging):
            self.runner.run(["btrfs", "subvolume", "delete", staging])
        self.runner.run(["btrfs", "subvolume", "create", staging])
        _boundary("staging_created")
        try:
            # GNU cp: -a keeps owners, modes, links, xattrs and ACLs; -x stays on the source's filesystem.
            self.runner.run(["cp", "-a", "--one-file-system", "--", source.rstrip("/") + "/.", staging + "/"])
        except CommandError as exc:
            self.runner.run(["btrfs", "subvolume", "delete", staging], check=False)
            raise CommandError("copying %s into a new generation failed, the partial copy was deleted: %s"
                               % (source, exc.msg), cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)
        _boundary("copied")
        os.rename(staging, destination)
        fsync_directory(os.path.dirname(destination))
        fsync_directory(self.path(SNAPSHOTS))

    def _inject_fstab(self, step: Step) -> None:
        name = step.names[0]
        template = _read_template(self.path(FSTAB))
        root = self.path("%s/%s/%s" % (SNAPSHOTS, name, ROOT_SUBVOLUME))
        etc = os.path.join(root, "etc")
        if not os.path.lexists(etc):
            os.mkdir(etc, 0o755)
            fsync_directory(root)
        elif os.path.islink(etc) or not os.path.isdir(etc):
            raise GenerationError("generation %s: etc is not a directory (a symlink?); refusing to write its fstab "
                                  "through it" % name)
        fstab = os.path.join(etc, "fstab")
        mode = 0o644
        if os.path.isfile(fstab) and not os.path.islink(fstab):
            mode = os.stat(fstab).st_mode & 0o7777
        durable_replace(fstab, render_fstab(template, name).encode("utf-8", "surrogateescape"), mode)

    def _write_links(self, step: Step) -> None:
        directory = self.path(step.target)
        os.mkdir(directory, 0o755)
        for number, name in enumerate(step.names):
            os.symlink("../../%s/%s" % (SNAPSHOTS, name), os.path.join(directory, str(number)))
        fsync_directory(directory)
        fsync_directory(self.path(LINKS))

    def _switch_current(self, step: Step) -> None:
        links = step.names[0]
        # The generation and the link directory must be committed before anything can refer to them.
        syncfs(self.runner, self.top)
        _boundary("switch.committed")
        next_directory = self.path(NEXT)
        temporary = _unique_symlink(current_target(links), next_directory)
        fsync_directory(next_directory)
        _boundary("switch.staged")
        # rename(2), never `mv` without -T: that moves the link *into* the directory current points to.
        os.rename(temporary, self.path(CURRENT))
        _boundary("switch.renamed")
        fsync_directory(next_directory)
        fsync_directory(self.top)
        _boundary("switch.directories_synced")
        # fsync alone lands in the btrfs log tree, which bootloaders do not replay: commit.
        syncfs(self.runner, self.top)

    def _remove_links(self, step: Step) -> None:
        directory = self.path(step.target)
        for entry in sorted(os.listdir(directory)):
            os.unlink(os.path.join(directory, entry))
        os.rmdir(directory)
        fsync_directory(self.path(LINKS))

    def _remove_stray(self, step: Step) -> None:
        path = self.path(step.target)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            os.rmdir(path)
        fsync_directory(os.path.dirname(path))

    def _refuse_protected(self, steps: t.Sequence[Step]) -> None:
        """Check again right before deleting: a mount made or a switch done since the plan must still win."""
        mounted = mounted_subvolumes(read_mountinfo(), self.top, "/")[1]
        reachable = set()
        links = parse_current_target(os.readlink(self.path(CURRENT))) if os.path.islink(self.path(CURRENT)) else None
        if links:
            directory = self.path("%s/%s" % (LINKS, links))
            for entry in os.listdir(directory) if os.path.isdir(directory) else ():
                if os.path.islink(os.path.join(directory, entry)):
                    reachable.add(parse_slot_target(os.readlink(os.path.join(directory, entry))))
        for step in steps:
            if set(step.ids) & mounted or set(step.names) & reachable:
                raise GenerationError("%s became mounted or reachable from current since the plan was made; "
                                      "nothing was deleted" % step.target)

    def _delete(self, steps: t.Sequence[Step]) -> None:
        self._refuse_protected(steps)
        self.runner.run(["btrfs", "subvolume", "delete"] + [self.path(step.target) for step in steps])
        _boundary("deleted")
        for step in steps:
            if step.action == "delete_generation":
                directory = self.path("%s/%s" % (SNAPSHOTS, step.names[0]))
                if os.path.isdir(directory) and not os.listdir(directory):
                    os.rmdir(directory)
            self.done.append(step.as_action())
        fsync_directory(self.path(SNAPSHOTS))
        _boundary("delete_generation")

    def _sync_deletions(self, step: Step) -> None:
        # Without the commit, `subvolume sync` waits for the next periodic commit (~30 s, field notes).
        self.runner.run(["btrfs", "filesystem", "sync", self.top])
        self.runner.run(["btrfs", "subvolume", "sync", self.top] + [str(subvolid) for subvolid in step.ids])


def _read_template(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


def _unique_symlink(target: str, directory: str) -> str:
    """Create a symlink with a fresh name in directory (symlink(2) fails on EEXIST, so the name is ours)."""
    letters = random.SystemRandom()
    for _attempt in range(100):
        suffix = "".join(letters.choice(string.ascii_letters) for _letter in range(8))
        path = os.path.join(directory, "%s%d.%s" % (TEMPORARY_LINK_PREFIX, os.getpid(), suffix))
        try:
            os.symlink(target, path)
            return path
        except FileExistsError:
            continue
    raise GenerationError("no free temporary name in %s" % directory)
