# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _units moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._linux.units import (  # noqa: F401
    escape_path,
    mount_unit_name,
)

__all__ = [
    'escape_path',
    'mount_unit_name',
]
