# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _osrelease moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import (  # noqa: F401
    OS_RELEASE_PATHS,
    ReleaseFileError,
    parse_release,
    read_os_release,
    render_release,
)

__all__ = [
    'OS_RELEASE_PATHS',
    'ReleaseFileError',
    'parse_release',
    'read_os_release',
    'render_release',
]
