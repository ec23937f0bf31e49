# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation planners as truth tables: (request, layout) -> steps, or a refusal naming the parameter."""

from __future__ import annotations

import dataclasses
import json
import itertools
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    Generation, GenerationError, LAYOUT_DIRECTORIES, Layout, LinkDirectory, Stray,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import render_fstab
from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import DEFAULT_COMMONS, Request, Source
from ansible_collections.immutable.root.plugins.module_utils._btrfs.plan import plan_generation, predict, retained
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError

TEMPLATE = "UUID=u / btrfs subvol=CURRENT_SNAPSHOTS_PATH/@,ro 0 0\n"
NAMES = ("A", "B", "C", "D", "E", "F")


def generations(*names: str, read_only: t.Collection[str] = ()) -> tuple[Generation, ...]:
    return tuple(Generation(name, 258 + index, "2026-01-%02dT00:00:00Z" % (index + 1), name in read_only)
                 for index, name in enumerate(names))


def layout(names: t.Sequence[str] = ("A", "B", "C"), slots: t.Sequence[str | None] = ("C", "B", "A", "A"),
           other_links: t.Sequence[LinkDirectory] = (), booted: str | None = None,
           mounted: t.Collection[str] = (), template: str | None = TEMPLATE,
           fstabs: dict | None = None, **changes: t.Any) -> Layout:
    gens = generations(*names, read_only=changes.pop("read_only", ()))
    ids = {generation.name: generation.subvolid for generation in gens}
    if fstabs is None:
        fstabs = {name: render_fstab(template, name) if template else None for name in names}
    values: dict = dict(
        top="/top", directories=frozenset(LAYOUT_DIRECTORIES), commons=frozenset(DEFAULT_COMMONS), template=template,
        generations=gens, current_text="./links/CUR" if slots else None,
        link_directories=((LinkDirectory("CUR", tuple(slots)),) if slots else ()) + tuple(other_links),
        fstabs=fstabs, booted=ids.get(booted) if booted else None,
        mounted=frozenset(ids[name] for name in mounted) | (frozenset({ids[booted]}) if booted else frozenset()))
    values.update(changes)
    return Layout(**values)


def request(state: str, name: str | None = None, **changes: t.Any) -> Request:
    return Request(state=t.cast(t.Any, state), name=name, new_name="NEW", links_name="LNK", **changes)


def verbs(plan: t.Any) -> list[str]:
    return [step.action for step in plan.steps]


def refusal(state: str, the_layout: Layout, **changes: t.Any) -> str:
    with pytest.raises((ParameterError, GenerationError)) as error:
        plan_generation(request(state, **changes), the_layout)
    return error.value.msg


# --- current: the switch and the seed's rotation ---------------------------------------------------------------

CURRENT_TABLE = [
    ("upgrade", "D", layout(("A", "B", "C", "D")), ["write_links", "switch_current"], ("D", "C", "B", "A")),
    ("already current", "C", layout(), [], None),
    ("rollback", "B", layout(), ["write_links", "switch_current"], ("B", "C", "A", "A")),
    ("slot with a deleted generation is repaired", "C", layout(slots=("C", "gone", "A", "A")),
     ["write_links", "switch_current"], ("C", "A", "A", "A")),
    ("current missing", "A", layout(slots=()), ["write_links", "switch_current"], ("A", "A", "A", "A")),
    ("fstab not injected yet (interrupted present)", "D",
     layout(("A", "B", "C", "D"), fstabs={"D": None}), ["inject_fstab", "write_links", "switch_current"],
     ("D", "C", "B", "A")),
]

# A generation is made current only with its fstab injected (issue 17): these were switched with a warning.
UNINJECTED_TABLE = [
    ("read-only generation with another fstab", layout(("A", "B", "C", "D"), fstabs={"D": "old"}, read_only=("D",)),
     "it differs from the template and the generation is read-only"),
    ("no template", layout(("A", "B", "C", "D"), template=None), "the fstab template, is missing"),
]


@pytest.mark.parametrize("case, the_layout, why", UNINJECTED_TABLE, ids=[row[0] for row in UNINJECTED_TABLE])
def test_current_refuses_a_generation_without_its_fstab(case: str, the_layout: Layout, why: str) -> None:
    with pytest.raises(GenerationError, match="refusing to make generation D current") as raised:
        plan_generation(request("current", "D"), the_layout)
    assert why in raised.value.msg


@pytest.mark.parametrize("case, name, the_layout, expected, slots", CURRENT_TABLE, ids=[row[0] for row in CURRENT_TABLE])
def test_current_truth_table(case: str, name: str, the_layout: Layout, expected: list, slots: t.Any) -> None:
    plan = plan_generation(request("current", name), the_layout)
    assert verbs(plan) == expected
    if slots:
        write = [step for step in plan.steps if step.action == "write_links"][0]
        assert write.names == slots and write.target == "links/LNK"
        assert plan.steps[-1].detail == "./links/LNK"
        assert plan.steps[-1].as_action().as_dict() == {"action": "switch_current", "target": "current",
                                                        "detail": "./links/LNK"}
        assert predict(the_layout, plan.steps, request("current", name)).slots() == slots


def test_current_with_another_slot_count_rewrites_the_links() -> None:
    plan = plan_generation(request("current", "C", slots=2), layout())
    assert verbs(plan) == ["write_links", "switch_current"] and plan.steps[0].names == ("C", "B")


def test_a_tentative_switch_records_where_to_fall_back_before_the_switch() -> None:
    plan = plan_generation(request("current", "B", tentative=True), layout())
    assert verbs(plan) == ["write_links", "record_tentative", "switch_current"]
    assert json.loads(plan.steps[1].detail) == {"name": "B", "previous": "CUR", "next": "LNK"}
    assert plan.steps[1].target == "tentative"
    assert verbs(plan_generation(request("current", "C", tentative=True), layout())) == [], "already current"
    assert refusal("current", layout(slots=()), name="B", tentative=True).startswith("tentative: current does not")


def test_current_refusals() -> None:
    assert refusal("current", layout(), name="nope").startswith("name: generation nope does not exist")
    assert "not ./links/<name>" in refusal("current", layout(current_text="/links/CUR"), name="A")
    assert "run state=initialized first" in refusal(
        "current", layout(directories=frozenset()), name="A")
    blocked = refusal("current", layout(blocked=frozenset({"current"})), name="A")
    assert blocked.startswith("top: current in /top is not a directory")


def test_warnings_for_missing_template_and_read_only_generation() -> None:
    assert "has no fstab template" in plan_generation(request("present", "A"), layout(template=None)).warnings[0]
    plan = plan_generation(request("present", "A"), layout(fstabs={"A": "other"}, read_only=("A",)))
    assert "is read-only" in plan.warnings[0]


# --- present ------------------------------------------------------------------------------------------------------

PRESENT_TABLE = [
    ("new from current", dict(name="D"), layout(), ["create_generation", "inject_fstab"], "snapshot of generation C"),
    ("new from a named generation", dict(name="D", origin="A"), layout(), ["create_generation", "inject_fstab"],
     "snapshot of generation A"),
    ("new by copy", dict(name="D", source=Source("copy", "/tree")), layout(), ["create_generation", "inject_fstab"],
     "copy of directory /tree"),
    ("new by snapshot of a subvolume", dict(name="D", source=Source("snapshot", "/top/@")), layout(),
     ["create_generation", "inject_fstab"], "snapshot of subvolume /top/@"),
    ("exists", dict(name="C"), layout(), [], None),
    ("exists, fstab missing (interrupted)", dict(name="C"), layout(fstabs={"C": None}), ["inject_fstab"], None),
    ("exists, template changed", dict(name="C"), layout(fstabs={"C": "old"}), ["inject_fstab"], None),
    ("no template", dict(name="D"), layout(template=None), ["create_generation"], "snapshot of generation C"),
    ("an empty directory of an interrupted run is reused", dict(name="D"),
     layout(strays=(Stray("empty_directory", "snapshots/D"),)), ["create_generation", "inject_fstab"], None),
]


@pytest.mark.parametrize("case, changes, the_layout, expected, detail", PRESENT_TABLE,
                         ids=[row[0] for row in PRESENT_TABLE])
def test_present_truth_table(case: str, changes: dict, the_layout: Layout, expected: list, detail: t.Any) -> None:
    plan = plan_generation(request("present", **changes), the_layout)
    assert verbs(plan) == expected
    if detail:
        assert plan.steps[0].detail == detail and plan.steps[0].target == "snapshots/D/@"
    predicted = predict(the_layout, plan.steps, request("present", **changes))
    assert changes["name"] in predicted.names() and predicted.slots() == the_layout.slots(), "present never switches"


def test_present_refusals() -> None:
    assert refusal("present", layout(), name="D", origin="nope").startswith("from: generation nope does not exist")
    assert refusal("present", layout(slots=()), name="D").startswith("from: no generation is current")
    assert refusal("present", layout(slots=("gone",)), name="D").startswith("from: no generation is current")
    taken = layout(strays=(Stray("foreign", "snapshots/D", "notes.txt"),))
    assert refusal("present", taken, name="D").startswith("name: snapshots/D exists but holds no generation")
    assert refusal("present", layout(), name=None).startswith("name: ")


# --- initialized ---------------------------------------------------------------------------------------------------

EMPTY = layout((), slots=(), directories=frozenset(), commons=frozenset(), template=None)
INITIALIZED_TABLE = [
    ("empty filesystem", dict(default_template=TEMPLATE), EMPTY,
     ["create_directory"] * 4 + ["create_common"] * 4 + ["write_fstab_template", "create_generation", "inject_fstab",
                                                         "write_links", "switch_current"]),
    ("initialized", dict(), layout(), []),
    ("a new common", dict(commons=DEFAULT_COMMONS + ("@srv",)), layout(), ["create_common"]),
    ("a given template differs", dict(fstab_template="new CURRENT_SNAPSHOTS_PATH"), layout(),
     ["write_fstab_template"]),
    ("a given template is there", dict(fstab_template=TEMPLATE), layout(), []),
    ("interrupted before the switch: adopt the newest", dict(), layout(slots=()), ["write_links", "switch_current"]),
    ("interrupted before the fstab", dict(), layout(slots=(), fstabs={}), ["inject_fstab", "write_links",
                                                                           "switch_current"]),
    ("current dangles", dict(), layout(slots=("gone",)), ["write_links", "switch_current"]),
    ("no template at all", dict(), layout((), slots=(), template=None),
     ["create_generation", "write_links", "switch_current"]),
]


@pytest.mark.parametrize("case, changes, the_layout, expected", INITIALIZED_TABLE,
                         ids=[row[0] for row in INITIALIZED_TABLE])
def test_initialized_truth_table(case: str, changes: dict, the_layout: Layout, expected: list) -> None:
    the_request = request("initialized", **changes)
    plan = plan_generation(the_request, the_layout)
    assert verbs(plan) == expected
    predicted = predict(the_layout, plan.steps, the_request)
    assert predicted.current_name() is not None and set(predicted.directories) == set(LAYOUT_DIRECTORIES)
    assert plan_generation(the_request, dataclasses.replace(
        predicted, fstabs={name: render_fstab(predicted.template or "", name) for name in predicted.names()},
        generations=tuple(dataclasses.replace(g, subvolid=g.subvolid or 999) for g in predicted.generations))
    ).steps == (), "the predicted layout needs nothing more"


def test_initialized_first_generation_name_and_source() -> None:
    plan = plan_generation(request("initialized", "first", source=Source("snapshot", "/")), EMPTY)
    create = [step for step in plan.steps if step.action == "create_generation"][0]
    assert create.target == "snapshots/first/@" and create.source == Source("snapshot", "/")
    assert [step for step in plan.steps if step.action == "write_links"][0].names == ("first",) * 4
    plan = plan_generation(request("initialized"), EMPTY)
    assert [step.target for step in plan.steps if step.action == "create_generation"] == ["snapshots/NEW/@"]
    assert "has no fstab template" in plan.warnings[0]


def test_fill_commons_fills_only_new_commons_that_have_a_source() -> None:
    fill = {"@home": "/src/home", "@var@log": "/src/var/log", "@srv": "/src/srv"}
    plan = plan_generation(request("initialized", commons=DEFAULT_COMMONS + ("@srv",), fill_sources=fill), layout())
    assert [(step.action, step.target, step.source) for step in plan.steps] == [
        ("create_common", "commons/@srv", Source("copy", "/src/srv"))]
    assert plan.steps[0].detail == "subvolume filled from /src/srv"
    plan = plan_generation(request("initialized", default_template=TEMPLATE, fill_sources=fill), EMPTY)
    commons = {step.target: step.source for step in plan.steps if step.action == "create_common"}
    assert commons == {"commons/@home": Source("copy", "/src/home"), "commons/@var@log": Source("copy", "/src/var/log"),
                       "commons/@var@tmp": None, "commons/@var@cache": None}


def test_a_template_without_placeholder_is_written_with_a_warning() -> None:
    plan = plan_generation(request("initialized", fstab_template="UUID=u / btrfs ro 0 0\n"), layout())
    assert verbs(plan) == ["write_fstab_template"] and "does not contain CURRENT_SNAPSHOTS_PATH" in plan.warnings[0]


def test_a_source_whose_etc_cannot_take_the_fstab_is_refused_only_when_a_generation_is_created() -> None:
    unfit = ("source", "/src/etc is not a directory but a symlink to '/etc'")
    assert refusal("present", layout(), name="N", source=Source("copy", "/src"), origin_problem=unfit) == \
        "source: refusing to create a generation from it: /src/etc is not a directory but a symlink to '/etc'"
    assert refusal("present", layout(), name="N", building=True, origin_problem=unfit).startswith("source: refusing")
    assert refusal("initialized", layout((), slots=()), origin_problem=unfit).startswith("source: refusing")
    assert verbs(plan_generation(request("present", "A", origin_problem=unfit), layout())) == []
    assert verbs(plan_generation(request("initialized", origin_problem=unfit), layout())) == []


def test_a_blocked_template_is_named_as_the_template() -> None:
    message = refusal("pruned", layout(blocked=frozenset({"fstab"})))
    assert message.startswith("top: /top/fstab, the fstab template, is not a regular file of at most 1048576 bytes")
    both = refusal("pruned", layout(blocked=frozenset({"fstab", "next"})))
    assert both.startswith("top: next in /top is not a directory") and "; top: /top/fstab, the fstab" in both


def test_initialized_refusals() -> None:
    assert "refusing to replace a link" in refusal("initialized", layout((), slots=(), current_text="/x"))
    blocked = refusal("initialized", layout(blocked=frozenset({"links", "fstab"})))
    assert blocked.startswith("top: links in /top is not")
    taken = layout((), slots=(), strays=(Stray("foreign", "snapshots/NEW", "x"),))
    assert refusal("initialized", taken).startswith("name: snapshots/NEW exists")


# --- absent: never the booted, a mounted or a reachable generation ------------------------------------------------

ABSENT_TABLE = [
    ("unreferenced", "D", layout(("A", "B", "C", "D"), slots=("C", "B", "A", "A")),
     ["delete_generation", "sync_deletions"]),
    ("with an old link directory", "D",
     layout(("A", "B", "C", "D"), other_links=(LinkDirectory("OLD", ("D", "A")), LinkDirectory("KEEP", ("C", "A")))),
     ["remove_links", "delete_generation", "sync_deletions"]),
    ("already gone", "D", layout(), []),
    ("already gone, its link directory left by an interrupted run", "D",
     layout(other_links=(LinkDirectory("OLD", ("D", "A")),)), ["remove_links"]),
    ("already gone, its empty directory left by an interrupted run", "D",
     layout(strays=(Stray("empty_directory", "snapshots/D"),)), ["remove_stray"]),
]


@pytest.mark.parametrize("case, name, the_layout, expected", ABSENT_TABLE, ids=[row[0] for row in ABSENT_TABLE])
def test_absent_truth_table(case: str, name: str, the_layout: Layout, expected: list) -> None:
    plan = plan_generation(request("absent", name), the_layout)
    assert verbs(plan) == expected
    if "remove_links" in expected:
        assert [step.target for step in plan.steps if step.action == "remove_links"] == ["links/OLD"]
    if "sync_deletions" in expected:
        assert plan.steps[-1].ids == (the_layout.generation(name).subvolid,)  # type: ignore[union-attr]
    assert name not in predict(the_layout, plan.steps, request("absent", name)).names()


ABSENT_REFUSALS = [
    ("booted", layout(("A", "B", "C", "D"), booted="D"), "is the booted generation"),
    ("mounted", layout(("A", "B", "C", "D"), mounted=("D",)), "is mounted (subvolume id 261)"),
    ("slot 0", layout(("A", "B", "C", "D"), slots=("D", "C", "B", "A")), "reachable from current (slot 0)"),
    ("older slots", layout(("A", "B", "C", "D"), slots=("C", "D", "D", "D")), "reachable from current (slot 1, 2, 3)"),
    ("current does not resolve", layout(("A", "B", "C", "D"), slots=("C", "gone")), "does not resolve"),
    ("current is foreign", layout(("A", "B", "C", "D"), current_text="/links/CUR"), "does not resolve"),
]


@pytest.mark.parametrize("case, the_layout, reason", ABSENT_REFUSALS, ids=[row[0] for row in ABSENT_REFUSALS])
def test_absent_refusals(case: str, the_layout: Layout, reason: str) -> None:
    message = refusal("absent", the_layout, name="D")
    assert reason in message and (message.startswith("name: refusing to delete generation D")
                                  or message.startswith("top: "))


def test_absent_needs_a_name() -> None:
    assert refusal("absent", layout()).startswith("name: ")


# --- pruned: retention ----------------------------------------------------------------------------------------------

def test_prune_keeps_newest_reachable_booted_mounted_and_pinned() -> None:
    the_layout = layout(NAMES, slots=("F", "E", "E", "E"), booted="A", mounted=("B",),
                        other_links=(LinkDirectory("OLD", ("E", "D")),))
    the_request = request("pruned", keep=1, pinned=("C", "missing"))
    plan = plan_generation(the_request, the_layout)
    assert verbs(plan) == ["remove_links", "delete_generation", "sync_deletions"]
    assert [step.names for step in plan.steps if step.action == "delete_generation"] == [("D",)]
    assert retained(the_request, the_layout) == {
        "F": "one of the 1 newest", "E": "it is reachable from current (slot 1, 2, 3); make another generation "
        "current first", "A": "it is the booted generation (subvolume id 258 is mounted on /)",
        "B": "it is mounted (subvolume id 259); unmount it first", "C": "pinned"}
    assert plan.warnings == ("pinned generation missing does not exist",)


def test_prune_does_not_count_unhealthy_generations_among_the_newest() -> None:
    the_layout = layout(("A", "B", "C", "D"), slots=("B", "A", "A", "A"), booted="B")
    plan = plan_generation(request("pruned", keep=1), the_layout)
    assert [step.target for step in plan.steps if step.action == "delete_generation"] == ["snapshots/C/@"]
    plan = plan_generation(request("pruned", keep=1, unhealthy=("D",)), the_layout)
    assert [step.target for step in plan.steps if step.action == "delete_generation"] == ["snapshots/D/@"]
    plan = plan_generation(request("pruned", keep=1, unhealthy=("D", "B")), the_layout)
    assert [step.target for step in plan.steps if step.action == "delete_generation"] == ["snapshots/D/@"], \
        "C is then the newest healthy one, B stays as booted"


def test_prune_deletes_oldest_first_in_one_call_and_cleans_leftovers() -> None:
    the_layout = layout(NAMES, slots=("F", "E", "D", "C"), strays=(
        Stray("staging", "snapshots/.partial-X", "copy", 300), Stray("empty_directory", "snapshots/Y"),
        Stray("temporary_link", "next/.current.1.abc"), Stray("foreign", "next/current", "a link")))
    plan = plan_generation(request("pruned", keep=2), the_layout)
    assert [(step.action, step.target) for step in plan.steps] == [
        ("remove_stray", "snapshots/Y"), ("remove_stray", "next/.current.1.abc"),
        ("delete_staging", "snapshots/.partial-X"), ("delete_generation", "snapshots/A/@"),
        ("delete_generation", "snapshots/B/@"), ("sync_deletions", ".")]
    assert plan.steps[-1].ids == (300, 258, 259)
    assert plan.warnings == ("next/current is not a generation and is left alone: a link",)
    predicted = predict(the_layout, plan.steps, request("pruned", keep=2))
    assert predicted.names() == ["C", "D", "E", "F"] and [s.kind for s in predicted.strays] == ["foreign"]


def test_prune_with_nothing_to_do_and_foreign_link_directories() -> None:
    assert plan_generation(request("pruned"), layout()).steps == ()
    plan = plan_generation(request("pruned"), layout(other_links=(LinkDirectory("F", ("A",), foreign=True),)))
    assert plan.steps == () and "links/F holds entries" in plan.warnings[0]


def test_prune_refuses_when_current_does_not_resolve() -> None:
    assert refusal("pruned", layout(slots=("C", "gone"))).startswith("top: /top/current does not resolve")
    assert refusal("pruned", layout(slots=())).startswith("top: ")


def test_no_plan_ever_deletes_a_protected_generation() -> None:
    """Every combination of booted, mounted and current slots, for both deleting states."""
    for booted, mounted, slot0, slot1, keep in itertools.product(
            (None,) + NAMES, ((), ("B",), ("A", "F")), NAMES, NAMES, (1, 2, 6)):
        the_layout = layout(NAMES, slots=(slot0, slot1, slot1, slot1), booted=booted, mounted=mounted)
        protected = {name for name in (booted, slot0, slot1) + tuple(mounted) if name}
        deleted = {name for step in plan_generation(request("pruned", keep=keep), the_layout).steps
                   for name in step.names if step.action == "delete_generation"}
        assert not deleted & protected and len(the_layout.generations) - len(deleted) >= min(keep, 6)
        for name in NAMES:
            try:
                plan = plan_generation(request("absent", name), the_layout)
            except ParameterError:
                assert name in protected
                continue
            assert name not in protected and "delete_generation" in verbs(plan)


def test_predict_covers_every_step_kind() -> None:
    the_request = request("initialized", fstab_template="given")
    predicted = predict(EMPTY, plan_generation(the_request, EMPTY).steps, the_request)
    assert predicted.template == "given" and predicted.commons == frozenset(DEFAULT_COMMONS)
    assert predicted.generations[0].subvolid is None and predicted.link_directories[0].name == "LNK"
