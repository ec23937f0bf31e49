# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The btrfs_generation layout as immutability_facts reports it, including the provisional tentative state."""

from __future__ import annotations

import dataclasses

import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import LAYOUT_DIRECTORIES, Generation, Layout, LinkDirectory
from ansible_collections.immutable.root.plugins.module_utils._facts_generations import (
    absent, generation_facts, is_state_file_name,
)


def layout(slots: t.Sequence[t.Optional[str]] = ("B", "A", "A", "A"), booted: t.Optional[int] = 259) -> Layout:
    gens = (Generation("A", 258, "2026-01-01T00:00:00Z"), Generation("B", 259, "2026-01-02T00:00:00Z"))
    return Layout(top="/top", directories=frozenset(LAYOUT_DIRECTORIES), commons=frozenset(), template=None,
                  generations=gens, current_text="./links/L2", link_directories=(LinkDirectory("L2", tuple(slots)),),
                  booted=booted, mounted=frozenset({booted}) if booted else frozenset())


def test_layout_found_current_booted_slots() -> None:
    facts = generation_facts(layout(), {}, "subvolid=5 of /dev/vda2")
    assert (facts["layout_found"], facts["current"], facts["booted"]) == (True, "B", "B")
    assert facts["slots"] == ["B", "A", "A", "A"]
    assert [item["name"] for item in facts["generations"]] == ["A", "B"]
    assert facts["generations"][1]["slots"] == [0] and facts["generations"][1]["booted"]
    assert (facts["tentative"], facts["blessed"], facts["pinned"]) == (None, None, [])


@pytest.mark.parametrize("files,tentative,blessed", [
    ({"tentative": "B\n"}, "B", False),  # switched, not booted yet
    ({"tentative": '{"name": "B", "previous": "L1", "next": "L2"}', "trial": '{"name": "B"}'}, "B", False),
    ({"tentative": '{"name": "A", "since": "2026-01-02"}'}, "A", False),  # still pending, whatever current is
    ({"trial": '"B"'}, "B", False),
    ({"blessed": '{"name": "B", "at": "2026-01-02T00:00:00Z"}'}, None, True),
    ({"blessed": "B\n"}, None, True),
    ({"blessed": '["A"]'}, None, False),
    ({"tentative": "", "other": "x"}, None, None),
])
def test_tentative_state_files(files: dict, tentative: t.Optional[str], blessed: t.Optional[bool]) -> None:
    facts = generation_facts(layout(), files, "top")
    assert (facts["tentative"], facts["blessed"]) == (tentative, blessed)
    assert facts["state_files"] == files


def test_failed_says_which_generation_failed_and_why() -> None:
    facts = generation_facts(layout(), {"failed": '{"name": "C", "reason": "health check \'false\' exited 1: ",'
                                                  ' "at": "2026-01-03T00:00:00Z"}'}, "top")
    assert facts["failed"] == {"name": "C", "reason": "health check 'false' exited 1: ", "at": "2026-01-03T00:00:00Z"}
    assert generation_facts(layout(), {"failed": "C\n"}, "top")["failed"] == {"name": "C", "reason": None, "at": None}
    assert generation_facts(layout(), {}, "top")["failed"] is None and absent()["failed"] is None


def test_pinned_file_marks_generations() -> None:
    facts = generation_facts(layout(), {"pinned": '{"names": ["A"]}'}, "top")
    assert facts["pinned"] == ["A"] and facts["generations"][0]["pinned"]
    assert generation_facts(layout(), {"pinned": "# none\nA\n"}, "top")["pinned"] == ["A"]
    assert generation_facts(layout(), {"pinned": "42"}, "top")["pinned"] == []


def test_empty_top_level_is_no_layout() -> None:
    empty = Layout(top="/t", directories=frozenset(), commons=frozenset(), template=None, generations=(),
                   current_text=None, link_directories=())
    assert not generation_facts(empty, {}, "t")["layout_found"]
    assert absent()["layout_found"] is False and absent()["generations"] == []


def test_state_file_names_exclude_the_layout() -> None:
    assert is_state_file_name("tentative") and not is_state_file_name("current")
    assert not is_state_file_name("fstab") and not is_state_file_name(".current.tmp")


def test_building_names_the_generation_whose_build_never_finished() -> None:
    assert generation_facts(dataclasses.replace(layout(), building="C"), {}, "top")["building"] == "C"
    assert generation_facts(layout(), {}, "top")["building"] is None and absent()["building"] is None
