# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: reading the system into an Observed state, and carrying out a plan."""

from __future__ import annotations

import os
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._actions import Action
from ansible_collections.immutable.root.plugins.module_utils._checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._durable import (
    durable_remove, durable_replace, durable_symlink,
)
from ansible_collections.immutable.root.plugins.module_utils._errors import MountError
from ansible_collections.immutable.root.plugins.module_utils._fstab import parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._mount_api import MountApiError, bind_read_only
from ansible_collections.immutable.root.plugins.module_utils._mountinfo import MountEntry, parse_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._ro_bind import (
    Layer, Observed, Request, classify_layers, fstab_text, plan_mounts, plan_persistence, unit_paths, unit_text,
)
from ansible_collections.immutable.root.plugins.module_utils._runner import Runner

Method = t.Literal["auto", "mount_api", "bind_remount"]

MOUNTINFO = "/proc/self/mountinfo"
MAX_MOUNT_STEPS = 64


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def observe_layers(path: str) -> tuple[tuple[Layer, ...], MountEntry | None]:
    return classify_layers(parse_mountinfo(read_text(MOUNTINFO) or ""), path)


def observe(request: Request) -> Observed:
    layers, parent = observe_layers(request.path)
    fstab = parse_fstab(read_text(request.fstab_path) or "")
    unit_file, wants_link = unit_paths(request)
    return Observed(
        layers=layers,
        parent=parent,
        fstab_entries=tuple(entry for entry in fstab if entry.mountpoint == request.path),
        unit_text=read_text(unit_file),
        unit_enabled=os.path.islink(wants_link),
        # sd_booted(3): systemd is PID 1 when this directory exists.
        systemd_running=os.path.isdir("/run/systemd/system"),
    )


def open_writers(path: str) -> list[dict[str, t.Any]]:
    """Processes holding a file under path open for writing: a read-only bind does not stop writes through
    descriptors opened before it (the check is best effort; processes that vanish meanwhile are skipped)."""
    writers = []
    for pid in sorted((entry for entry in os.listdir("/proc") if entry.isdigit()), key=int):
        fd_dir = "/proc/%s/fd" % pid
        try:
            descriptors = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in descriptors:
            try:
                target = os.readlink("%s/%s" % (fd_dir, fd))
                if target != path and not target.startswith(path.rstrip("/") + "/"):
                    continue
                with open("/proc/%s/fdinfo/%s" % (pid, fd), encoding="ascii") as handle:
                    flags = next(line.split()[1] for line in handle if line.startswith("flags:"))
                with open("/proc/%s/comm" % pid, encoding="utf-8", errors="replace") as handle:
                    command = handle.read().strip()
            except (OSError, StopIteration):
                continue
            if int(flags, 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                writers.append({"pid": int(pid), "command": command, "file": target})
    return writers


def namespace_warnings() -> list[str]:
    """Mounts made outside PID 1's mount namespace are invisible to the rest of the system."""
    try:
        ours, init = os.readlink("/proc/self/ns/mnt"), os.readlink("/proc/1/ns/mnt")
    except OSError:
        return []
    if ours == init:
        return []
    return ["this process runs in mount namespace %s, PID 1 in %s: the self-bind is visible only inside this "
            "namespace" % (ours, init)]


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
        step_boundary("ro_bind.%s" % action.action)

    def _persist(self) -> None:
        for action in plan_persistence(self.request, observe(self.request)):
            self._do(action)

    def _converge_mounts(self) -> None:
        # One step at a time, re-reading the mount table before each: on a shared mount, propagation
        # multiplies stacked binds and one umount can take the whole stack, so a precomputed list of
        # unmounts would be wrong.
        for _step in range(MAX_MOUNT_STEPS):
            actions = plan_mounts(self.request, observe_layers(self.request.path)[0])
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
        self.runner.run(["umount", path])

    def _rewrite_fstab(self, fstab: str, present: bool) -> None:
        new = fstab_text(read_text(fstab) or "", self.request.path, present)
        durable_replace(fstab, new.encode("utf-8", "surrogateescape"), _mode_of(fstab, 0o644))

    def _write_unit(self, unit_file: str) -> None:
        os.makedirs(os.path.dirname(unit_file), exist_ok=True)
        durable_replace(unit_file, unit_text(self.request.path).encode("utf-8"), 0o644)

    def _daemon_reload(self, target: str) -> None:
        self.runner.run(["systemctl", "daemon-reload"])

    def _enable_unit(self, wants_link: str) -> None:
        os.makedirs(os.path.dirname(wants_link), exist_ok=True)
        # Relative, so the link stays right when unit_dir lives inside an offline image.
        durable_symlink("../" + os.path.basename(wants_link), wants_link)


def _mode_of(path: str, default: int) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return default
