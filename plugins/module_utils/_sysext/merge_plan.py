# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge: the pure planner, its prediction and verification."""

from __future__ import annotations

import posixpath
import re
import typing as t
from dataclasses import replace

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import (
    ImageVerdict, contributes, merge_candidates,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_model import (
    FORBIDDEN_HIERARCHIES, HierarchyState, MergeObserved, MergeRequest, NEWER_OPTIONS,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_render import describe_states
from ansible_collections.immutable.root.plugins.module_utils._sysext.mutable import effective_mode
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import SysextError, module_name_problem


def validate_hierarchies(values: t.Sequence[str]) -> tuple[str, ...]:
    """Absolute, normalised, distinct hierarchies; the forbidden ones refused with the reason."""
    if not values:
        raise ParameterError("hierarchies", "must name at least one hierarchy, e.g. [/usr, /opt]")
    seen: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value or ":" in value:
            raise ParameterError("hierarchies", "%r must be an absolute path without ':'" % (value,))
        if posixpath.normpath(value) != value or value.startswith("//") or ".." in value.split("/"):
            raise ParameterError("hierarchies", "%r must be normalised (no '//', '.', '..' or trailing '/')" % value)
        for forbidden, why in FORBIDDEN_HIERARCHIES.items():
            if value == forbidden or (forbidden != "/" and value.startswith(forbidden + "/")):
                raise ParameterError("hierarchies", "%s is refused: %s" % (value, why))
        if value in seen:
            raise ParameterError("hierarchies", "%s is listed twice" % value)
        seen.append(value)
    return tuple(seen)


def validate_required(values: t.Sequence[str]) -> tuple[str, ...]:
    for value in values:
        problem = module_name_problem(value) if isinstance(value, str) else "%r is not a string" % (value,)
        if problem:
            raise ParameterError("required", problem)
    return tuple(values)


def parse_systemd_version(text: str) -> int:
    """The major version from `systemd-sysext --version` ("systemd 252 (252.38-1~deb12u1)")."""
    match = re.match(r"\s*systemd\s+(\d+)", text)
    if not match:
        raise SysextError("cannot tell the systemd version from %r" % text.strip().splitlines()[:1])
    return int(match.group(1))


def check_versions(request: MergeRequest, version: int) -> None:
    for option, needed in NEWER_OPTIONS:
        if getattr(request, option) is not None and version < needed:
            raise ParameterError(option, "needs systemd %d or newer; systemd-sysext here is version %d"
                                 % (needed, version))


def _describe(verdict: ImageVerdict) -> str:
    return "%s (%s): %s" % (verdict.name, verdict.entry.path, verdict.reason)


def predict_hierarchies(request: MergeRequest, observed: MergeObserved) -> tuple[HierarchyState, ...]:
    """The hierarchies as they will be once the request is carried out."""
    names = merge_candidates(observed.images) if request.state != "unmerged" else []
    compatible = [verdict for verdict in observed.images if verdict.compatible]
    predicted = []
    for state in observed.hierarchies:
        merged = bool(names) and any(contributes(verdict, state.hierarchy) for verdict in compatible)
        # Without the mutable option the module takes whatever mode the merge has (None: not checked).
        mode = effective_mode(request.mutable, state.mutable_dir) if request.mutable is not None else None
        if (merged and state.merged and set(state.extensions) == set(names) and request.state == "merged"
                and mode in (None, state.mode)):
            predicted.append(state)
        elif merged:
            # systemd writes the same name list into every hierarchy it mounts.
            predicted.append(replace(state, merged=True, extensions=tuple(names), since=None, mount_id=None,
                                     device=None, mode=mode, mutable_dir=state.mutable_dir or mode == "yes"))
        else:
            predicted.append(replace(state, merged=False, extensions=(), since=None, mount_id=None, device=None))
    return tuple(predicted)


def same_merge_state(left: t.Sequence[HierarchyState], right: t.Sequence[HierarchyState]) -> bool:
    """Same merges; a mutable mode counts where both sides know it (the prediction knows it only when requested)."""
    return all(a.merged == b.merged and set(a.extensions) == set(b.extensions)
               and (a.mode is None or b.mode is None or a.mode == b.mode) for a, b in zip(left, right))


def plan_sysext_merge(request: MergeRequest, observed: MergeObserved) -> tuple[Action, ...]:
    """The actions that bring the root to the request; raises when systemd-sysext would fail or surprise."""
    check_versions(request, observed.systemd_version)
    merged_now = [state for state in observed.hierarchies if state.merged]
    if request.state == "unmerged":
        if not merged_now:
            return ()
        return (Action("unmerge", request.root, ", ".join(state.hierarchy for state in merged_now)),)
    blocking = [verdict for verdict in observed.images if verdict.blocking]
    if blocking:
        raise SysextError("systemd-sysext cannot merge reliably while these images are in its search directories: "
                          + "; ".join(_describe(verdict) for verdict in blocking))
    _check_required(request, observed.images)
    predicted = predict_hierarchies(request, observed)
    if request.state == "merged" and same_merge_state(observed.hierarchies, predicted):
        return ()
    mounting = [state for state in predicted if state.merged]
    if request.state == "merged" and not mounting:
        return (Action("unmerge", request.root, "no compatible extension is left to merge"),)
    actions = []
    if mounting:
        if not observed.run_mounted:
            raise SysextError("/run is not a mount point in this mount namespace: systemd-sysext needs to remount it "
                              "MS_SLAVE for its workspace and fails silently without it")
        involved = [state for state in observed.hierarchies if any(p.hierarchy == state.hierarchy for p in mounting)]
        missing = [state.path for state in involved if not state.creatable]
        if missing:
            raise SysextError("hierarchies: %s does not exist and cannot be created (read-only): systemd-sysext would "
                              "merge the other hierarchies, fail on this one and exit 0; create it first or leave it "
                              "out of hierarchies" % ", ".join(missing))
        actions.extend(_plan_propagation(request, involved))
    names = merge_candidates(observed.images)
    verb = "refresh" if merged_now or request.state == "refreshed" else "merge"
    detail = "%s into %s" % (", ".join(names) or "nothing", ", ".join(state.hierarchy for state in mounting) or
                             "no hierarchy")
    if names:
        detail += " (top layer: %s)" % names[-1]
    actions.append(Action(verb, request.root, detail))
    return tuple(actions)


def _check_required(request: MergeRequest, images: t.Sequence[ImageVerdict]) -> None:
    problems = []
    for name in request.required:
        found = [verdict for verdict in images if verdict.name == name]
        if not found:
            problems.append("%s: not found in any search directory" % name)
        elif not any(verdict.compatible for verdict in found):
            problems.append("; ".join(_describe(verdict) for verdict in found))
    if problems:
        raise SysextError("required: these extensions would not be merged: " + "; ".join(problems))


def _plan_propagation(request: MergeRequest, states: t.Sequence[HierarchyState]) -> list[Action]:
    private = [state for state in states if not state.shared]
    if not private:
        return []
    anchors = sorted({state.anchor for state in private})
    if not request.make_shared:
        raise SysextError(
            "make_shared: the mount %s holding %s is not shared. systemd-sysext merges from a mount namespace of "
            "its own, and its overlay reaches this namespace only through a shared mount: it would print "
            "'Merged extensions', exit 0 and leave nothing mounted. Set make_shared=true to make it shared "
            "(root is bound onto itself first when that mount lies outside root), or run `mount --make-shared`."
            % (", ".join(anchors), ", ".join(state.path for state in private)))
    return [Action("make_shared", anchor, "private mount under %s" % ", ".join(
        state.hierarchy for state in private if state.anchor == anchor)) for anchor in anchors]


def layer_order(names: t.Sequence[str]) -> list[str]:
    """Top layer first."""
    return list(reversed(names))


def verification_problem(predicted: t.Sequence[HierarchyState], seen: t.Sequence[HierarchyState]) -> str | None:
    """None when the merge state seen after the run is the predicted one, else what differs."""
    if same_merge_state(predicted, seen):
        return None
    return "expected %s; the mount table and .systemd-sysext markers show %s" % (
        describe_states(predicted), describe_states(seen))
