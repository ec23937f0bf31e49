# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ro_bind planner as truth tables: (request, observed) -> actions, or a refusal."""

from __future__ import annotations

import pathlib
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import MountError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry, parse_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.model import Observed, Request
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.plan import (
    classify_layers, persistence_warnings, plan_ro_bind, writer_warnings,
)
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.render import (
    desired_fstab_line,
    fstab_text,
    mount_state,
    persistence_state,
    predict_mount_state,
    predict_persistence_state,
    unit_text,
)

FIXTURES = pathlib.Path(__file__).parents[1] / "_linux" / "fixtures"
P = "/srv/db"
ROOT = MountEntry(1, 0, "8:1", "/", "/", ("rw", "relatime"), ("shared:1",), "ext4", "/dev/sda1", ("rw",))


def layer(mount_id: int, parent_id: int, read_only: bool, root: str = P, device: str = "8:1",
          fstype: str = "ext4") -> MountEntry:
    return MountEntry(mount_id, parent_id, device, root, P, ("ro" if read_only else "rw", "relatime"),
                      ("shared:1",), fstype, "/dev/sda1", ("rw",))


def observed(*stack: MountEntry, fstab: str = "", unit: str | None = None, enabled: bool = False,
             systemd: bool = False) -> Observed:
    layers, parent = classify_layers((ROOT,) + stack, P)
    entries = tuple(entry for entry in parse_fstab(fstab) if entry.mountpoint == P)
    return Observed(layers, parent, entries, unit, enabled, systemd)


def request(state: str = "present", persist: str = "none") -> Request:
    return Request(P, t.cast(t.Any, state), t.cast(t.Any, persist), "/etc/fstab", "/etc/systemd/system")


def verbs(actions: t.Iterable[t.Any]) -> list[str]:
    return [action.action for action in actions]


SELF_RO = layer(10, 1, True)
SELF_RW = layer(10, 1, False)
FOREIGN_TMPFS = layer(10, 1, False, root="/", device="0:40", fstype="tmpfs")
FOREIGN_BIND = layer(10, 1, True, root="/elsewhere")

# (name, stack, present actions or exception, absent actions or exception)
MOUNT_TABLE = [
    ("nothing mounted", (), ["lock"], []),
    ("locked", (SELF_RO,), [], ["unmount"]),
    ("writable self-bind (interrupted lock or drift)", (SELF_RW,), ["remount_ro"], ["unmount"]),
    ("stacked rw under ro", (SELF_RW, layer(11, 10, True)), ["unmount", "remount_ro"], ["unmount", "unmount"]),
    ("stacked ro under ro", (SELF_RO, layer(11, 10, True)), ["unmount"], ["unmount", "unmount"]),
    ("three stacked, bottom ro", (SELF_RO, layer(11, 10, False), layer(12, 11, True)), ["unmount", "unmount"],
     ["unmount"] * 3),
    ("foreign filesystem", (FOREIGN_TMPFS,), ParameterError, []),
    ("bind of another directory", (FOREIGN_BIND,), ParameterError, []),
    ("self-bind on top of a foreign mount", (FOREIGN_TMPFS, layer(11, 10, True, root="/", device="0:40")),
     ParameterError, ["unmount"]),
    ("foreign mount on top of a self-bind", (SELF_RO, layer(11, 10, False, root="/", device="0:41", fstype="tmpfs")),
     ParameterError, MountError),
    # / shared: a tmpfs mounted on the lock propagates a copy the kernel tucks under it (tmpfs 12 -> lock 10 ->
    # tmpfs 11); the lock still self-binds the parent, and the copy on top is no self-bind of the lock.
    ("shared: a mount on the lock, its copy tucked under it",
     (layer(12, 1, False, root="/", device="0:41", fstype="tmpfs"), layer(10, 12, True),
      layer(11, 10, False, root="/", device="0:41", fstype="tmpfs")),
     ParameterError, MountError),
    ("shared: the tucked copy alone under the lock", (layer(12, 1, False, root="/", device="0:41", fstype="tmpfs"),
                                                      layer(10, 12, True)),
     ParameterError, ["unmount"]),
]


@pytest.mark.parametrize("name, stack, present, absent", MOUNT_TABLE, ids=[row[0] for row in MOUNT_TABLE])
def test_mount_truth_table(name: str, stack: tuple[MountEntry, ...], present: t.Any, absent: t.Any) -> None:
    for state, expected in (("present", present), ("absent", absent)):
        if isinstance(expected, list):
            assert verbs(plan_ro_bind(request(state), observed(*stack))) == expected, state
        else:
            with pytest.raises(expected) as error:
                plan_ro_bind(request(state), observed(*stack))
            assert error.value.msg.startswith("path: "), "the error names the parameter"


def test_unmounts_peel_from_the_top() -> None:
    plan = plan_ro_bind(request("absent"), observed(SELF_RW, layer(11, 10, True), layer(12, 11, True)))
    assert [action.detail for action in plan] == [
        "self-bind layer (mount id 12)", "self-bind layer (mount id 11)", "self-bind layer (mount id 10)"]


def test_classification_of_captured_layers() -> None:
    entries = parse_mountinfo((FIXTURES / "mountinfo_private.txt").read_text())
    layers, parent = classify_layers(entries, "/tmp/cap/root/var/lib/pacman")
    assert [(lay.mount.mount_id, lay.self_bind) for lay in layers] == [(64, True), (65, True), (66, False)]
    assert parent is not None and parent.mount_id == 63
    shared = parse_mountinfo((FIXTURES / "mountinfo_shared.txt").read_text())
    foreign = classify_layers(shared, "/tmp/cap/root/foreign")[0]
    assert [(lay.mount.mount_id, lay.self_bind) for lay in foreign] == [(68, False), (71, False)]
    spaced = classify_layers(shared, "/tmp/cap/root/with space/dir")[0]
    assert [(lay.mount.mount_id, lay.self_bind, lay.mount.read_only) for lay in spaced] == [(67, True, True)]


FSTAB_OURS = "%s %s none bind,ro 0 0\n" % (P, P)
FSTAB_TABLE = [
    ("no entry", "UUID=1 / ext4 defaults 0 1\n", ["write_fstab_entry"], []),
    ("our entry", FSTAB_OURS, [], ["remove_fstab_entry"]),
    ("our entry, other spacing", "%s\t%s  none  bind,ro  0  0\n" % (P, P), [], ["remove_fstab_entry"]),
    ("our entry, writable", "%s %s none bind 0 0\n" % (P, P), ["write_fstab_entry"], ["remove_fstab_entry"]),
    ("duplicated", FSTAB_OURS * 2, ["write_fstab_entry"], ["remove_fstab_entry"] * 2),
    ("foreign entry", "tmpfs %s tmpfs defaults 0 0\n" % P, ParameterError, []),
]


@pytest.mark.parametrize("name, fstab, present, absent", FSTAB_TABLE, ids=[row[0] for row in FSTAB_TABLE])
def test_fstab_truth_table(name: str, fstab: str, present: t.Any, absent: t.Any) -> None:
    for state, expected, stack in (("present", present, (SELF_RO,)), ("absent", absent, ())):
        if isinstance(expected, list):
            assert verbs(plan_ro_bind(request(state, "fstab"), observed(*stack, fstab=fstab))) == expected, state
        else:
            with pytest.raises(expected) as error:
                plan_ro_bind(request(state, "fstab"), observed(*stack, fstab=fstab))
            assert error.value.msg.startswith("persist: ")


UNIT = unit_text(P)
UNIT_TABLE = [
    ("nothing", None, False, False, ["write_unit", "enable_unit"], []),
    ("written, not enabled", UNIT, False, False, ["enable_unit"], ["remove_unit"]),
    ("in place", UNIT, True, False, [], ["disable_unit", "remove_unit"]),
    ("edited by hand", UNIT + "# local\n", True, False, ["write_unit"], ["disable_unit", "remove_unit"]),
    ("nothing, systemd running", None, False, True, ["write_unit", "enable_unit", "daemon_reload"], []),
    ("in place, systemd running", UNIT, True, True, [], ["disable_unit", "remove_unit", "daemon_reload"]),
]


@pytest.mark.parametrize("name, unit, enabled, systemd, present, absent", UNIT_TABLE, ids=[r[0] for r in UNIT_TABLE])
def test_unit_truth_table(name: str, unit: str | None, enabled: bool, systemd: bool, present: list[str],
                          absent: list[str]) -> None:
    state = observed(SELF_RO, unit=unit, enabled=enabled, systemd=systemd)
    assert verbs(plan_ro_bind(request("present", "systemd"), state)) == present
    state = observed(unit=unit, enabled=enabled, systemd=systemd)
    assert verbs(plan_ro_bind(request("absent", "systemd"), state)) == absent


def test_lock_before_persisting_and_unpersist_before_unlocking() -> None:
    assert verbs(plan_ro_bind(request("present", "fstab"), observed())) == ["lock", "write_fstab_entry"]
    assert verbs(plan_ro_bind(request("absent", "fstab"), observed(SELF_RO, fstab=FSTAB_OURS))) == [
        "remove_fstab_entry", "unmount"]


def test_persist_none_never_touches_persistence_but_warns_on_unlock() -> None:
    state = observed(SELF_RO, fstab=FSTAB_OURS, unit=UNIT, enabled=True)
    assert verbs(plan_ro_bind(request("absent"), state)) == ["unmount"]
    warnings = persistence_warnings(request("absent"), state)
    assert len(warnings) == 2 and "persist=fstab" in warnings[0] and "persist=systemd" in warnings[1]
    assert persistence_warnings(request("present"), state) == []
    assert persistence_warnings(request("absent", "fstab"), state) == []


def test_fstab_text_keeps_other_lines_and_position() -> None:
    text = "# static\nUUID=1 / ext4 defaults 0 1\n%s %s none bind 0 0\ntmpfs /tmp tmpfs defaults 0 0\n" % (P, P)
    assert fstab_text(text, P, present=True).splitlines() == [
        "# static", "UUID=1 / ext4 defaults 0 1", desired_fstab_line(P), "tmpfs /tmp tmpfs defaults 0 0"]
    assert fstab_text(text, P, present=False).splitlines() == [
        "# static", "UUID=1 / ext4 defaults 0 1", "tmpfs /tmp tmpfs defaults 0 0"]
    assert fstab_text("", P, present=True) == desired_fstab_line(P) + "\n"
    assert fstab_text(FSTAB_OURS * 3, P, present=True) == FSTAB_OURS


def test_fstab_line_escapes_spaces() -> None:
    assert desired_fstab_line("/srv/my db") == "/srv/my\\040db /srv/my\\040db none bind,ro 0 0"


def test_unit_text_names_the_path() -> None:
    assert "What=%s\nWhere=%s\n" % (P, P) in UNIT and "Options=bind,ro" in UNIT


def test_prediction_for_a_new_lock_copies_the_parent() -> None:
    predicted = predict_mount_state(request(), observed())
    assert predicted["read_only"] and predicted["self_bind"] and predicted["layers"] == 1
    assert predicted["fs_root"] == P and predicted["source"] == "/dev/sda1" and predicted["mount_id"] is None
    assert predicted["mount_options"] == ["ro", "relatime"] and predicted["propagation"] == "shared"


def test_prediction_for_collapse_and_unlock() -> None:
    stacked = observed(SELF_RW, layer(11, 10, True))
    assert predict_mount_state(request(), stacked)["layers"] == 1
    assert predict_mount_state(request(), stacked)["mount_id"] == 10
    unlocked = predict_mount_state(request("absent"), stacked)
    assert unlocked["layers"] == 0 and unlocked["source"] is None and not unlocked["read_only"]
    foreign_left = predict_mount_state(request("absent"), observed(FOREIGN_TMPFS, layer(11, 10, True, "/", "0:40")))
    assert foreign_left["layers"] == 1 and foreign_left["fstype"] == "tmpfs" and not foreign_left["self_bind"]


def test_mount_state_of_nothing() -> None:
    assert mount_state(P, ())["layers"] == 0 and mount_state(P, ())["propagation"] is None


def test_writer_warnings_name_process_and_file() -> None:
    assert writer_warnings([{"pid": 7, "command": "pacman", "file": P + "/db.lck"}]) == [
        "pacman (pid 7) holds /srv/db/db.lck open for writing; the lock does not stop writes through that descriptor"]


def test_persistence_state_and_prediction() -> None:
    fstab_entries = observed(fstab=FSTAB_OURS * 2).fstab_entries
    assert persistence_state(request("present", "fstab"), fstab_entries[:1], None) == {"fstab_entry": FSTAB_OURS.strip()}
    assert persistence_state(request("present", "fstab"), fstab_entries, None) == {
        "fstab_entry": [FSTAB_OURS.strip()] * 2}
    assert persistence_state(request("present", "fstab"), (), None) == {"fstab_entry": None}
    assert persistence_state(request("present", "systemd"), (), UNIT) == {"unit": UNIT}
    assert persistence_state(request("present"), fstab_entries, UNIT) == {}
    assert predict_persistence_state(request("present", "fstab")) == {"fstab_entry": desired_fstab_line(P)}
    assert predict_persistence_state(request("absent", "fstab")) == {"fstab_entry": None}
    assert predict_persistence_state(request("present", "systemd")) == {"unit": UNIT}
    assert predict_persistence_state(request("absent", "systemd")) == {"unit": None}
    assert predict_persistence_state(request("absent")) == {}


def test_prediction_without_any_mount_information() -> None:
    empty = Observed((), None, (), None, False, False)
    assert predict_mount_state(request(), empty)["layers"] == 0


SYSEXT = "systemd-sysext.service"


def bound_request(state: str = "present") -> Request:
    return Request(P, t.cast(t.Any, state), "systemd", "/etc/systemd/system", "/etc/systemd/system", bound_to=SYSEXT)


def bound_observed(*stack: MountEntry, active: bool, unit: str | None = None, enabled: bool = False,
                   stale: tuple[str, ...] = ()) -> Observed:
    layers, parent = classify_layers((ROOT,) + stack, P)
    return Observed(layers, parent, (), unit, enabled, True, stale_wants=stale, bound_active=active)


BOUND_UNIT = unit_text(P, SYSEXT)
# (name, stack, bound unit active, present actions, absent actions)
BOUND_TABLE = [
    ("active, nothing yet", (), True, ["lock", "write_unit", "enable_unit", "daemon_reload"], []),
    ("inactive, nothing yet", (), False, ["write_unit", "enable_unit", "daemon_reload"], []),
    ("inactive, still locked", (SELF_RO,), False, ["unmount", "write_unit", "enable_unit", "daemon_reload"],
     ["unmount"]),
    ("active, locked", (SELF_RO,), True, ["write_unit", "enable_unit", "daemon_reload"], ["unmount"]),
]


@pytest.mark.parametrize("name, stack, active, present, absent", BOUND_TABLE, ids=[row[0] for row in BOUND_TABLE])
def test_bound_lock_is_held_exactly_while_the_unit_is_active(
        name: str, stack: tuple[MountEntry, ...], active: bool, present: list[str], absent: list[str]) -> None:
    assert verbs(plan_ro_bind(bound_request(), bound_observed(*stack, active=active))) == present
    assert verbs(plan_ro_bind(bound_request("absent"), bound_observed(*stack, active=active))) == absent


def test_bound_lock_in_place_needs_nothing_and_predicts_the_unit_state() -> None:
    state = bound_observed(SELF_RO, active=True, unit=BOUND_UNIT, enabled=True)
    assert plan_ro_bind(bound_request(), state) == ()
    assert predict_mount_state(bound_request(), state)["read_only"]
    unlocked = predict_mount_state(bound_request(), bound_observed(SELF_RO, active=False, unit=BOUND_UNIT,
                                                                   enabled=True))
    assert unlocked["layers"] == 0 and not unlocked["read_only"]


def test_bound_unit_text_binds_to_and_is_wanted_by_the_unit() -> None:
    lines = BOUND_UNIT.splitlines()
    for line in ("BindsTo=" + SYSEXT, "After=" + SYSEXT, "WantedBy=" + SYSEXT, "DefaultDependencies=no",
                 "Conflicts=umount.target", "Options=bind,ro", "What=" + P, "Where=" + P):
        assert line in lines
    assert "WantedBy=local-fs.target" not in lines and "WantedBy=local-fs.target" in UNIT.splitlines()


def test_enablement_under_another_unit_is_removed() -> None:
    stale = ("/etc/systemd/system/local-fs.target.wants/srv-db.mount",)
    state = bound_observed(SELF_RO, active=True, unit=BOUND_UNIT, enabled=True, stale=stale)
    actions = plan_ro_bind(bound_request(), state)
    assert [(action.action, action.target) for action in actions] == [
        ("disable_unit", stale[0]), ("daemon_reload", "systemd")]
