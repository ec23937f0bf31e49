# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: the on-disk layout, its typed snapshot, and the request and plan types."""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError

SNAPSHOTS = "snapshots"
LINKS = "links"
NEXT = "next"
COMMONS = "commons"
CURRENT = "current"
FSTAB = "fstab"
# A tentative switch (alpine_atomic_root): JSON {"name", "previous", "next"}, read by the generation's boot steps
# and by immutability_facts (_facts_generations.TENTATIVE_FILES).
TENTATIVE = "tentative"
# A generation being built (alpine_atomic_root's upgrade): JSON {"name"}, written before its snapshot is taken and
# removed once it is finished, so a run cut off in between leaves a name the next build or prune deletes.
BUILDING = "building"
ROOT_SUBVOLUME = "@"
LAYOUT_DIRECTORIES = (SNAPSHOTS, LINKS, NEXT, COMMONS)
PLACEHOLDER = "CURRENT_SNAPSHOTS_PATH"
# A copy is made in a staging subvolume and renamed into place, so a generation appears only complete.
STAGING_PREFIX = ".partial-"
TEMPORARY_LINK_PREFIX = ".current."
TOP_LEVEL_ID = 5

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMON_PATTERN = re.compile(r"^@[A-Za-z0-9._@-]*$")
NAME_MAX = 255
# The fstab template (the parameter and top/fstab) is read with this cap; a larger one would be read truncated
# and look changed on every run.
MAX_FSTAB_BYTES = 1 << 20
# A generation's etc/fstab is the template with each placeholder (22 bytes) replaced by /snapshots/<NAME>
# (at most 11 + NAME_MAX bytes), so it can be about 12 times larger.
MAX_RENDERED_FSTAB_BYTES = MAX_FSTAB_BYTES * (len("/%s/" % SNAPSHOTS) + NAME_MAX) // len(PLACEHOLDER) + 1
_SLOT_TARGET = re.compile(r"^\.\./\.\./%s/([^/]+)/?$" % SNAPSHOTS)
_CURRENT_TARGET = re.compile(r"^(?:\./)?%s/([^/]+)/?$" % LINKS)


class GenerationError(ImmutableRootError):
    """The layout is not in a state the module can safely act on, or a btrfs step failed."""


def parse_slot_target(text: str) -> str | None:
    """Generation name of a links/<STAMP>/N symlink text, None when it is not ours."""
    match = _SLOT_TARGET.match(text)
    if match and NAME_PATTERN.match(match.group(1)):
        return match.group(1)
    return None


def parse_current_target(text: str) -> str | None:
    """Link-directory name of the `current` symlink text (./links/X or links/X), None when it is not ours.

    Absolute targets are refused: the kernel resolves them from the top level, but userspace reading the
    top level mounted elsewhere would not.
    """
    match = _CURRENT_TARGET.match(text)
    if match and NAME_PATTERN.match(match.group(1)):
        return match.group(1)
    return None


@dataclass(frozen=True)
class SubvolumeLine:
    """One line of `btrfs subvolume list` (path is relative to the top level)."""

    subvolid: int
    generation: int
    top_level: int
    path: str
    otime: str | None = None  # only with -s, in the btrfs process's local time


@dataclass(frozen=True)
class SubvolumeInfo:
    """What BTRFS_IOC_GET_SUBVOL_INFO (or `btrfs subvolume show`) says about one subvolume."""

    subvolid: int
    read_only: bool
    created: str | None  # ISO 8601 UTC


# struct btrfs_ioctl_get_subvol_info_args (linux/btrfs.h, kernel >= 4.18): 504 bytes; offsets checked with
# offsetof() against the 6.1 header. treeid u64 @0, flags u64 @288, otime.sec u64 @392. The flags are the
# root item's, so read-only is BTRFS_ROOT_SUBVOL_RDONLY (btrfs_tree.h), not the ioctl's BTRFS_SUBVOL_RDONLY.
ROOT_SUBVOL_RDONLY = 1 << 0


@dataclass(frozen=True)
class Generation:
    """A complete generation: snapshots/<name>/@ is a real subvolume directory, listed by btrfs."""

    name: str
    subvolid: int | None  # None only in a prediction (the kernel assigns it)
    created: str | None  # ISO 8601 UTC
    read_only: bool = False

    def order(self) -> tuple[str, int]:
        """Creation order: otime has one-second resolution, and subvolume ids grow with creation."""
        return (self.created or "9999", self.subvolid if self.subvolid is not None else 1 << 62)


@dataclass(frozen=True)
class LinkDirectory:
    """links/<name>: slot targets by slot number; None where a slot is missing or not one of ours."""

    name: str
    targets: tuple[str | None, ...]
    foreign: bool = False  # holds entries that are not slot symlinks

    def complete(self, generations: t.Collection[str], slots: int | None = None) -> bool:
        if self.foreign or not self.targets or (slots is not None and len(self.targets) != slots):
            return False
        return all(target is not None and target in generations for target in self.targets)


@dataclass(frozen=True)
class Stray:
    """Something in the layout that is no generation: leftovers of an interrupted run, or foreign."""

    kind: str  # empty_directory, staging, temporary_link, foreign
    path: str  # relative to top
    detail: str = ""
    subvolid: int | None = None  # staging subvolumes


@dataclass(frozen=True)
class Layout:
    """Everything the planners need, read from the top level beforehand (there is no other state)."""

    top: str
    directories: frozenset[str]  # which of LAYOUT_DIRECTORIES exist as real directories
    commons: frozenset[str]  # commons/<x> that are subvolumes
    template: str | None  # content of top/fstab
    generations: tuple[Generation, ...]  # oldest first
    current_text: str | None  # readlink(top/current); None when there is no symlink
    link_directories: tuple[LinkDirectory, ...]
    strays: tuple[Stray, ...] = ()
    fstabs: t.Mapping[str, str | None] = field(default_factory=dict)  # etc/fstab of generations of interest
    booted: int | None = None  # subvolid mounted at the running system's root
    mounted: frozenset[int] = frozenset()  # subvolids mounted anywhere in this mount namespace
    blocked: frozenset[str] = frozenset()  # non-directories in the way of LAYOUT_DIRECTORIES or commons
    building: str | None = None  # the generation named by top/building: started, never finished

    def names(self) -> list[str]:
        return [generation.name for generation in self.generations]

    def generation(self, name: str | None) -> Generation | None:
        for generation in self.generations:
            if generation.name == name:
                return generation
        return None

    def current_links(self) -> LinkDirectory | None:
        name = parse_current_target(self.current_text) if self.current_text is not None else None
        for directory in self.link_directories:
            if directory.name == name:
                return directory
        return None

    def slots(self) -> tuple[str | None, ...]:
        """Targets of current's slots (empty when current does not resolve to a link directory)."""
        links = self.current_links()
        return links.targets if links else ()

    def current_name(self) -> str | None:
        """The generation in slot 0 when it exists."""
        slots = self.slots()
        if slots and slots[0] is not None and self.generation(slots[0]) is not None:
            return slots[0]
        return None

    def reachable(self) -> set[str]:
        """Generations reachable from current (any slot)."""
        return {name for name in self.slots() if name is not None}

    def booted_name(self) -> str | None:
        for generation in self.generations:
            if generation.subvolid is not None and generation.subvolid == self.booted:
                return generation.name
        return None

    def mounted_names(self) -> set[str]:
        return {generation.name for generation in self.generations
                if generation.subvolid is not None and generation.subvolid in self.mounted}


State = t.Literal["initialized", "present", "current", "absent", "pruned"]
SourceKind = t.Literal["generation", "snapshot", "copy", "empty"]
DEFAULT_COMMONS = ("@home", "@var@log", "@var@tmp", "@var@cache")
DEFAULT_SLOTS = 4
DEFAULT_KEEP = 4
DELETION_STEPS = ("delete_generation", "delete_staging")


@dataclass(frozen=True)
class Source:
    """Where a new generation's content comes from: a subvolume on this filesystem is snapshotted, a directory
    is copied, nothing gives an empty root."""

    kind: SourceKind
    path: str | None = None


@dataclass(frozen=True)
class Request:
    state: State
    name: str | None  # present: already resolved (given, or a new stamp)
    new_name: str  # a fresh stamp, used when the module names a first generation itself
    links_name: str  # a fresh stamp for a new link directory
    origin: str | None = None  # the `from` option
    source: Source | None = None
    slots: int = DEFAULT_SLOTS
    keep: int = DEFAULT_KEEP
    pinned: tuple[str, ...] = ()
    commons: tuple[str, ...] = DEFAULT_COMMONS
    fstab_template: str | None = None  # given content of top/fstab
    default_template: str | None = None  # written when top/fstab is missing and none is given
    root: str = "/"
    # fill_commons: common name -> directory whose content a newly created common starts with (only those
    # that exist as real directories below source; resolved by build_request, so the planner stays pure).
    fill_sources: t.Mapping[str, str] = field(default_factory=dict)
    tentative: bool = False
    unhealthy: tuple[str, ...] = ()  # pruned: failed their trial, not counted among the `keep` newest
    building: bool = False  # present: record the new generation as unfinished until a present without it
    # boot_files that name's generation lacks, each with why (resolved by build_request, so planners stay pure)
    boot_problems: tuple[str, ...] = ()
    # (parameter, why) when the source or origin generation of a new one has an etc/fstab that cannot be written
    # (etc a symlink, etc/fstab a directory); resolved by build_request, refused when a generation is created
    origin_problem: tuple[str, str] | None = None


@dataclass(frozen=True)
class Step:
    """One planned step; `action()` is what the module reports."""

    action: str
    target: str  # relative to the top level
    detail: str = ""
    names: tuple[str, ...] = ()  # generations the step works with (slot order for write_links)
    ids: tuple[int, ...] = ()  # subvolume ids that a deletion step removes
    source: Source | None = None

    def as_action(self) -> Action:
        return Action(self.action, self.target, self.detail)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()
