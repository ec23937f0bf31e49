# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a namespace's mount table the way the modules do."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, parse_mountinfo, stack_at,
)

from support.namespace import MountNamespace


def stack(ns: MountNamespace, path: str) -> tuple[MountEntry, ...]:
    """The mounts stacked on path inside ns, bottom first."""
    return stack_at(parse_mountinfo(ns.mountinfo()), path)


def describe(ns: MountNamespace, path: str) -> list[tuple[str, str, bool]]:
    """(fstype, fs root, read-only) of each layer on path: compact for assertions."""
    return [(entry.fstype, entry.root, entry.read_only) for entry in stack(ns, path)]
