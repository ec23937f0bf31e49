# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet audit's judgement as a truth table: facts in, one row per check out."""

from __future__ import annotations

import copy
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.filter.audit_checks import FilterModule, audit_checks

# A host where every design is applied and healthy (the shape immutability_facts returns).
HEALTHY: dict[str, t.Any] = {
    "root": {"read_only": True, "options": ["ro"]},
    "usr": {"read_only": True, "options": ["ro"]},
    "sysext": {"merged": True, "extensions": [{"name": "hello-sysext"}],
               "env": [{"place": "sysext_service", "value": "/usr:/opt"}, {"place": "profile", "value": "/usr:/opt"}]},
    "locks": [{"path": "/var/lib/pacman", "read_only": True, "unit": "var-lib-pacman.mount"}],
    "generations": {"layout_found": True, "current": "2", "booted": "2", "tentative": None, "blessed": None},
    "usrmerge": {"state": "merged", "offending": []},
    "warnings": [],
}
ALL = ["arch_sysext", "alpine_atomic_root", "gentoo_usr_move"]


def _status(rows: list[dict[str, str]]) -> dict[str, str]:
    return {row["check"]: row["status"] for row in rows}


def _drifted(facts: dict[str, t.Any], groups: list[str]) -> list[str]:
    return sorted(row["check"] for row in audit_checks(facts, groups) if row["status"] == "drifted")


def _with(path: str, value: t.Any) -> dict[str, t.Any]:
    facts = copy.deepcopy(HEALTHY)
    *parents, leaf = path.split(".")
    node = facts
    for key in parents:
        node = node[key]
    node[leaf] = value
    return facts


def test_a_healthy_host_is_compliant_on_every_check_of_its_groups() -> None:
    rows = audit_checks(HEALTHY, ALL)
    assert _status(rows) == {
        "facts_readable": "compliant", "usr_read_only": "compliant", "sysext_merged": "compliant",
        "pacman_locked": "compliant", "hierarchies_consistent": "compliant", "root_read_only": "compliant",
        "generations_layout": "compliant", "booted_is_current": "compliant", "blessed": "compliant",
        "usr_merged": "compliant"}
    assert all(row["reason"] for row in rows)


def test_only_the_groups_checks_are_made() -> None:
    assert [row["check"] for row in audit_checks(HEALTHY, ["gentoo_usr_move", "web"])] == ["facts_readable", "usr_merged"]
    assert [row["check"] for row in audit_checks({}, [])] == ["facts_readable"]


@pytest.mark.parametrize("path, value, groups, drifted", [
    ("usr.read_only", False, ["arch_sysext"], ["usr_read_only"]),
    # Released lock while merged: exactly the pacman check drifts.
    ("locks", [], ["arch_sysext"], ["pacman_locked"]),
    ("locks", [{"path": "/var/lib/pacman", "read_only": False, "unit": None}], ["arch_sysext"], ["pacman_locked"]),
    # Unmerged and unlocked: the lock is consistent, the missing merge is the drift.
    ("sysext", {"merged": False, "extensions": [], "env": []}, ["arch_sysext"], ["pacman_locked", "sysext_merged"]),
    ("sysext.env", [{"value": "/usr"}, {"value": "/usr:/opt"}], ["arch_sysext"], ["hierarchies_consistent"]),
    ("root.read_only", False, ["alpine_atomic_root"], ["root_read_only"]),
    ("generations.booted", "1", ["alpine_atomic_root"], ["booted_is_current"]),
    ("generations.current", None, ["alpine_atomic_root"], ["booted_is_current"]),
    ("generations.layout_found", False, ["alpine_atomic_root"], ["generations_layout"]),
    ("generations.blessed", False, ["alpine_atomic_root"], ["blessed"]),
    ("usrmerge", {"state": "partial", "offending": ["/lib64"]}, ["gentoo_usr_move"], ["usr_merged"]),
    ("usrmerge", {"state": "split", "offending": []}, ["gentoo_usr_move"], ["usr_merged"]),
    ("warnings", ["boot: lsblk failed"], [], ["facts_readable"]),
])
def test_each_drift_is_named_alone(path: str, value: t.Any, groups: list[str], drifted: list[str]) -> None:
    assert _drifted(_with(path, value), groups) == drifted


def test_the_reason_says_what_was_found() -> None:
    rows = {row["check"]: row for row in audit_checks(_with("locks", []), ["arch_sysext"])}
    assert rows["pacman_locked"]["reason"] == "/var/lib/pacman is writable while extensions are merged"
    rows = {row["check"]: row for row in audit_checks(_with("generations.booted", "1"), ["alpine_atomic_root"])}
    assert rows["booted_is_current"]["reason"] == "booted generation 1, current 2"


def test_a_lock_without_a_merge_drifts() -> None:
    facts = _with("sysext", {"merged": False, "extensions": [], "env": []})
    # The lock still held although nothing is merged: pacman is blocked for no reason.
    assert _status(audit_checks(facts, ["arch_sysext"]))["pacman_locked"] == "drifted"
    facts["locks"] = []
    assert _status(audit_checks(facts, ["arch_sysext"]))["pacman_locked"] == "compliant"


def test_not_facts_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="expects ansible_facts.immutable_root"):
        audit_checks("nope", [])
    assert FilterModule().filters()["audit_checks"] is audit_checks
