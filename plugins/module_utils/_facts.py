# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""immutability_facts: pure views over what was read (mount table, fstab, config texts, top-level nodes).

Nothing here touches the system; _facts_system.py reads and hands the texts in.
"""

from __future__ import annotations

import re
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import FstabEntry
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry, mount_containing, stack_at
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.plan import classify_layers
from ansible_collections.immutable.root.plugins.module_utils._linux.units import mount_unit_name
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import ALLOWED, PREFIX, Node

HIERARCHIES_KEY = "SYSTEMD_SYSEXT_HIERARCHIES"
MUTABLE_KEY = "SYSTEMD_SYSEXT_MUTABLE_MODE"
# A value runs to whitespace or a quote: covers `export K="v"`, `K=v`, systemd's Environment="K=v" and
# Environment=K=v, and systemd.setenv=K=v on a kernel command line.
_ASSIGNMENT = re.compile(r"(?:^|[\s\"';=])(?:export\s+)?%s=(\"[^\"]*\"|'[^']*'|[^\s\"']*)")
_MUTABLE_OPTION = re.compile(r"--mutable=([A-Za-z-]+)")
_COMMENT = re.compile(r"^\s*[#;]")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def assignments(text: str, key: str) -> list[str]:
    """Values assigned to key in a shell, systemd unit or kernel command line text, comments skipped."""
    pattern = re.compile(_ASSIGNMENT.pattern % re.escape(key))
    values: list[str] = []
    for line in text.splitlines():
        if _COMMENT.match(line):
            continue
        values.extend(_unquote(match.group(1)) for match in pattern.finditer(line))
    return values


def mutable_options(text: str) -> list[str]:
    """--mutable= values on ExecStart lines of a unit text (systemd-sysext 256+)."""
    return [match.group(1) for line in text.splitlines() if not _COMMENT.match(line) and "ExecStart" in line
            for match in _MUTABLE_OPTION.finditer(line)]


def env_places(texts: t.Sequence[tuple[str, str, str]], key: str) -> list[dict[str, str]]:
    """One {place, path, value} per assignment of key in (place, path, text) triples, in the order given."""
    return [{"place": place, "path": path, "value": value}
            for place, path, text in texts for value in assignments(text, key)]


def overlay_layers(mount: MountEntry) -> dict[str, t.Any] | None:
    """lowerdir (top first, as overlayfs lists it), upperdir and workdir of an overlay mount; None otherwise."""
    if mount.fstype != "overlay":
        return None
    options = dict(option.split("=", 1) for option in mount.super_options if "=" in option)
    lower = options.get("lowerdir", "")
    return {"lowerdir": [part for part in lower.split(":") if part], "upperdir": options.get("upperdir"),
            "workdir": options.get("workdir")}


def _subvolume(mount: MountEntry) -> str | None:
    for option in mount.super_options:
        if option.startswith("subvol="):
            return option.split("=", 1)[1]
    return None


def mount_view(entries: t.Sequence[MountEntry], path: str) -> dict[str, t.Any]:
    """The visible mount at path (or the one holding it): what a playbook asserts on."""
    mount = mount_containing(entries, path)
    if mount is None:
        return {"path": path, "mountpoint": None, "source": None, "fstype": None, "read_only": None,
                "own_mount": False, "options": [], "subvolume": None, "overlay": None, "stacked": 0}
    return {
        "path": path,
        "mountpoint": mount.mountpoint,
        "source": mount.source,
        "fstype": mount.fstype,
        "read_only": mount.read_only or "ro" in mount.super_options,
        "own_mount": mount.mountpoint == path,
        "options": list(mount.mount_options),
        "subvolume": _subvolume(mount) if mount.fstype == "btrfs" else None,
        "overlay": overlay_layers(mount),
        "stacked": len(stack_at(entries, mount.mountpoint)),
    }


def lock_unit(path: str, fstab: t.Sequence[FstabEntry], unit_files: t.Collection[str]) -> tuple[str | None, str | None]:
    """(unit, how) that recreates a self-bind of path at boot: a mount unit file, an fstab line, or neither."""
    name = mount_unit_name(path)
    if name in unit_files:
        return name, "unit"
    if any(entry.mountpoint == path and "bind" in entry.options for entry in fstab):
        return name, "fstab"  # systemd-fstab-generator makes the same unit name from the line
    return None, None


def locks(entries: t.Sequence[MountEntry], fstab: t.Sequence[FstabEntry], unit_files: t.Collection[str]
          ) -> list[dict[str, t.Any]]:
    """One entry per path whose top layer is a self-bind (ro_bind's test), read-only or not."""
    found = []
    for mountpoint in sorted({entry.mountpoint for entry in entries}):
        layers, _parent = classify_layers(entries, mountpoint)
        if not layers or not layers[-1].self_bind:
            continue
        unit, persisted = lock_unit(mountpoint, fstab, unit_files)
        found.append({"path": mountpoint, "read_only": layers[-1].mount.read_only, "unit": unit,
                      "persisted": persisted, "layers": sum(1 for layer in layers if layer.self_bind)})
    return found


def usrmerge_view(tops: t.Mapping[str, Node | None], links: t.Mapping[str, str], root_names: t.Iterable[str]
                  ) -> dict[str, t.Any]:
    """merged (every present name is a symlink into usr/), split (all real directories) or partial."""
    paths: dict[str, str] = {}
    merged_names, split_names, offending = [], [], []
    for name in ALLOWED:
        node = tops.get(name)
        shown = "/" + name
        if node is None:
            continue
        if node.kind == "link":
            physical = links.get(name, "")
            paths[shown] = "symlink -> %s" % node.target
            if physical == "usr" or physical.startswith("usr/"):  # measure() gives paths relative to root
                merged_names.append(shown)
            else:
                offending.append(shown)
        elif node.kind == "dir":
            paths[shown] = "directory"
            split_names.append(shown)
        else:
            paths[shown] = node.kind
            offending.append(shown)
    leftovers = sorted("/" + name for name in root_names if name.startswith(PREFIX))
    if offending or leftovers or (merged_names and split_names):
        state = "partial"
        # In a partial merge the names still split are what is left to do.
        offending = sorted(set(offending + leftovers + (split_names if merged_names else [])))
    elif split_names or tops.get("usr") is None:
        state = "split"
    else:
        state = "merged"
    return {"state": state, "paths": paths, "offending": offending}


def sysext_warnings(env: t.Sequence[t.Mapping[str, str]]) -> list[str]:
    values = {item["value"] for item in env}
    if len(values) > 1:
        return ["%s differs between the places it is set: %s" % (
            HIERARCHIES_KEY, "; ".join("%s (%s) = %s" % (item["path"], item["place"], item["value"]) for item in env))]
    return []


def hierarchies_to_check(env: t.Sequence[t.Mapping[str, str]], defaults: t.Sequence[str] = ("/usr", "/opt")
                         ) -> list[str]:
    found = list(defaults)
    for item in env:
        for path in item["value"].split(":"):
            if path.startswith("/") and path not in found:
                found.append(path)
    return found
