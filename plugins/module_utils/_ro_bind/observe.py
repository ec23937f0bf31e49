# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: reading the system into an Observed state."""

from __future__ import annotations

import glob
import os
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry, read_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.model import Layer, Observed, Request
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.plan import classify_layers
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.render import unit_paths


def read_text(path: str) -> str | None:
    """The file's bytes as text, every byte kept ("\r" too: no newline translation)."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None


def observe_layers(path: str) -> tuple[tuple[Layer, ...], MountEntry | None]:
    return classify_layers(read_mountinfo(), path)


def observe(request: Request, runner: Runner | None = None) -> Observed:
    layers, parent = observe_layers(request.path)
    fstab = parse_fstab(read_text(request.fstab_path) or "")
    unit_file, wants_link = unit_paths(request)
    # sd_booted(3): systemd is PID 1 when this directory exists.
    systemd_running = os.path.isdir("/run/systemd/system")
    links = glob.glob("%s/*.wants/%s" % (glob.escape(request.unit_dir), glob.escape(os.path.basename(unit_file))))
    return Observed(
        layers=layers,
        parent=parent,
        fstab_entries=tuple(entry for entry in fstab if entry.mountpoint == request.path),
        unit_text=read_text(unit_file),
        unit_enabled=os.path.islink(wants_link),
        systemd_running=systemd_running,
        stale_wants=tuple(sorted(link for link in links if link != wants_link and os.path.islink(link))),
        bound_active=bound_unit_active(request, runner, systemd_running),
    )


def bound_unit_active(request: Request, runner: Runner | None, systemd_running: bool) -> bool:
    """Whether the unit the lock follows is active; without systemd running (an offline tree) it is not."""
    if request.bound_to is None:
        return True
    if not systemd_running or runner is None:
        return False
    return runner.run(["systemctl", "is-active", "--quiet", request.bound_to], check=False).rc == 0


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
