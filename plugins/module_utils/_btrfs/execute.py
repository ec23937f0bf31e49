# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: carrying out a plan's steps, each one durable before the next."""

from __future__ import annotations

import errno
import os
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    BUILDING, CURRENT, DELETION_STEPS, FSTAB, GenerationError, LINKS, NEXT, ROOT_SUBVOLUME, SNAPSHOTS, STAGING_PREFIX, Step,
    TENTATIVE, TEMPORARY_LINK_PREFIX, parse_current_target, parse_slot_target,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.observe import read_template
from ansible_collections.immutable.root.plugins.module_utils._btrfs.parse import mounted_subvolumes
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import current_target, render_fstab, slot_target
from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._core.durable import (
    durable_replace, durable_replace_at, fsync_directory, unique_symlink,
)
from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import open_nofollow
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.fs import syncfs_path
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import read_mountinfo

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
            "record_tentative": self._record_tentative,
            "record_building": self._record_building,
            "clear_building": self._clear_building,
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
        if step.source is None:
            self.runner.run(["btrfs", "subvolume", "create", self.path(step.target)])
            return
        # Filled in a staging subvolume renamed into place: a common appears only complete, and a run killed
        # half-way leaves a staging subvolume the rerun replaces, never a half-filled common it would skip.
        destination = self.path(step.target)
        staging = os.path.join(os.path.dirname(destination), STAGING_PREFIX + os.path.basename(destination))
        if os.path.lexists(staging):
            self._delete_staging(staging)
        self.runner.run(["btrfs", "subvolume", "create", staging])
        origin = t.cast(str, step.source.path)
        try:
            # --reflink=auto: from a subvolume of the same filesystem the data is shared, not copied.
            self.runner.run(["cp", "-a", "--one-file-system", "--reflink=auto", "--", origin.rstrip("/") + "/.",
                             staging + "/"])
        except CommandError as exc:
            self._discard_staging(staging)
            raise CommandError("filling %s from %s failed, the partial copy was deleted: %s"
                               % (step.target, origin, exc.msg), cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout,
                               stderr=exc.stderr)
        _boundary("common_filled")
        os.rename(staging, destination)
        fsync_directory(os.path.dirname(destination))

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
            self._delete_staging(staging)
        self.runner.run(["btrfs", "subvolume", "create", staging])
        _boundary("staging_created")
        try:
            # GNU cp: -a keeps owners, modes, links, xattrs and ACLs; -x stays on the source's filesystem.
            self.runner.run(["cp", "-a", "--one-file-system", "--", source.rstrip("/") + "/.", staging + "/"])
        except CommandError as exc:
            self._discard_staging(staging)
            raise CommandError("copying %s into a new generation failed, the partial copy was deleted: %s"
                               % (source, exc.msg), cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)
        _boundary("copied")
        os.rename(staging, destination)
        fsync_directory(os.path.dirname(destination))
        fsync_directory(self.path(SNAPSHOTS))

    def _inject_fstab(self, step: Step) -> None:
        name = step.names[0]
        template = read_template(self.top)
        root = self.path("%s/%s/%s" % (SNAPSHOTS, name, ROOT_SUBVOLUME))
        # Every step through descriptors opened with O_NOFOLLOW: a generation's etc (or etc/fstab) that is,
        # or becomes, a symlink can never redirect the write to the host or another generation.
        root_fd = open_nofollow(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                os.mkdir("etc", 0o755, dir_fd=root_fd)
                os.fsync(root_fd)
            except FileExistsError:
                pass
            try:
                etc_fd = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise GenerationError("generation %s: etc is not a directory (a symlink?); refusing to write its "
                                      "fstab through it" % name)
        finally:
            os.close(root_fd)
        try:
            mode = 0o644
            try:
                status = os.stat("fstab", dir_fd=etc_fd, follow_symlinks=False)
                if stat.S_ISREG(status.st_mode):
                    mode = status.st_mode & 0o7777
            except FileNotFoundError:
                pass
            durable_replace_at(etc_fd, "fstab", render_fstab(template, name).encode("utf-8", "surrogateescape"), mode)
        finally:
            os.close(etc_fd)

    def _write_links(self, step: Step) -> None:
        directory = self.path(step.target)
        os.mkdir(directory, 0o755)
        for number, name in enumerate(step.names):
            os.symlink(slot_target(name), os.path.join(directory, str(number)))
        fsync_directory(directory)
        fsync_directory(self.path(LINKS))

    def _record_tentative(self, step: Step) -> None:
        # Durable before the switch: a boot of the new generation must always find what to fall back to.
        durable_replace(self.path(TENTATIVE), (step.detail + "\n").encode("utf-8"), 0o644)

    def _record_building(self, step: Step) -> None:
        # Durable before the snapshot exists: a cut afterwards always leaves the name for the next run to delete.
        durable_replace(self.path(BUILDING), (step.detail + "\n").encode("utf-8"), 0o644)

    def _clear_building(self, step: Step) -> None:
        try:
            os.unlink(self.path(BUILDING))
        except FileNotFoundError:
            pass
        fsync_directory(self.top)

    def _switch_current(self, step: Step) -> None:
        links = step.names[0]
        # The generation and the link directory must be committed before anything can refer to them.
        syncfs_path(self.top)
        _boundary("switch.committed")
        next_directory = self.path(NEXT)
        temporary = unique_symlink(current_target(links), next_directory, TEMPORARY_LINK_PREFIX)
        fsync_directory(next_directory)
        _boundary("switch.staged")
        # rename(2), never `mv` without -T: that moves the link *into* the directory current points to.
        os.rename(temporary, self.path(CURRENT))
        _boundary("switch.renamed")
        fsync_directory(next_directory)
        fsync_directory(self.top)
        _boundary("switch.directories_synced")
        # fsync alone lands in the btrfs log tree, which bootloaders do not replay: commit.
        syncfs_path(self.top)

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
        self._wait_for_cleaner(step.ids)

    def _wait_for_cleaner(self, ids: t.Sequence[int], check: bool = True) -> None:
        """Return once the btrfs cleaner has dropped the deleted subvolumes ids and their space is free: it
        drops them asynchronously, so a next try right after a deletion would still find the disk full."""
        # Without the commit, `subvolume sync` waits for the next periodic commit (~30 s, measured on kernel 6.18).
        self.runner.run(["btrfs", "filesystem", "sync", self.top], check=check)
        self.runner.run(["btrfs", "subvolume", "sync", self.top] + [str(subvolid) for subvolid in ids], check=check)
        # The extents the cleaner freed stay pinned (counted as used) until the transaction that freed them commits.
        self.runner.run(["btrfs", "filesystem", "sync", self.top], check=check)

    def _subvolume_id(self, path: str) -> int:
        return int(self.runner.run(["btrfs", "inspect-internal", "rootid", path]).stdout.strip())

    def _delete_staging(self, staging: str) -> None:
        """Delete a staging subvolume left by an interrupted run and wait until its space is back."""
        subvolid = self._subvolume_id(staging)
        self.runner.run(["btrfs", "subvolume", "delete", staging])
        self._wait_for_cleaner([subvolid])

    def _discard_staging(self, staging: str) -> None:
        """After a failed copy: delete the partial copy and wait for its space; errors here must not hide the
        copy's own, so they are not raised (a leftover staging subvolume is deleted by the next run). The id is
        read here, on the failure path only, so a copy that succeeds costs no extra process."""
        rootid = self.runner.run(["btrfs", "inspect-internal", "rootid", staging], check=False)
        if self.runner.run(["btrfs", "subvolume", "delete", staging], check=False).rc == 0:
            # Without its id, wait for every pending deletion: slower, never wrong.
            ids = [int(rootid.stdout.strip())] if rootid.rc == 0 and rootid.stdout.strip().isdigit() else []
            self._wait_for_cleaner(ids, check=False)
