# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge: the result keys, warnings and failure texts."""

from __future__ import annotations

import datetime
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._sysext.images import ImageVerdict, merge_candidates
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_model import (
    HierarchyState, MergeObserved, MergeRequest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import version_ties


def _timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).isoformat()


def hierarchies_result(states: t.Sequence[HierarchyState]) -> list[dict[str, t.Any]]:
    return [{"hierarchy": state.hierarchy, "path": state.path, "merged": state.merged,
             "extensions": list(state.extensions), "since": _timestamp(state.since), "mount_id": state.mount_id,
             "device": state.device, "mode": state.mode} for state in states]


def extensions_result(images: t.Sequence[ImageVerdict], merged: t.Collection[str]) -> list[dict[str, t.Any]]:
    result = []
    for verdict in images:
        content = verdict.content
        result.append({
            "name": verdict.name,
            "path": verdict.entry.path,
            "search_dir": verdict.entry.search_dir,
            "type": verdict.entry.image_type,
            "verdict": verdict.verdict,
            "compatible": verdict.compatible,
            "reason": verdict.reason,
            "merged": verdict.name in merged and verdict.verdict not in ("masked", "ignored"),
            "release": dict(content.release) if content and content.release is not None else None,
            "release_file": content.release_path if content else None,
            "fstype": content.fstype if content else None,
            "hierarchies": list(content.hierarchies) if content else [],
        })
    return result


def merged_names(states: t.Sequence[HierarchyState]) -> list[str]:
    names: list[str] = []
    for state in states:
        names.extend(name for name in state.extensions if name not in names)
    return names


def merge_state(states: t.Sequence[HierarchyState]) -> dict[str, list[str]]:
    return {state.hierarchy: list(state.extensions) for state in states}


def warnings(request: MergeRequest, observed: MergeObserved) -> list[str]:
    """Things that are not errors but surprise people: ignored symlinks, tied names, images with nothing to merge."""
    found = []
    for verdict in observed.images:
        if verdict.verdict == "ignored":
            found.append("%s %s" % (verdict.entry.path, verdict.reason))
        if verdict.compatible and verdict.content is not None and not verdict.content.hierarchies:
            found.append("%s has nothing under %s: it is listed as merged but adds no files"
                         % (verdict.entry.path, ", ".join(request.hierarchies)))
    ties = version_ties(merge_candidates(observed.images))
    for left, right in ties:
        found.append("extension names %r and %r sort as equal versions: their layer order is not defined" % (left, right))
    return found


def failure_lines(outputs: t.Iterable[str]) -> list[str]:
    """What systemd-sysext printed that explains a failure it did not report through its exit code."""
    lines = []
    for output in outputs:
        for line in output.splitlines():
            if any(word in line for word in ("Failed", "failed", "refusing", "No suitable", "not allowed")):
                lines.append(line.strip())
    return lines


def describe_states(states: t.Sequence[HierarchyState]) -> str:
    return "; ".join("%s: %s%s" % (state.hierarchy, ", ".join(state.extensions) if state.merged else "not merged",
                                   " (mutable: %s)" % state.mode if state.merged and state.mode else "")
                     for state in states)
