# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _usrmerge_manifest moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import (  # noqa: F401
    CHUNK,
    Hasher,
    MAX_SYMLINK_HOPS,
    O_DIR,
    UNCOMPARED_XATTRS,
    after,
    before,
    differences,
    expected,
    kind_of,
    measure,
    same_object,
    xattr_digest,
)

__all__ = [
    'CHUNK',
    'Hasher',
    'MAX_SYMLINK_HOPS',
    'O_DIR',
    'UNCOMPARED_XATTRS',
    'after',
    'before',
    'differences',
    'expected',
    'kind_of',
    'measure',
    'same_object',
    'xattr_digest',
]
