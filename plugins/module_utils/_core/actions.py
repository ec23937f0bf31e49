# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action records every module returns: what a plan will do, or what a run did."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    """One step of a plan: a verb, the object it acts on, and a human detail."""

    action: str
    target: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"action": self.action, "target": self.target, "detail": self.detail}


def as_dicts(actions: t.Iterable[Action]) -> list[dict[str, str]]:
    return [action.as_dict() for action in actions]
