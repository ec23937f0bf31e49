# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""immutability_facts: the btrfs_generation layout as facts, from a Layout read by _btrfs_observe.

Tentative upgrades (alpine_atomic_root) keep their state in small JSON files at the btrfs top level:
`tentative` {"name", "previous", "next"} from the switch until the generation is kept or given up; `trial`
{"name", "started"} while its trial boot runs (current then points back at "previous"); `blessed` {"name", "at"}
once its health checks passed; `failed` {"name", "at", "reason"} when it did not. `building` {"name"} is
btrfs_generation's own record of a build that never finished (Layout.building). Every small regular file there
that is not part of btrfs_generation's own layout is also reported under `state_files`.
"""

from __future__ import annotations

import json
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import CURRENT, FSTAB, LAYOUT_DIRECTORIES, Layout
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import generations_state

STATE_FILE_MAX = 4096
# Names a tentative-upgrade mechanism may use: a generation name per file, or JSON {"name": …}.
TENTATIVE_FILES = ("tentative", "trial")
BLESSED_FILES = ("blessed", "good")
PINNED_FILES = ("pinned",)
FAILED_FILES = ("failed",)
_OWN_NAMES = frozenset(LAYOUT_DIRECTORIES + (CURRENT, FSTAB))


def absent() -> dict[str, t.Any]:
    return {"layout_found": False, "top": None, "current": None, "booted": None, "slots": [], "generations": [],
            "pinned": [], "tentative": None, "blessed": None, "failed": None, "building": None, "state_files": {}}


def is_state_file_name(name: str) -> bool:
    return name not in _OWN_NAMES and not name.startswith(".")


def _names_in(text: str) -> list[str]:
    """Generation names in a state file: a JSON string, list, or object with name/names, else one per line."""
    try:
        data = json.loads(text)
    except ValueError:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if isinstance(data, str):
        return [data]
    if isinstance(data, list):
        return [str(item) for item in data]
    if isinstance(data, dict):
        for key in ("name", "generation", "names", "generations"):
            if key in data:
                value = data[key]
                return [str(item) for item in value] if isinstance(value, list) else [str(value)]
    return []


def _first(state_files: t.Mapping[str, str], names: t.Sequence[str]) -> list[str] | None:
    for name in names:
        if name in state_files:
            return _names_in(state_files[name])
    return None


def generation_facts(layout: Layout, state_files: t.Mapping[str, str], top_description: str) -> dict[str, t.Any]:
    pinned = _first(state_files, PINNED_FILES) or []
    tentative_names = _first(state_files, TENTATIVE_FILES)
    blessed_names = _first(state_files, BLESSED_FILES)
    current = layout.current_name()
    tentative = tentative_names[0] if tentative_names else None
    if tentative is not None:
        # Pending or on trial: the boot steps remove `tentative` once the generation is kept or given up.
        blessed: bool | None = False
    elif blessed_names is not None:
        blessed = current in blessed_names
    else:
        blessed = None  # no tentative-upgrade state on this machine
    found = bool(layout.directories) or layout.current_text is not None or bool(layout.generations)
    return {
        "layout_found": found,
        "top": top_description,
        "current": current,
        "booted": layout.booted_name(),
        "slots": list(layout.slots()),
        "generations": generations_state(layout, pinned),
        "pinned": pinned,
        "tentative": tentative,
        "blessed": blessed,
        "failed": _failure(state_files),
        "building": layout.building,
        "state_files": dict(state_files),
    }


def _failure(state_files: t.Mapping[str, str]) -> dict[str, t.Any] | None:
    """The generation that last failed its trial and why: {"name", "reason", "at"} (missing keys are null)."""
    for name in FAILED_FILES:
        if name in state_files:
            try:
                data = json.loads(state_files[name])
            except ValueError:
                data = None
            if isinstance(data, dict):
                return {"name": data.get("name"), "reason": data.get("reason"), "at": data.get("at")}
            names = _names_in(state_files[name])
            return {"name": names[0] if names else None, "reason": None, "at": None}
    return None
