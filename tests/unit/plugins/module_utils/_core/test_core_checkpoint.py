# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Step boundaries: which boundary a KILL_AT, STOP_AT or RESET_AT value names (by number or by name)."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core import checkpoint


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The boundary counter from zero, and the machine reset recorded instead of done."""
    resets: list[str] = []
    monkeypatch.setattr(checkpoint, "_passed", 0)
    monkeypatch.setattr(checkpoint, "reset_machine", lambda: resets.append("reset"))
    for variable in (checkpoint.KILL_AT_ENV, checkpoint.STOP_AT_ENV, checkpoint.RESET_AT_ENV):
        monkeypatch.delenv(variable, raising=False)
    return resets


@pytest.mark.parametrize("value, resets_at", [("2", 2), ("m.b", 2), ("m.c", 3), ("m.c /x", 3), ("m.c /y", None),
                                              ("4", None), ("m.z", None)])
def test_reset_at_names_a_boundary_by_number_or_name(fresh: list[str], monkeypatch: pytest.MonkeyPatch, value: str,
                                                     resets_at: int | None) -> None:
    monkeypatch.setenv(checkpoint.RESET_AT_ENV, value)
    seen = []
    for number, name in enumerate(("m.a", "m.b", "m.c"), start=1):
        checkpoint.step_boundary(name, "/x")
        if fresh:
            seen.append(number)
            break
    assert seen == ([resets_at] if resets_at else [])


def test_the_trace_lists_every_boundary(fresh: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv(checkpoint.TRACE_ENV, str(trace))
    for name in ("m.a", "m.b"):
        checkpoint.step_boundary(name)
    assert trace.read_text() == "1 m.a\n2 m.b\n" and fresh == []
