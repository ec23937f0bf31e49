# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: pure parsers of btrfs(8) output, symlink texts and mountinfo entries."""

from __future__ import annotations

import re
import struct
import time
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    GenerationError, NAME_PATTERN, ROOT_SUBVOLUME, ROOT_SUBVOL_RDONLY, SNAPSHOTS, SubvolumeInfo,
    SubvolumeLine,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, mount_containing, stack_at,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.btrfs_ioctl import SUBVOL_INFO_SIZE

_SUBVOLUME_LINE = re.compile(
    r"^ID (?P<id>\d+) gen (?P<gen>\d+)(?: cgen (?P<cgen>\d+))? top level (?P<top>\d+)"
    r"(?: otime (?P<otime>\S+ \S+))? path (?P<path>.*)$")
_CREATION_TIME = re.compile(r"^\s*Creation time:\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.MULTILINE)
_SUBVOLUME_ID = re.compile(r"^\s*Subvolume ID:\s+(\d+)\s*$", re.MULTILINE)
_FLAGS = re.compile(r"^\s*Flags:\s+(.*)$", re.MULTILINE)
_FS_UUID = re.compile(r"\buuid: ([0-9a-fA-F-]{36})\b")


def utc_iso(btrfs_time: str) -> str:
    """'2026-11-23 19:08:15' (btrfs-progs output under TZ=UTC) -> '2026-11-23T19:08:15Z'."""
    return btrfs_time.replace(" ", "T") + "Z"


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
