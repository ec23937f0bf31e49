# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""chroot_command: make the planned mounts in this process's private mount namespace, run, always undo."""

from __future__ import annotations

import contextlib
import os
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._chroot.plan import Mount
from ansible_collections.immutable.root.plugins.module_utils._core.errors import MountError
from ansible_collections.immutable.root.plugins.module_utils._core.runner import CommandResult, Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import read_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._linux.namespace import enter_private_mount_namespace


def _target_directory(root: str, target: str) -> str:
    """root + target, created when missing, refusing a symlink anywhere on the way (it could lead out)."""
    path = root
    for part in target.strip("/").split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise MountError("%s in the chroot is a symlink (%s); refusing to mount through it"
                             % (target, os.readlink(path)))
        if not os.path.exists(path):
            os.mkdir(path, 0o755)
    return path


def mounted_below(directory: str) -> list[str]:
    return [entry.mountpoint for entry in read_mountinfo()
            if entry.mountpoint == directory or entry.mountpoint.startswith(directory + "/")]


@contextlib.contextmanager
def prepared_root(runner: Runner, root: str | None, mounts: t.Sequence[Mount]) -> t.Iterator[str]:
    """The chroot directory with every mount made; afterwards nothing stays mounted there."""
    try:
        enter_private_mount_namespace()
    except OSError as exc:
        raise MountError("cannot create a private mount namespace: %s" % exc.strerror)
    temporary = root is None
    directory = tempfile.mkdtemp(prefix="immutable-root-chroot-") if temporary else t.cast(str, root)
    try:
        for mount in mounts:
            if mount.kind == "root":
                runner.run(["mount", "-t", "btrfs", "-o", mount.detail, mount.source, directory])
                continue
            target = _target_directory(directory, mount.target)
            if mount.kind == "proc":
                runner.run(["mount", "-t", "proc", "proc", target])
            elif mount.kind == "subvolume":
                runner.run(["mount", "-t", "btrfs", "-o", mount.detail, mount.source, target])
            else:
                runner.run(["mount", "--rbind", mount.source, target])
        yield directory
    finally:
        # Recursive and lazy: a process the command left behind may still hold a mount busy; the namespace
        # dies with this process in any case, so nobody else ever saw these mounts.
        if mounted_below(directory):
            runner.run(["umount", "-R", "-l", directory], check=False)
        left = mounted_below(directory)
        if temporary and not left:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if left:
            raise MountError("could not unmount %s from the chroot" % ", ".join(left))


def run_in_chroot(runner: Runner, directory: str, argv: t.Sequence[str], environ: dict[str, str]) -> CommandResult:
    """chroot(8) changes into / of the new root itself; the exit code is the command's (125-127: chroot's own)."""
    return runner.run(["chroot", directory] + list(argv), check=False, environ=environ)
