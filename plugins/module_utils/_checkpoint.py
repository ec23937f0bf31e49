# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _checkpoint moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import (  # noqa: F401
    KILL_AT_ENV,
    STOP_AT_ENV,
    TRACE_ENV,
    step_boundary,
)

__all__ = [
    'KILL_AT_ENV',
    'STOP_AT_ENV',
    'TRACE_ENV',
    'step_boundary',
]
