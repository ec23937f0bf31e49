# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _mountinfo moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (  # noqa: F401
    MountEntry,
    MountinfoError,
    by_id,
    escape,
    mount_containing,
    parse_line,
    parse_mountinfo,
    root_for,
    stack_at,
    unescape,
)

__all__ = [
    'MountEntry',
    'MountinfoError',
    'by_id',
    'escape',
    'mount_containing',
    'parse_line',
    'parse_mountinfo',
    'root_for',
    'stack_at',
    'unescape',
]
