# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs ioctls (linux/btrfs.h) and the inode number every subvolume root has."""

from __future__ import annotations

import errno
import fcntl

SUBVOLUME_ROOT_INODE = 256  # every btrfs subvolume's root directory, the top level's included
SUBVOL_INFO_SIZE = 504  # sizeof(struct btrfs_ioctl_get_subvol_info_args)
# Errors that mean "no such ioctl here" (not btrfs, an old kernel, another encoding): ask btrfs(8) instead.
IOCTL_UNAVAILABLE = (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP)


def ioc_read(kind: int, number: int, size: int) -> int:
    # The generic _IOR() encoding (x86, arm, riscv, s390); elsewhere the ioctl fails and btrfs(8) is used.
    return (2 << 30) | (size << 16) | (kind << 8) | number


GET_SUBVOL_INFO = ioc_read(0x94, 60, SUBVOL_INFO_SIZE)


def get_subvol_info(fd: int) -> bytes:
    """The raw struct btrfs_ioctl_get_subvol_info_args of the subvolume fd is the root of (BTRFS_IOC_GET_SUBVOL_INFO)."""
    buffer = bytearray(SUBVOL_INFO_SIZE)
    fcntl.ioctl(fd, GET_SUBVOL_INFO, buffer, True)
    return bytes(buffer)
