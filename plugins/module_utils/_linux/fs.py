# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filesystem calls Python's os module lacks: renameat2(2) and syncfs(2)."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat

from ansible_collections.immutable.root.plugins.module_utils._linux import libc

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# renameat2(2) has no glibc wrapper before 2.28; these are the syscall numbers (asm/unistd.h).
RENAMEAT2_SYSCALL = {
    "x86_64": 316, "i386": 353, "i686": 353, "aarch64": 276, "armv7l": 382, "armv6l": 382, "riscv64": 276,
    "loongarch64": 276, "ppc64le": 357, "ppc64": 357, "s390x": 347, "mips64": 5311, "sparc64": 345,
}
# Errors that mean "this kernel or filesystem does not do the flag", not "the rename failed".
FLAG_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS)


def renameat2(old_fd: int, old: str, new_fd: int, new: str, flags: int) -> None:
    """renameat2(2): through the C library's wrapper, or the raw syscall where the C library has none."""
    args = (ctypes.c_int(old_fd), os.fsencode(old), ctypes.c_int(new_fd), os.fsencode(new), ctypes.c_uint(flags))
    what = "renameat2(%s, %s, %#x)" % (old, new, flags)
    if libc.function("renameat2") is not None:
        libc.call("renameat2", *args, what=what, filename=new)
        return
    machine = platform.machine()
    if machine not in RENAMEAT2_SYSCALL:
        raise OSError(errno.ENOSYS, "%s: neither in the C library nor known for %s" % (what, machine), new)
    libc.syscall(RENAMEAT2_SYSCALL[machine], *args, what=what, filename=new)


def rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    """Rename old to new inside dir_fd unless new exists (EEXIST then); without the flag, check and rename."""
    try:
        renameat2(dir_fd, old, dir_fd, new, RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in FLAG_UNSUPPORTED:
            raise
        try:
            os.lstat(new, dir_fd=dir_fd)
        except FileNotFoundError:
            os.rename(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)


def exchange(old_fd: int, old: str, new_fd: int, new: str) -> None:
    """Swap two names atomically (RENAME_EXCHANGE); OSError with FLAG_UNSUPPORTED errnos where impossible."""
    renameat2(old_fd, old, new_fd, new, RENAME_EXCHANGE)


def syncfs(fd: int, what: str = "") -> None:
    """Commit the filesystem holding fd; raise OSError when it fails (a sync whose result is unknown is none)."""
    libc.call("syncfs", ctypes.c_int(fd), what="syncfs(%s)" % (what or fd))


def syncfs_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syncfs(fd, path)
    finally:
        os.close(fd)


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file path, at most limit of them; OSError for anything else (ELOOP: a symlink,
    EINVAL: not a regular file, EFBIG: larger than limit).

    O_NOFOLLOW|O_NONBLOCK: a symlink is never followed at the last component, and a FIFO or a device behind the name
    neither blocks nor is read without end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, "larger than %d bytes" % limit, path)
        return b"".join(chunks)
    finally:
        os.close(fd)
