# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A private mount namespace for this process: what it mounts there dies with it and nobody else sees it."""

from __future__ import annotations

import ctypes

from ansible_collections.immutable.root.plugins.module_utils._linux import libc

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def enter_private_mount_namespace() -> None:
    """unshare(CLONE_NEWNS), then make every mount private: under systemd / is shared, and a mount made in
    the new namespace would otherwise propagate back to the host."""
    libc.call("unshare", ctypes.c_int(CLONE_NEWNS), what="unshare(CLONE_NEWNS)")
    libc.call("mount", None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None,
              what="mount(/, MS_REC|MS_PRIVATE)")
