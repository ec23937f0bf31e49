# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet audit's judgement: a host's immutability facts against what its inventory groups say it should be.

Pure: a function of the facts dict and the group names, so the audit playbook stays a data flow and the
judgement is unit-tested as a table.
"""

from __future__ import annotations

import typing as t

DOCUMENTATION = r"""
name: audit_checks
short_description: Judge a host's immutability facts against the designs its groups ask for
version_added: 0.2.0
description:
  - Takes C(ansible_facts.immutable_root) as returned by M(immutable.root.immutability_facts) and the host's
    C(group_names), and returns one check per expectation of each design group the host is in
    (C(arch_sysext), C(alpine_atomic_root), C(gentoo_usr_move)).
  - A host in none of those groups gets only the C(facts_readable) check.
options:
  _input:
    description: The host's C(ansible_facts.immutable_root).
    type: dict
    required: true
  groups:
    description: The host's C(group_names).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Judge the host
  ansible.builtin.set_fact:
    audit_checks: "{{ ansible_facts.immutable_root | immutable.root.audit_checks(group_names) }}"
"""

RETURN = r"""
_value:
  description: One C({design, check, status, reason}) per expectation; C(status) is C(compliant) or C(drifted).
  type: list
  elements: dict
"""

DESIGNS = ("arch_sysext", "alpine_atomic_root", "gentoo_usr_move")
Check = t.Tuple[str, bool, str]


def _lock(facts: dict[str, t.Any], path: str) -> dict[str, t.Any] | None:
    for lock in facts.get("locks") or []:
        if lock.get("path") == path:
            return t.cast("dict[str, t.Any]", lock)
    return None


def _arch_sysext(facts: dict[str, t.Any]) -> list[Check]:
    usr = facts.get("usr") or {}
    sysext = facts.get("sysext") or {}
    lock = _lock(facts, "/var/lib/pacman")
    values = sorted({place.get("value") for place in sysext.get("env") or []})
    merged = bool(sysext.get("merged"))
    locked = lock is not None and lock.get("read_only") is True
    return [
        ("usr_read_only", usr.get("read_only") is True,
         "/usr is mounted read-only" if usr.get("read_only") else "/usr is writable (%s)" % usr.get("options")),
        ("sysext_merged", merged,
         "extensions merged: %s" % ", ".join(item.get("name", "?") for item in sysext.get("extensions") or [])
         if merged else "no system extension is merged"),
        # Merged <=> locked: pacman must be blocked exactly while extensions are merged.
        ("pacman_locked", locked == merged,
         "/var/lib/pacman is %s while extensions are %s"
         % ("a read-only self-bind (held by %s)" % lock.get("unit") if lock and locked else "writable",
            "merged" if merged else "unmerged")),
        ("hierarchies_consistent", len(values) <= 1,
         "SYSTEMD_SYSEXT_HIERARCHIES=%s everywhere it is set" % (values[0] if values else "(unset)")
         if len(values) <= 1 else "SYSTEMD_SYSEXT_HIERARCHIES differs between places: %s" % values),
    ]


def _alpine_atomic_root(facts: dict[str, t.Any]) -> list[Check]:
    root = facts.get("root") or {}
    generations = facts.get("generations") or {}
    current, booted = generations.get("current"), generations.get("booted")
    return [
        ("root_read_only", root.get("read_only") is True,
         "/ is mounted read-only" if root.get("read_only") else "/ is writable (%s)" % root.get("options")),
        ("generations_layout", bool(generations.get("layout_found")),
         "generations layout found" if generations.get("layout_found") else "no btrfs generations layout"),
        ("booted_is_current", current is not None and booted == current,
         "booted generation %s is current" % booted if current is not None and booted == current
         else "booted generation %s, current %s" % (booted, current)),
        ("blessed", generations.get("blessed") is not False,
         "no tentative generation awaits its health checks" if generations.get("blessed") is not False
         else "generation %s is tentative and not blessed" % generations.get("tentative")),
    ]


def _gentoo_usr_move(facts: dict[str, t.Any]) -> list[Check]:
    usrmerge = facts.get("usrmerge") or {}
    state = usrmerge.get("state")
    return [
        ("usr_merged", state == "merged",
         "/bin, /sbin and /lib* lead into /usr" if state == "merged"
         else "usrmerge state %s (%s)" % (state, ", ".join(usrmerge.get("offending") or []) or "split")),
    ]


JUDGES: dict[str, t.Callable[[dict[str, t.Any]], list[Check]]] = {
    "arch_sysext": _arch_sysext,
    "alpine_atomic_root": _alpine_atomic_root,
    "gentoo_usr_move": _gentoo_usr_move,
}


def audit_checks(facts: t.Any, groups: t.Sequence[str]) -> list[dict[str, str]]:
    if not isinstance(facts, dict):
        raise TypeError("audit_checks expects ansible_facts.immutable_root (a dict), got %s" % type(facts).__name__)
    warnings = [str(item) for item in facts.get("warnings") or []]
    rows = [{"design": "all", "check": "facts_readable", "status": "compliant" if not warnings else "drifted",
             "reason": "every section was read" if not warnings else "; ".join(warnings)}]
    for design in DESIGNS:
        if design in groups:
            rows.extend({"design": design, "check": name, "status": "compliant" if ok else "drifted", "reason": reason}
                        for name, ok, reason in JUDGES[design](facts))
    return rows


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"audit_checks": audit_checks}
