# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _runner moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._core.runner import (  # noqa: F401
    C_LOCALE,
    CommandResult,
    ModuleLike,
    Runner,
)

__all__ = [
    'C_LOCALE',
    'CommandResult',
    'ModuleLike',
    'Runner',
]
