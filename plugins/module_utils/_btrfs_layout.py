# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: the on-disk layout (seed 001), its typed snapshot, and pure parsers of btrfs(8) output.

Layout on the btrfs top level (subvolid 5):

    snapshots/<NAME>/@        one root subvolume per generation
    links/<STAMP>/0..N-1      relative symlinks ../../snapshots/<NAME>, 0 = newest
    current -> ./links/<STAMP>
    next/                     staging of the new `current` link
    commons/@...              shared writable subvolumes (@var@log is mounted on /var/log)
    fstab                     template; CURRENT_SNAPSHOTS_PATH becomes /snapshots/<NAME>
"""

from __future__ import annotations

import re
import struct
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.immutable.root.plugins.module_utils._errors import ImmutableRootError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._mountinfo import MountEntry, mount_containing, stack_at

SNAPSHOTS = "snapshots"
LINKS = "links"
NEXT = "next"
COMMONS = "commons"
CURRENT = "current"
FSTAB = "fstab"
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
_SLOT_TARGET = re.compile(r"^\.\./\.\./%s/([^/]+)/?$" % SNAPSHOTS)
_CURRENT_TARGET = re.compile(r"^(?:\./)?%s/([^/]+)/?$" % LINKS)
_SUBVOLUME_LINE = re.compile(
    r"^ID (?P<id>\d+) gen (?P<gen>\d+)(?: cgen (?P<cgen>\d+))? top level (?P<top>\d+)"
    r"(?: otime (?P<otime>\S+ \S+))? path (?P<path>.*)$")
_CREATION_TIME = re.compile(r"^\s*Creation time:\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.MULTILINE)
_SUBVOLUME_ID = re.compile(r"^\s*Subvolume ID:\s+(\d+)\s*$", re.MULTILINE)
_FLAGS = re.compile(r"^\s*Flags:\s+(.*)$", re.MULTILINE)
_FS_UUID = re.compile(r"\buuid: ([0-9a-fA-F-]{36})\b")


class GenerationError(ImmutableRootError):
    """The layout is not in a state the module can safely act on, or a btrfs step failed."""


def validate_name(param: str, value: object) -> str:
    """A generation or link-directory name: one path component the seed's tools and rEFInd can handle."""
    if not isinstance(value, str) or not value:
        raise ParameterError(param, "must be a non-empty name, got %r" % (value,))
    if "/" in value or ".." in value:
        raise ParameterError(param, "must be a single name without '/' or '..', got %r" % value)
    if len(value) > NAME_MAX or not NAME_PATTERN.match(value):
        raise ParameterError(param, "must match [A-Za-z0-9][A-Za-z0-9._-]* (at most %d characters), got %r"
                             % (NAME_MAX, value))
    return value


def validate_common(param: str, value: object) -> str:
    """A commons subvolume name such as @var@log ('@' stands for '/' in the mount point)."""
    if not isinstance(value, str) or not COMMON_PATTERN.match(value) or ".." in value or len(value) > NAME_MAX:
        raise ParameterError(param, "each entry must look like @home or @var@log ([@A-Za-z0-9._-], starting "
                             "with '@', no '..'), got %r" % (value,))
    if common_mountpoint(value) == "/":
        raise ParameterError(param, "%r would be mounted on / ; name a directory such as @home" % value)
    return value


def new_stamp(utc_time: str, letters: str) -> str:
    """The seed's stamp: UTC %Y%m%d%H%M%S followed by 8 random letters (both given, so this stays pure)."""
    stamp = utc_time + letters
    if not re.match(r"^\d{14}[A-Za-z]{8}$", stamp):
        raise ValueError("a stamp is 14 digits and 8 letters, got %r" % stamp)
    return stamp


def slot_target(name: str) -> str:
    return "../../%s/%s" % (SNAPSHOTS, name)


def parse_slot_target(text: str) -> str | None:
    """Generation name of a links/<STAMP>/N symlink text, None when it is not ours."""
    match = _SLOT_TARGET.match(text)
    if match and NAME_PATTERN.match(match.group(1)):
        return match.group(1)
    return None


def current_target(links: str) -> str:
    return "./%s/%s" % (LINKS, links)


def parse_current_target(text: str) -> str | None:
    """Link-directory name of the `current` symlink text (./links/X or links/X), None when it is not ours.

    Absolute targets are refused: the kernel resolves them from the top level, but userspace reading the
    top level mounted elsewhere would not.
    """
    match = _CURRENT_TARGET.match(text)
    if match and NAME_PATTERN.match(match.group(1)):
        return match.group(1)
    return None


def generation_path(name: str) -> str:
    """Path of a generation's root inside the filesystem, as subvol= and mountinfo write it."""
    return "/%s/%s/%s" % (SNAPSHOTS, name, ROOT_SUBVOLUME)


def render_fstab(template: str, name: str) -> str:
    """The seed's `sed s#CURRENT_SNAPSHOTS_PATH#/snapshots/<NAME>#g`."""
    return template.replace(PLACEHOLDER, "/%s/%s" % (SNAPSHOTS, name))


def common_mountpoint(common: str) -> str:
    """@var@lib@flatpak is mounted on /var/lib/flatpak (the seed's naming)."""
    return "/" + "/".join(part for part in common.split("@") if part)


def default_template(fs_uuid: str, commons: t.Sequence[str]) -> str:
    """An fstab template for the root generation and the commons of the filesystem with fs_uuid."""
    # The comment must not name the placeholder itself: it would be replaced in every generation's copy.
    lines = ["# fstab template of immutable.root.btrfs_generation; each generation gets a copy naming its own root.",
             "UUID=%s / btrfs subvol=%s/%s,ro,noatime 0 0" % (fs_uuid, PLACEHOLDER, ROOT_SUBVOLUME)]
    for common in commons:
        lines.append("UUID=%s %s btrfs subvol=/%s/%s,rw,noatime 0 0"
                     % (fs_uuid, common_mountpoint(common), COMMONS, common))
    return "\n".join(lines) + "\n"


def utc_iso(btrfs_time: str) -> str:
    """'2026-11-23 19:08:15' (btrfs-progs output under TZ=UTC) -> '2026-11-23T19:08:15Z'."""
    return btrfs_time.replace(" ", "T") + "Z"


@dataclass(frozen=True)
class SubvolumeLine:
    """One line of `btrfs subvolume list` (path is relative to the top level)."""

    subvolid: int
    generation: int
    top_level: int
    path: str
    otime: str | None = None  # only with -s, in the btrfs process's local time


def parse_subvolume_list(text: str) -> tuple[SubvolumeLine, ...]:
    """Parse `btrfs subvolume list [-s|-r] PATH`; lines that do not match are an error, not skipped."""
    lines = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _SUBVOLUME_LINE.match(raw)
        if not match:
            raise GenerationError("unexpected line in btrfs subvolume list output: %r" % raw)
        lines.append(SubvolumeLine(int(match.group("id")), int(match.group("gen")), int(match.group("top")),
                                   match.group("path"), match.group("otime")))
    return tuple(lines)


@dataclass(frozen=True)
class SubvolumeInfo:
    """What BTRFS_IOC_GET_SUBVOL_INFO (or `btrfs subvolume show`) says about one subvolume."""

    subvolid: int
    read_only: bool
    created: str | None  # ISO 8601 UTC


# struct btrfs_ioctl_get_subvol_info_args (linux/btrfs.h, kernel >= 4.18): 504 bytes; offsets checked with
# offsetof() against the 6.1 header. treeid u64 @0, flags u64 @288, otime.sec u64 @392. The flags are the
# root item's, so read-only is BTRFS_ROOT_SUBVOL_RDONLY (btrfs_tree.h), not the ioctl's BTRFS_SUBVOL_RDONLY.
SUBVOL_INFO_SIZE = 504
ROOT_SUBVOL_RDONLY = 1 << 0


def parse_subvolume_info(buffer: bytes) -> SubvolumeInfo:
    if len(buffer) != SUBVOL_INFO_SIZE:
        raise GenerationError("subvolume info is %d bytes, expected %d" % (len(buffer), SUBVOL_INFO_SIZE))
    treeid, = struct.unpack_from("=Q", buffer, 0)
    flags, = struct.unpack_from("=Q", buffer, 288)
    otime, = struct.unpack_from("=Q", buffer, 392)
    return SubvolumeInfo(treeid, bool(flags & ROOT_SUBVOL_RDONLY),
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(otime)))


def parse_subvolume_show(text: str) -> SubvolumeInfo | None:
    """The same from `btrfs subvolume show PATH` (run with TZ=UTC): the fallback where the ioctl is missing."""
    subvolid = _SUBVOLUME_ID.search(text)
    if not subvolid:
        return None
    created = _CREATION_TIME.search(text)
    flags = _FLAGS.search(text)
    return SubvolumeInfo(int(subvolid.group(1)), bool(flags and "readonly" in flags.group(1)),
                         utc_iso(created.group(1)) if created else None)


def parse_filesystem_uuid(text: str) -> str:
    """The filesystem UUID from `btrfs filesystem show PATH`."""
    match = _FS_UUID.search(text)
    if not match:
        raise GenerationError("no filesystem uuid in btrfs filesystem show output: %r" % text[:200])
    return match.group(1).lower()


def generation_name_of(path: str) -> str | None:
    """NAME when a subvolume list path is snapshots/NAME/@."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == SNAPSHOTS and parts[2] == ROOT_SUBVOLUME and NAME_PATTERN.match(parts[1]):
        return parts[1]
    return None


def mounted_subvolumes(entries: t.Sequence[MountEntry], top: str, root: str) -> tuple[int | None, frozenset[int]]:
    """(subvolid mounted on root, subvolids mounted anywhere) of the btrfs filesystem holding top.

    Every mount of one btrfs filesystem shows the same major:minor in mountinfo (the per-subvolume st_dev of
    stat(2) differs), so that is what ties a mount to top's filesystem.
    """
    top_mount = mount_containing(entries, top)
    if top_mount is None:
        return None, frozenset()
    same = [entry for entry in entries if entry.fstype == "btrfs" and entry.device == top_mount.device]
    mounted = frozenset(subvolid for subvolid in (subvolid_of(entry) for entry in same) if subvolid is not None)
    stack = stack_at(entries, root)
    booted = None
    if stack and stack[-1].fstype == "btrfs" and stack[-1].device == top_mount.device:
        booted = subvolid_of(stack[-1])
    return booted, mounted


def subvolid_of(mount: MountEntry) -> int | None:
    """The subvolid= superblock option the kernel shows for every btrfs mount."""
    for option in mount.super_options:
        if option.startswith("subvolid="):
            try:
                return int(option.split("=", 1)[1])
            except ValueError:
                return None
    return None


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


def sort_generations(generations: t.Iterable[Generation]) -> tuple[Generation, ...]:
    return tuple(sorted(generations, key=Generation.order))


def history_slots(name: str, previous: t.Sequence[str | None], existing: t.Collection[str], slots: int
                  ) -> tuple[str, ...]:
    """Slot 0 is name, then the previous history without duplicates or deleted generations.

    The seed shifts slots (links/<new>/1..3 = links/<old>/0..2); dropping duplicates keeps a rollback from
    filling two slots with one generation. Missing slots repeat the oldest, so every boot entry resolves:
    a first generation fills all slots with itself.
    """
    history = [name]
    for entry in previous:
        if entry is not None and entry in existing and entry not in history:
            history.append(entry)
    history = history[:slots]
    return tuple(history + [history[-1]] * (slots - len(history)))


def generations_state(layout: Layout, pinned: t.Collection[str]) -> list[dict[str, t.Any]]:
    """The `generations` result: oldest first, with the slots of current each one fills."""
    slots = layout.slots()
    booted = layout.booted_name()
    mounted = layout.mounted_names()
    return [{
        "name": generation.name,
        "path": generation_path(generation.name),
        "subvolid": generation.subvolid,
        "created": generation.created,
        "read_only": generation.read_only,
        "slots": [number for number, target in enumerate(slots) if target == generation.name],
        "booted": generation.name == booted,
        "mounted": generation.name in mounted,
        "pinned": generation.name in pinned,
    } for generation in layout.generations]


def summary_state(layout: Layout) -> dict[str, t.Any]:
    """Generation names and current's slots: what diff mode compares."""
    return {"generations": layout.names(), "slots": list(layout.slots()),
            "current": layout.current_name(), "links": (layout.current_links() or LinkDirectory("", ())).name or None}
