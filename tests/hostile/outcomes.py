# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The campaign's verdict on each generated module run, tallied per module for the table `make hostile` prints.

A verdict comes from what a hostile user can see: the module's result, its stderr, whether it returned in time,
and hashed listings of the work tree and the mount table before and after (never the module's own code)."""

from __future__ import annotations

import collections
import re
import typing as t

VERDICTS = ("clear error", "ok", "wrong", "hang", "damage")
TALLY: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


class Run(t.NamedTuple):
    result: dict[str, t.Any] | None  # None: no JSON on stdout (a crash) or no answer in time
    stderr: str
    timed_out: bool
    changed_something: bool  # the work tree or the mount table differs from before the run


ANSIBLE_REFUSALS = ("missing required arguments", "value of ", "parameters are ")


def names_a_parameter(message: str, parameters: t.Iterable[str]) -> bool:
    """A refusal is clear when it names the option it refuses (as `name:`, `name must`, or Ansible's own wording)."""
    if message.startswith(ANSIBLE_REFUSALS):
        return True
    return any(re.search(r"(^|\W)%s(\[\d+\]|\.\S+)?(:| must| is| has| names| of| contains|\W*$)" % re.escape(name),
                         message) for name in parameters)


def verdict(check: Run, applied: Run, rerun: Run | None, parameters: t.Iterable[str], work: str,
            always_changes: bool = False) -> tuple[str, str]:
    """(verdict, why) for check mode, the real run and (for an accepted input) a rerun; always_changes: the input
    asks for an action that reports a change each time (sysext_merge state=refreshed), so a rerun must only succeed.

    A refusal is clear when it names the parameter or the offending path (anything under the work directory)."""
    for run in (check, applied) + ((rerun,) if rerun else ()):
        if run.timed_out:
            return "hang", "no answer in time"
        if run.result is None or "Traceback" in run.stderr:
            return "damage", "crash: %s" % run.stderr[-300:]
    assert check.result is not None and applied.result is not None
    if check.changed_something:
        return "damage", "check mode changed the tree or the mounts"
    if applied.result.get("failed"):
        message = str(applied.result.get("msg", ""))
        if applied.changed_something:
            return "damage", "refused after changing something: %s" % message
        if work not in message and not names_a_parameter(message, parameters):
            return "wrong", "a refusal that names no parameter: %s" % message
        return "clear error", message
    if check.result.get("failed"):
        return "wrong", "check mode refused what the real run accepted: %s" % check.result.get("msg")
    if bool(check.result.get("changed")) != bool(applied.result.get("changed")):
        return "wrong", "check mode predicted changed=%s, the run reported %s" % (
            check.result.get("changed"), applied.result.get("changed"))
    if rerun is not None and rerun.result is not None and (
            rerun.result.get("failed") or (rerun.result.get("changed") and not always_changes)):
        return "wrong", "the rerun was not a no-op: %s" % rerun.result.get("msg", "changed")
    return "ok", ""


def record(module: str, outcome: str) -> None:
    TALLY[module]["tried"] += 1
    TALLY[module][outcome] += 1


def table() -> str:
    columns = ("tried",) + VERDICTS
    lines = ["| module | %s |" % " | ".join(columns), "|---|%s" % ("---:|" * len(columns))]
    for module in sorted(TALLY):
        lines.append("| %s | %s |" % (module, " | ".join(str(TALLY[module][column]) for column in columns)))
    return "\n".join(lines)
