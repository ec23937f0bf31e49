# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation's build record and boot files as truth tables: a generation whose build was cut off is
deleted by the next build or prune and never made current; one that lacks its kernel is never finished or current."""

from __future__ import annotations

import json
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    DEFAULT_COMMONS, Generation, GenerationError, LAYOUT_DIRECTORIES, Layout, LinkDirectory, Request,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.plan import plan_generation, predict, retained
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import render_fstab
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError

TEMPLATE = "UUID=u / btrfs subvol=CURRENT_SNAPSHOTS_PATH/@,ro 0 0\n"


def layout(names: t.Sequence[str] = ("A", "B", "C"), building: str | None = None, booted: str | None = None
           ) -> Layout:
    gens = tuple(Generation(name, 258 + index, "2026-01-%02dT00:00:00Z" % (index + 1))
                 for index, name in enumerate(names))
    ids = {generation.name: generation.subvolid for generation in gens}
    return Layout(top="/top", directories=frozenset(LAYOUT_DIRECTORIES), commons=frozenset(DEFAULT_COMMONS),
                  template=TEMPLATE, generations=gens, current_text="./links/CUR",
                  link_directories=(LinkDirectory("CUR", ("B", "A", "A", "A")),),
                  fstabs={name: render_fstab(TEMPLATE, name) for name in names}, building=building,
                  booted=ids[booted] if booted else None,
                  mounted=frozenset({t.cast(int, ids[booted])}) if booted else frozenset())


def request(state: str, name: str | None, **changes: t.Any) -> Request:
    return Request(state=t.cast(t.Any, state), name=name, new_name="NEW", links_name="LNK", **changes)


def steps(state: str, name: str | None, the_layout: Layout, **changes: t.Any) -> list[tuple[str, str]]:
    return [(step.action, step.target) for step in plan_generation(request(state, name, **changes), the_layout).steps]


# (case, state, name, request changes, layout, expected (action, target) steps)
TABLE: list[tuple[str, str, str | None, dict, Layout, list[tuple[str, str]]]] = [
    ("a build records its name before the snapshot", "present", "D", {"building": True}, layout(),
     [("record_building", "building"), ("create_generation", "snapshots/D/@"), ("inject_fstab", "snapshots/D/@/etc/fstab")]),
    ("a build cut off earlier is deleted first", "present", "D", {"building": True}, layout(("A", "B", "C"), "C"),
     [("delete_generation", "snapshots/C/@"), ("sync_deletions", "."), ("record_building", "building"),
      ("create_generation", "snapshots/D/@"), ("inject_fstab", "snapshots/D/@/etc/fstab")]),
    ("a record whose generation never appeared is just replaced", "present", "D", {"building": True},
     layout(("A", "B"), "C"),
     [("record_building", "building"), ("create_generation", "snapshots/D/@"), ("inject_fstab", "snapshots/D/@/etc/fstab")]),
    ("a booted unfinished generation is never deleted", "present", "D", {"building": True},
     layout(("A", "B", "C"), "C", booted="C"),
     [("record_building", "building"), ("create_generation", "snapshots/D/@"), ("inject_fstab", "snapshots/D/@/etc/fstab")]),
    ("the rerun of the same build changes nothing", "present", "C", {"building": True}, layout(("A", "B", "C"), "C"), []),
    ("finishing clears the record", "present", "C", {}, layout(("A", "B", "C"), "C"),
     [("clear_building", "building")]),
    ("finishing another generation leaves the record", "present", "B", {}, layout(("A", "B", "C"), "C"), []),
    ("a present without building records nothing", "present", "D", {}, layout(),
     [("create_generation", "snapshots/D/@"), ("inject_fstab", "snapshots/D/@/etc/fstab")]),
    ("prune deletes the unfinished one whatever keep says", "pruned", None, {"keep": 4}, layout(("A", "B", "C"), "C"),
     [("delete_generation", "snapshots/C/@"), ("sync_deletions", "."), ("clear_building", "building")]),
    ("prune clears a record whose generation is gone", "pruned", None, {"keep": 4}, layout(("A", "B"), "C"),
     [("clear_building", "building")]),
    ("prune keeps a booted unfinished one and its record", "pruned", None, {"keep": 4},
     layout(("A", "B", "C"), "C", booted="C"), []),
    ("absent deletes, then clears", "absent", "C", {}, layout(("A", "B", "C"), "C"),
     [("delete_generation", "snapshots/C/@"), ("sync_deletions", "."), ("clear_building", "building")]),
    ("absent of a generation that never appeared clears", "absent", "C", {}, layout(("A", "B"), "C"),
     [("clear_building", "building")]),
    ("boot files are checked only when there is something to decide", "current", "B",
     {"boot_problems": ("/vmlinuz is missing",)}, layout(), []),
]


@pytest.mark.parametrize("case, state, name, changes, the_layout, expected", TABLE, ids=[row[0] for row in TABLE])
def test_build_record_truth_table(case: str, state: str, name: str | None, changes: dict, the_layout: Layout,
                                  expected: list[tuple[str, str]]) -> None:
    assert steps(state, name, the_layout, **changes) == expected


@pytest.mark.parametrize("case, state, name, changes, the_layout, expected", TABLE, ids=[row[0] for row in TABLE])
def test_the_prediction_needs_no_second_run(case: str, state: str, name: str | None, changes: dict,
                                            the_layout: Layout, expected: list[tuple[str, str]]) -> None:
    the_request = request(state, name, **changes)
    after = predict(the_layout, plan_generation(the_request, the_layout).steps, the_request)
    assert plan_generation(the_request, after).steps == ()


def test_the_record_is_the_name_as_json() -> None:
    plan = plan_generation(request("present", "D", building=True), layout())
    assert json.loads(plan.steps[0].detail) == {"name": "D"}


REFUSALS = [
    ("an unfinished generation is never made current", "current", "C", {}, layout(("A", "B", "C"), "C"),
     ParameterError, "name: generation C was never finished"),
    ("nor started from", "present", "D", {"origin": "C"}, layout(("A", "B", "C"), "C"),
     ParameterError, "from: generation C was never finished"),
    ("a switch to a generation without its kernel", "current", "C", {"boot_problems": ("/vmlinuz is missing",)},
     layout(), ParameterError, "boot_files: generation C lacks what its boot entries load: /vmlinuz is missing"),
    ("finishing a generation without its initrd", "present", "C",
     {"boot_problems": ("/initrd.img (-> /boot/initrd.img-6.1) is missing",)}, layout(("A", "B", "C"), "C"),
     ParameterError, "boot_files: generation C lacks what its boot entries load: /initrd.img (-> /boot/initrd.img-6.1)"),
]


@pytest.mark.parametrize("case, state, name, changes, the_layout, kind, message", REFUSALS,
                         ids=[row[0] for row in REFUSALS])
def test_refusals_name_the_parameter(case: str, state: str, name: str, changes: dict, the_layout: Layout,
                                     kind: type, message: str) -> None:
    with pytest.raises((ParameterError, GenerationError)) as error:
        plan_generation(request(state, name, **changes), the_layout)
    assert isinstance(error.value, kind)
    assert error.value.msg.startswith(message), error.value.msg


def test_an_unfinished_generation_does_not_count_among_the_newest() -> None:
    kept = retained(request("pruned", None, keep=2), layout(("A", "B", "C", "D"), "D"))
    assert sorted(kept) == ["A", "B", "C"], "C and B are the two newest finished ones; A is in a slot of current"
