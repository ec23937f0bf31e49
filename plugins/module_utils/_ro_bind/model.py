# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: the request, the observed state and the typed layers of a mount stack."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, replace

from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import FstabEntry
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry

State = t.Literal["present", "absent"]
Persist = t.Literal["none", "fstab", "systemd"]

UNIT_WANTED_BY = "local-fs.target"


@dataclass(frozen=True)
class Layer:
    """A mount stacked on the path; self_bind means it shows the path's own directory read-only or not."""

    mount: MountEntry
    self_bind: bool


@dataclass(frozen=True)
class Request:
    path: str
    state: State
    persist: Persist
    fstab_path: str
    unit_dir: str
    # A unit whose activity the lock follows (persist=systemd): held exactly while that unit is active.
    bound_to: str | None = None


@dataclass(frozen=True)
class Observed:
    """Everything the planner needs, read from the system beforehand."""

    layers: tuple[Layer, ...]  # bottom first
    parent: MountEntry | None  # the mount the bottom layer sits on (or that holds path when nothing does)
    fstab_entries: tuple[FstabEntry, ...]  # entries of fstab_path whose mountpoint is path
    unit_text: str | None  # current content of the mount unit file, None when absent
    unit_enabled: bool
    systemd_running: bool
    stale_wants: tuple[str, ...] = ()  # enablement links of the unit under other units' .wants directories
    bound_active: bool = True  # whether request.bound_to is active (True when there is none)


def wanted_by(request: Request) -> str:
    return request.bound_to or UNIT_WANTED_BY


def mount_request(request: Request, observed: Observed) -> Request:
    """The request for the mounts alone: a lock bound to an inactive unit is not held."""
    if request.state == "present" and not observed.bound_active:
        return replace(request, state="absent")
    return request
