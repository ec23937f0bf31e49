# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _usrmerge_walk moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._usrmerge.observe import (  # noqa: F401
    Directories,
    MAX_OPEN_DIRECTORIES,
    Snapshot,
    backup_location,
    lstat,
    observe,
    open_relative,
    open_root,
    skip_flag_present,
    top_nodes,
)

__all__ = [
    'Directories',
    'MAX_OPEN_DIRECTORIES',
    'Snapshot',
    'backup_location',
    'lstat',
    'observe',
    'open_relative',
    'open_root',
    'skip_flag_present',
    'top_nodes',
]
