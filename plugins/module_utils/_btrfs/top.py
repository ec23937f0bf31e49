# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: getting at the top level (subvolid 5) safely: verify it, mount it privately, lock it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import GenerationError, TOP_LEVEL_ID
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    CommandError, MountError, ParameterError,
)
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.btrfs_ioctl import SUBVOLUME_ROOT_INODE
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, mount_containing, read_mountinfo,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.namespace import enter_private_mount_namespace

LOCK_TIMEOUT = 600.0


def verify_top(runner: Runner, top: str) -> MountEntry:
    """The mount holding top, after checking that top is the root of subvolume 5 of a btrfs filesystem."""
    real = os.path.realpath(top)
    if real != top:
        raise ParameterError("top", "%s resolves to %s through a symlink; give the resolved path" % (top, real))
    if not os.path.isdir(top):
        raise ParameterError("top", "%s is not a directory" % top)
    mount = mount_containing(read_mountinfo(), top)
    if mount is None or mount.fstype != "btrfs":
        raise ParameterError("top", "%s is on %s, not on btrfs" % (top, mount.fstype if mount else "no mount"))
    inode = os.lstat(top).st_ino
    if inode != SUBVOLUME_ROOT_INODE:
        raise ParameterError("top", "%s is a directory inside a subvolume (inode %d), not the btrfs top level; "
                             "give the directory where subvolid=5 is mounted" % (top, inode))
    rootid = runner.run(["btrfs", "inspect-internal", "rootid", top]).stdout.strip()
    if rootid != str(TOP_LEVEL_ID):
        raise ParameterError("top", "%s is subvolume id %s, not the btrfs top level (id %d); mount the filesystem "
                             "with -o subvolid=%d or use the device option" % (top, rootid, TOP_LEVEL_ID, TOP_LEVEL_ID))
    return mount


def private_mount_namespace() -> None:
    """Move this process into a mount namespace of its own: a mount made there dies with the process, even
    when it is killed, and nobody else ever sees it."""
    try:
        enter_private_mount_namespace()
    except OSError as exc:
        raise MountError("device: cannot create a private mount namespace: %s" % exc.strerror)


@contextlib.contextmanager
def mounted_top_level(runner: Runner, device: str, read_only: bool) -> t.Iterator[str]:
    """Mount subvolid 5 of device on a temporary directory in a private mount namespace; always unmount."""
    private_mount_namespace()
    directory = tempfile.mkdtemp(prefix="immutable-root-btrfs-top-")
    try:
        options = "subvolid=%d%s" % (TOP_LEVEL_ID, ",ro" if read_only else "")
        try:
            runner.run(["mount", "-t", "btrfs", "-o", options, device, directory])
        except CommandError as exc:
            raise ParameterError("device", "cannot mount subvolid=%d of %s: %s" % (TOP_LEVEL_ID, device, exc.msg))
        try:
            yield directory
        finally:
            runner.run(["umount", directory], check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(directory)


@contextlib.contextmanager
def exclusive_lock(top: str, timeout: float = LOCK_TIMEOUT) -> t.Iterator[None]:
    """flock(2) on the top-level directory: one run at a time, also across other mounts of the filesystem."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                    raise GenerationError("top: could not lock %s within %.0f s (another btrfs_generation run holds "
                                          "it): %s" % (top, timeout, exc))
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
