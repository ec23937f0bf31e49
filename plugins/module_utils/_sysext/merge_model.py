# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge: the request and the observed state of the hierarchies."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._sysext.images import ImageVerdict
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import HostRelease

State = t.Literal["merged", "unmerged", "refreshed"]

# Hierarchies an overlay must never cover: the root itself, the kernel's file systems, and /run, which
# holds systemd-sysext's own workspace.
FORBIDDEN_HIERARCHIES = {
    "/": "the root directory itself cannot be a sysext hierarchy",
    "/proc": "a kernel file system",
    "/sys": "a kernel file system",
    "/dev": "the device file system",
    "/run": "systemd-sysext's workspace lives there",
}
# Options newer than some systemd versions: (option, first systemd version that has it).
NEWER_OPTIONS = (("image_policy", 254), ("mutable", 256))


@dataclass(frozen=True)
class MergeRequest:
    root: str
    state: State
    hierarchies: tuple[str, ...]
    required: tuple[str, ...] = ()
    force: bool = False
    make_shared: bool = False
    image_policy: str | None = None
    mutable: str | None = None


@dataclass(frozen=True)
class HierarchyState:
    """One hierarchy of the root: is a sysext overlay of ours on top, and could a new one be seen here."""

    hierarchy: str  # "/usr"
    path: str  # root + hierarchy
    merged: bool = False
    extensions: tuple[str, ...] = ()  # from .systemd-sysext/extensions, in systemd's order
    since: float | None = None  # mtime of the merged tree's top directory
    mount_id: int | None = None
    device: str | None = None
    shared: bool = True  # the mount a new merge attaches to is shared, so the merge propagates back
    anchor: str = ""  # that mount's mountpoint
    creatable: bool = True  # the directory exists, or systemd-sysext can create it
    mode: str | None = None  # merged: the --mutable mode read from the overlay (_sysext/mutable.py); None if unknown
    mutable_dir: bool = False  # /var/lib/extensions.mutable/<hierarchy> exists under the root (auto and import use it)


@dataclass(frozen=True)
class MergeObserved:
    systemd_version: int
    host: HostRelease
    architecture: str
    images: tuple[ImageVerdict, ...]
    hierarchies: tuple[HierarchyState, ...]
    run_mounted: bool = True
