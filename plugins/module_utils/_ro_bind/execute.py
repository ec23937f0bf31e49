# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: carrying out a plan."""

from __future__ import annotations

import contextlib
import fcntl
import os
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._core.durable import (
    durable_remove, durable_replace, durable_symlink,
)
from ansible_collections.immutable.root.plugins.module_utils._core.errors import MountError
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.mount_api import MountApiError, bind_read_only
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.model import Request, mount_request
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.observe import observe, observe_layers, read_text
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.plan import plan_mounts, plan_persistence
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.render import fstab_text, unit_text

Method = t.Literal["auto", "mount_api", "bind_remount"]
MAX_MOUNT_STEPS = 64


class Executor:
    """Carries out ro_bind actions in order; `done` lists what completed, `method` how the lock was made."""

    def __init__(self, runner: Runner, request: Request, method: Method) -> None:
        self.runner = runner
        self.request = request
        self.requested_method = method
        self.method: str | None = None
        self.done: list[Action] = []
        self._handlers: dict[str, t.Callable[[str], object]] = {
            "lock": self._lock,
            "remount_ro": self._remount_ro,
            "unmount": self._unmount,
            "write_fstab_entry": lambda target: self._rewrite_fstab(target, present=True),
            "remove_fstab_entry": lambda target: self._rewrite_fstab(target, present=False),
            "write_unit": self._write_unit,
            "enable_unit": self._enable_unit,
            "disable_unit": durable_remove,
            "remove_unit": durable_remove,
            "daemon_reload": self._daemon_reload,
        }

    def run(self) -> None:
        """Bring the system to the request, mounts first for present and last for absent."""
        if self.request.state == "present":
            self._converge_mounts()
            self._persist()
        else:
            self._persist()
            self._converge_mounts()

    def _do(self, action: Action) -> None:
        self._handlers[action.action](action.target)
        self.done.append(action)
        step_boundary("ro_bind.%s" % action.action, action.target)

    def _persist(self) -> None:
        for action in plan_persistence(self.request, observe(self.request, self.runner)):
            self._do(action)

    def _converge_mounts(self) -> None:
        # One step at a time, re-reading the mount table before each: on a shared mount, propagation
        # multiplies stacked binds and one umount can take the whole stack, so a precomputed list of
        # unmounts would be wrong.
        request = mount_request(self.request, observe(self.request, self.runner))
        for _step in range(MAX_MOUNT_STEPS):
            actions = plan_mounts(request, observe_layers(self.request.path)[0])
            if not actions:
                return
            self._do(actions[0])
        raise MountError("the mounts on %s did not settle after %d steps" % (self.request.path, MAX_MOUNT_STEPS))

    def _lock(self, path: str) -> None:
        if self.requested_method != "bind_remount":
            try:
                bind_read_only(path)
                self.method = "mount_api"
                return
            except MountApiError as exc:
                if self.requested_method == "mount_api" or not exc.unavailable:
                    raise MountError("open_tree/mount_setattr/move_mount on %s failed: %s" % (path, exc))
        # mount(2) needs two calls for a read-only bind; a crash between them leaves a writable bind,
        # which the next run finds and remounts read-only.
        self.runner.run(["mount", "--bind", path, path])
        step_boundary("ro_bind.bind_made")
        self.runner.run(["mount", "-o", "remount,bind,ro", path])
        self.method = "bind_remount"

    def _remount_ro(self, path: str) -> None:
        self.runner.run(["mount", "-o", "remount,bind,ro", path])

    def _unmount(self, path: str) -> None:
        # Only self-binds are ever unmounted, and beneath one the same directory stays visible; a busy one
        # (a running system's /usr: every process maps files from it) is detached lazily, so open files keep
        # the read-only view and everything opened afterwards sees the writable directory.
        result = self.runner.run(["umount", path], check=False)
        if result.rc != 0:
            if "busy" not in result.stderr:
                self.runner.run(["umount", path])
            self.runner.run(["umount", "--lazy", path])

    def _rewrite_fstab(self, fstab: str, present: bool) -> None:
        # A symlinked fstab is written through to its target (replacing the link would leave the real one stale).
        # The read-modify-write holds flock(2) on the target's directory: concurrent runs for other paths
        # sharing the file take turns instead of each writing back what it read.
        target = os.path.realpath(fstab)
        with locked_directory(os.path.dirname(target) or "/"):
            new = fstab_text(read_text(target) or "", self.request.path, present)
            durable_replace(target, new.encode("utf-8", "surrogateescape"), _mode_of(target, 0o644))

    def _write_unit(self, unit_file: str) -> None:
        os.makedirs(os.path.dirname(unit_file), exist_ok=True)
        durable_replace(unit_file, unit_text(self.request.path, self.request.bound_to).encode("utf-8"), 0o644)

    def _daemon_reload(self, target: str) -> None:
        self.runner.run(["systemctl", "daemon-reload"])

    def _enable_unit(self, wants_link: str) -> None:
        os.makedirs(os.path.dirname(wants_link), exist_ok=True)
        # Relative, so the link stays right when unit_dir lives inside an offline image.
        durable_symlink("../" + os.path.basename(wants_link), wants_link)


@contextlib.contextmanager
def locked_directory(path: str) -> t.Iterator[None]:
    """Hold an exclusive flock(2) on directory path (no lock file is left behind)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mode_of(path: str, default: int) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return default
