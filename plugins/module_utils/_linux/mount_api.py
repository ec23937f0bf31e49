# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernel's new mount API (Linux >= 5.12 for mount_setattr), called through the one libc handle."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._core.paths import open_nofollow
from ansible_collections.immutable.root.plugins.module_utils._linux import libc

# Syscalls added since Linux 5.1 share one number on every architecture except alpha (which adds 110).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1

# Errors that mean "this kernel or sandbox does not offer the API": fall back to mount(2).
UNAVAILABLE_ERRNOS = (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP)


class MountApiError(OSError):
    """A new-mount-API syscall failed; errno tells whether falling back makes sense."""

    @property
    def unavailable(self) -> bool:
        return self.errno in UNAVAILABLE_ERRNOS


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _syscall(name: str, number: int, *args: object) -> int:
    if platform.machine().startswith("alpha"):
        raise MountApiError(errno.ENOSYS, "%s: syscall numbers differ on alpha" % name)
    try:
        return libc.syscall(number, *args, what=name)
    except OSError as exc:
        raise MountApiError(exc.errno, exc.strerror)


def bind_read_only(path: str) -> None:
    """Mount a read-only bind of path onto path as one atomic attach.

    path is opened component by component without following symlinks, and the clone and the attach both
    go through that descriptor: what is locked is the directory that was checked, never a symlink's target
    planted after the check.
    """
    try:
        target = open_nofollow(path)
    except OSError as exc:
        raise MountApiError(exc.errno, "%s changed since it was checked: %s" % (path, exc.strerror))
    try:
        empty = ctypes.c_char_p(b"")
        tree = _syscall("open_tree", SYS_OPEN_TREE, ctypes.c_long(target), empty,
                        ctypes.c_long(OPEN_TREE_CLONE | os.O_CLOEXEC | AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
        try:
            step_boundary("mount_api.cloned")
            attributes = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
            _syscall("mount_setattr", SYS_MOUNT_SETATTR, ctypes.c_long(tree), empty,
                     ctypes.c_long(AT_EMPTY_PATH), ctypes.byref(attributes),
                     ctypes.c_size_t(ctypes.sizeof(attributes)))
            step_boundary("mount_api.read_only")
            _syscall("move_mount", SYS_MOVE_MOUNT, ctypes.c_long(tree), empty, ctypes.c_long(target), empty,
                     ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
        finally:
            # Closing the fd of a clone that was never attached dissolves it.
            os.close(tree)
    finally:
        os.close(target)
