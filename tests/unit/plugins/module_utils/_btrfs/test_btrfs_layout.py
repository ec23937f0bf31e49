# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation layout: parsers against captured btrfs-progs 6.2 output, names, slots, state rendering."""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    Generation, GenerationError, Layout, LinkDirectory, SubvolumeInfo, parse_current_target, parse_slot_target,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.parse import (
    generation_name_of,
    mounted_subvolumes,
    parse_filesystem_uuid,
    parse_subvolume_info,
    parse_subvolume_list,
    parse_subvolume_show,
    subvolid_of,
    utc_iso,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.plan import history_slots, sort_generations
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import (
    current_target, default_template, generations_state, render_fstab, slot_target, summary_state,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.request import (
    new_stamp, validate_common, validate_name,
)
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import parse_line, parse_mountinfo

# Captured with btrfs-progs 6.2 on kernel 6.18 (TZ=UTC), see the names in each file; mountinfo trimmed to the
# lines that matter (root, /proc, /dev, the top level and a generation mounted read-only).
FIXTURES = pathlib.Path(__file__).parent / "fixtures"
OLD, NEW = "20261123194541FPnPHjER", "20261123194743AvPtLAvN"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_subvolume_list_parses_every_line_including_a_path_with_a_space() -> None:
    lines = parse_subvolume_list(fixture("subvolume_list.txt"))
    assert [(line.subvolid, line.path) for line in lines] == [
        (256, "commons/@home"), (257, "commons/@var@log"), (258, "snapshots/%s/@" % OLD),
        (259, "snapshots/%s/@" % NEW), (260, "snapshots/known-good/@"), (261, "snapshots/.partial-with space")]
    assert all(line.top_level == 5 and line.otime is None for line in lines)
    assert lines[3].generation == 8


def test_subvolume_list_snapshots_carries_otime_and_readonly_list() -> None:
    snapshots = parse_subvolume_list(fixture("subvolume_list_snapshots.txt"))
    assert [(line.subvolid, line.otime) for line in snapshots] == [
        (259, "2026-11-23 22:00:43"), (260, "2026-11-23 22:00:43")]
    assert [line.subvolid for line in parse_subvolume_list(fixture("subvolume_list_readonly.txt"))] == [260]
    assert parse_subvolume_list("") == ()


def test_subvolume_list_refuses_lines_it_does_not_understand() -> None:
    assert len(parse_subvolume_list("\nID 256 gen 7 top level 5 path a\n\n")) == 1
    with pytest.raises(GenerationError, match="unexpected line"):
        parse_subvolume_list("ID 256 gen 7 top level 5 path a\nERROR: something\n")


def test_subvolume_info_from_the_ioctl_buffer() -> None:
    """BTRFS_IOC_GET_SUBVOL_INFO buffers captured from kernel 6.18 (a subvolume, a read-only snapshot)."""
    writable = parse_subvolume_info(bytes.fromhex(fixture("subvol_info_writable.hex").strip()))
    snapshot = parse_subvolume_info(bytes.fromhex(fixture("subvol_info_readonly_snapshot.hex").strip()))
    assert (writable.subvolid, writable.read_only) == (256, False)
    assert (snapshot.subvolid, snapshot.read_only) == (257, True)
    assert snapshot.created == "2026-11-23T22:16:26Z", "the otime `btrfs subvolume list -s` showed"
    with pytest.raises(GenerationError, match="expected 504"):
        parse_subvolume_info(b"\0" * 100)


def test_subvolume_show_and_filesystem_show() -> None:
    assert parse_subvolume_show(fixture("subvolume_show.txt")) == SubvolumeInfo(258, False, "2026-11-23T22:00:43Z")
    assert parse_subvolume_show(fixture("subvolume_show_readonly.txt")) == SubvolumeInfo(
        257, True, "2026-11-23T22:16:26Z")
    assert parse_subvolume_show("nothing here") is None
    assert parse_subvolume_show("\tSubvolume ID: 3\n") == SubvolumeInfo(3, False, None)
    assert parse_filesystem_uuid(fixture("filesystem_show.txt")) == "2b8beb9e-2a4e-4b56-b699-943a7bc3844f"
    with pytest.raises(GenerationError, match="no filesystem uuid"):
        parse_filesystem_uuid("Label: none\n")
    assert utc_iso("2026-11-23 22:00:43") == "2026-11-23T22:00:43Z"


@pytest.mark.parametrize("path, name", [
    ("snapshots/%s/@" % OLD, OLD), ("snapshots/known-good/@", "known-good"), ("snapshots/.partial-x", None),
    ("snapshots/.hidden/@", None), ("commons/@home", None), ("snapshots/a/@/nested", None), ("x/a/@", None),
])
def test_generation_name_of(path: str, name: str | None) -> None:
    assert generation_name_of(path) == name


def test_mountinfo_ties_mounts_to_the_filesystem_of_top() -> None:
    entries = parse_mountinfo(fixture("mountinfo_generation_mounted.txt"))
    assert mounted_subvolumes(entries, "/tmp/bx/T", "/") == (None, frozenset({5, 259}))
    assert mounted_subvolumes(entries, "/tmp/bx/T", "/tmp/bx/G") == (259, frozenset({5, 259}))
    # A booted system: / is a generation of the same filesystem (the line from the UEFI research, /proc/mounts).
    booted = entries + (parse_line("30 1 0:41 /snapshots/%s/@ / ro,relatime - btrfs /dev/vda2 "
                                   "ro,space_cache=v2,subvolid=258,subvol=/snapshots/%s/@" % (OLD, OLD)),)
    assert mounted_subvolumes(booted, "/tmp/bx/T", "/") == (258, frozenset({5, 258, 259}))
    assert mounted_subvolumes((), "/tmp/bx/T", "/") == (None, frozenset())
    assert subvolid_of(parse_line("1 0 0:1 / / rw - btrfs d rw,subvolid=x")) is None
    assert subvolid_of(parse_line("1 0 0:1 / / rw - ext4 d rw")) is None


@pytest.mark.parametrize("value", ["a", "20261123194541FPnPHjER", "v1.2_3-4", "A"])
def test_valid_names(value: str) -> None:
    assert validate_name("name", value) == value


@pytest.mark.parametrize("value, problem", [
    ("", "non-empty"), (None, "non-empty"), ("a/b", "'/'"), ("..", "'..'"), ("a..b", "'..'"), (".hidden", "match"),
    ("-x", "match"), ("a b", "match"), ("x" * 256, "match"), (3, "non-empty"),
])
def test_invalid_names_name_the_parameter(value: object, problem: str) -> None:
    with pytest.raises(ParameterError) as error:
        validate_name("from", value)
    assert error.value.msg.startswith("from: ") and problem in error.value.msg


def test_commons() -> None:
    assert validate_common("commons", "@var@lib@flatpak") == "@var@lib@flatpak"
    for bad in ("home", "@a/b", "@..", "@", "@@", 5):
        with pytest.raises(ParameterError, match="^commons: "):
            validate_common("commons", bad)


def test_stamp() -> None:
    assert new_stamp("20261123194541", "FPnPHjER") == "20261123194541FPnPHjER"
    with pytest.raises(GenerationError, match="stamp"):
        new_stamp("2026", "abc")
    # The year 10000 is five digits: still a reported error (ImmutableRootError), never a ValueError traceback.
    with pytest.raises(ImmutableRootError):
        new_stamp("100001231235959", "FPnPHjER")


def test_link_texts_round_trip_and_foreign_ones_are_not_ours() -> None:
    assert slot_target(OLD) == "../../snapshots/%s" % OLD and parse_slot_target(slot_target(OLD)) == OLD
    assert parse_slot_target("../../snapshots/%s/" % OLD) == OLD
    for foreign in ("/snapshots/%s" % OLD, "../snapshots/x", "../../snapshots/.x", "../../snapshots/a/b", ""):
        assert parse_slot_target(foreign) is None
    assert current_target("L") == "./links/L" and parse_current_target("./links/L") == "L"
    assert parse_current_target("links/L") == "L"
    for foreign in ("/links/L", "links/L/0", "./snapshots/L", "../links/L"):
        assert parse_current_target(foreign) is None


def test_fstab_injection_is_the_seeds_sed() -> None:
    template = "UUID=x / btrfs subvol=CURRENT_SNAPSHOTS_PATH/@,ro 0 0\n# CURRENT_SNAPSHOTS_PATH again\n"
    assert render_fstab(template, "S") == "UUID=x / btrfs subvol=/snapshots/S/@,ro 0 0\n# /snapshots/S again\n"
    default = default_template("u", ["@home", "@var@lib@flatpak"])
    assert default.splitlines()[1:] == [
        "UUID=u / btrfs subvol=CURRENT_SNAPSHOTS_PATH/@,ro,noatime 0 0",
        "UUID=u /home btrfs subvol=/commons/@home,rw,noatime 0 0",
        "UUID=u /var/lib/flatpak btrfs subvol=/commons/@var@lib@flatpak,rw,noatime 0 0"]
    assert "CURRENT_SNAPSHOTS_PATH" not in render_fstab(default, "S")


# The seed's rotation: a first generation fills every slot, each upgrade shifts, a rollback keeps the
# newer generation one slot behind without repeating the one rolled back to.
ROTATION = [
    ("first generation", "A", [], ["A", "A", "A", "A"]),
    ("upgrade 1", "B", ["A", "A", "A", "A"], ["B", "A", "A", "A"]),
    ("upgrade 2", "C", ["B", "A", "A", "A"], ["C", "B", "A", "A"]),
    ("upgrade 3", "D", ["C", "B", "A", "A"], ["D", "C", "B", "A"]),
    ("upgrade 4 drops the oldest", "E", ["D", "C", "B", "A"], ["E", "D", "C", "B"]),
    ("rollback to D", "D", ["E", "D", "C", "B"], ["D", "E", "C", "B"]),
    ("rollback to the oldest slot", "B", ["E", "D", "C", "B"], ["B", "E", "D", "C"]),
    ("switch to itself", "E", ["E", "D", "C", "B"], ["E", "D", "C", "B"]),
    ("deleted and foreign slots are skipped", "E", ["D", None, "X", "C"], ["E", "D", "C", "C"]),
]


@pytest.mark.parametrize("name, new, previous, expected", ROTATION, ids=[row[0] for row in ROTATION])
def test_history_slots(name: str, new: str, previous: list, expected: list) -> None:
    assert list(history_slots(new, previous, {"A", "B", "C", "D", "E"}, 4)) == expected


def test_history_slots_other_counts() -> None:
    assert history_slots("B", ["A"], {"A", "B"}, 1) == ("B",)
    assert history_slots("B", ["A", "A"], {"A", "B"}, 2) == ("B", "A")
    assert history_slots("C", ["B", "A"], {"A", "B", "C"}, 6) == ("C", "B", "A", "A", "A", "A")


def layout(**changes: object) -> Layout:
    values: dict = dict(top="/top", directories=frozenset(), commons=frozenset(), template=None,
                        generations=(Generation("A", 258, "2026-01-01T00:00:00Z", True),
                                     Generation("B", 259, "2026-01-02T00:00:00Z")),
                        current_text="./links/L", link_directories=(LinkDirectory("L", ("B", "A", "A", "A")),),
                        booted=258, mounted=frozenset({258}))
    values.update(changes)
    return Layout(**values)


def test_generation_state_rendering() -> None:
    state = generations_state(layout(), ["B"])
    assert state == [
        {"name": "A", "path": "/snapshots/A/@", "subvolid": 258, "created": "2026-01-01T00:00:00Z", "read_only": True,
         "slots": [1, 2, 3], "booted": True, "mounted": True, "pinned": False},
        {"name": "B", "path": "/snapshots/B/@", "subvolid": 259, "created": "2026-01-02T00:00:00Z", "read_only": False,
         "slots": [0], "booted": False, "mounted": False, "pinned": True}]
    assert summary_state(layout()) == {"generations": ["A", "B"], "slots": ["B", "A", "A", "A"], "current": "B",
                                       "links": "L"}
    assert summary_state(layout(current_text=None)) == {"generations": ["A", "B"], "slots": [], "current": None,
                                                        "links": None}


def test_layout_queries() -> None:
    broken = layout(link_directories=(LinkDirectory("L", ("gone", "A")),))
    assert broken.current_name() is None and broken.reachable() == {"gone", "A"}
    assert layout(current_text="/elsewhere").current_links() is None
    assert layout().generation("nope") is None and layout().booted_name() == "A"
    assert layout(booted=None).booted_name() is None and layout().mounted_names() == {"A"}
    assert not LinkDirectory("L", ("A", None)).complete({"A"})
    assert not LinkDirectory("L", ("A",), foreign=True).complete({"A"})
    assert not LinkDirectory("L", ("A",)).complete({"A"}, slots=2)
    assert LinkDirectory("L", ("A", "A")).complete({"A"}, slots=2)


def test_generations_sort_by_creation_then_id_and_predictions_last() -> None:
    same_second = [Generation("late-id", 300, "2026-01-01T00:00:00Z"), Generation("early-id", 299, "2026-01-01T00:00:00Z"),
                   Generation("predicted", None, None), Generation("older", 400, "2025-12-31T23:59:59Z")]
    assert [g.name for g in sort_generations(same_second)] == ["older", "early-id", "late-id", "predicted"]


def test_injection_problem_names_what_is_in_the_way(tmp_path: pathlib.Path) -> None:
    from ansible_collections.immutable.root.plugins.module_utils._btrfs.observe import injection_problem

    assert injection_problem(str(tmp_path)) is None  # no etc: it is created
    (tmp_path / "etc").symlink_to("/etc")
    assert injection_problem(str(tmp_path)) == ("%s/etc is not a directory but a symlink to '/etc'; the new "
                                                "generation's etc/fstab must be written into a real etc" % tmp_path)
    (tmp_path / "etc").unlink()
    (tmp_path / "etc").write_text("")
    assert "a regular file" in injection_problem(str(tmp_path) + "/")
    (tmp_path / "etc").unlink()
    os.mkfifo(tmp_path / "etc")
    assert "a FIFO" in injection_problem(str(tmp_path))
    (tmp_path / "etc").unlink()
    (tmp_path / "etc/fstab").mkdir(parents=True)
    assert injection_problem(str(tmp_path)) == ("%s/etc/fstab is a directory; the new generation's etc/fstab must "
                                                "be a file" % tmp_path)
    (tmp_path / "etc/fstab").rmdir()
    (tmp_path / "etc/fstab").symlink_to("/dev/zero")
    assert injection_problem(str(tmp_path)) is None  # replaced by a regular file, the target untouched


def test_the_template_is_read_with_a_cap_and_only_from_a_regular_file(tmp_path: pathlib.Path) -> None:
    from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import GenerationError as Refused
    from ansible_collections.immutable.root.plugins.module_utils._btrfs.observe import read_template

    fstab = tmp_path / "fstab"
    fstab.write_bytes(b"x" * (1 << 20))
    assert read_template(str(tmp_path)) == "x" * (1 << 20)
    fstab.write_bytes(b"x" * ((1 << 20) + 1))
    for make in (lambda: None, lambda: (fstab.unlink(), os.mkfifo(fstab)),
                 lambda: (fstab.unlink(), fstab.symlink_to("/dev/zero"))):
        make()
        with pytest.raises(Refused) as error:
            read_template(str(tmp_path))
        assert "not a regular file of at most 1048576 bytes" in error.value.msg
