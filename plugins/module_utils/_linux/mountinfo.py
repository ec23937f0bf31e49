# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parser for /proc/PID/mountinfo, queries over the parsed table, and the one reader of this process's table."""

from __future__ import annotations

import posixpath
import re
import typing as t
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError

# The kernel escapes space, tab, newline and backslash in paths as three-digit octal (show_path/mangle).
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class MountinfoError(ImmutableRootError):
    """A mountinfo line could not be parsed."""


def unescape(field: str) -> str:
    """Undo the kernel's octal escaping of a mountinfo path field (\\040 is a space)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def escape(path: str) -> str:
    """Escape a path the way the kernel and fstab(5) do."""
    return "".join("\\%03o" % ord(char) if char in " \t\n\\" else char for char in path)


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    device: str  # "major:minor" of the superblock
    root: str  # path inside the filesystem that is mounted here (a bind shows the bound subdirectory)
    mountpoint: str
    mount_options: tuple[str, ...]  # per-mount options, e.g. ro for a read-only bind
    optional_fields: tuple[str, ...]  # shared:N, master:N, propagate_from:N, unbindable
    fstype: str
    source: str
    super_options: tuple[str, ...]  # superblock options, shared by every mount of the filesystem

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_options

    @property
    def propagation(self) -> str:
        """shared, slave, shared+slave (both), unbindable or private."""
        kinds = [field.split(":", 1)[0] for field in self.optional_fields]
        if "unbindable" in kinds:
            return "unbindable"
        shared = "shared" in kinds
        slave = "master" in kinds
        if shared and slave:
            return "shared+slave"
        if shared:
            return "shared"
        if slave:
            return "slave"
        return "private"


def parse_line(line: str) -> MountEntry:
    """Parse one mountinfo line; raise MountinfoError when it is malformed."""
    fields = line.split(" ")
    try:
        separator = fields.index("-", 6)
        mount_id, parent_id = int(fields[0]), int(fields[1])
        fstype, source, super_options = fields[separator + 1:separator + 4]
        if len(fields) != separator + 4:
            raise ValueError("%d fields after the separator, expected 3" % (len(fields) - separator - 1))
    except ValueError as exc:
        raise MountinfoError("malformed mountinfo line %r: %s" % (line, exc))
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        device=fields[2],
        root=unescape(fields[3]),
        mountpoint=unescape(fields[4]),
        mount_options=tuple(fields[5].split(",")),
        optional_fields=tuple(fields[6:separator]),
        fstype=unescape(fstype),
        source=unescape(source),
        super_options=tuple(super_options.split(",")),
    )


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    """Parse a whole mountinfo file, keeping the kernel's order (parents before children)."""
    # Only "\n" ends a line: the kernel leaves \r, \x1c-\x1e, \x85 and U+2028 in paths unescaped, and
    # str.splitlines() would break a line at each of them.
    return tuple(parse_line(line) for line in text.split("\n") if line.strip(" "))


def stack_at(entries: t.Sequence[MountEntry], path: str) -> tuple[MountEntry, ...]:
    """Mounts whose mountpoint is exactly path, bottom first.

    A mount stacked on another at the same mountpoint has that one as its parent, so the stack is
    followed through parent ids rather than trusting mount id order (ids are reused).
    """
    here = [entry for entry in entries if entry.mountpoint == path]
    ids = {entry.mount_id for entry in here}
    bottoms = [entry for entry in here if entry.parent_id not in ids or entry.parent_id == entry.mount_id]
    if not bottoms:
        return ()
    # Shadowed duplicates from propagation can leave two chains; the one created last wins.
    layer = bottoms[-1]
    stack = [layer]
    children = {entry.parent_id: entry for entry in here if entry is not layer}
    while layer.mount_id in children:
        layer = children.pop(layer.mount_id)
        stack.append(layer)
    return tuple(stack)


def _is_under(path: str, mountpoint: str) -> bool:
    return mountpoint == "/" or path == mountpoint or path.startswith(mountpoint + "/")


def mount_containing(entries: t.Sequence[MountEntry], path: str) -> MountEntry | None:
    """The visible (top) mount that holds path: the longest mountpoint prefix, top of its stack."""
    candidates = [entry.mountpoint for entry in entries if _is_under(path, entry.mountpoint)]
    if not candidates:
        return None
    stack = stack_at(entries, max(candidates, key=len))
    return stack[-1] if stack else None


def root_for(parent: MountEntry, path: str) -> str:
    """The filesystem root a bind of path (inside parent) shows: parent root + path below parent."""
    relative = posixpath.relpath(path, parent.mountpoint)
    if relative == ".":
        return parent.root
    return posixpath.normpath(posixpath.join(parent.root, relative))


def by_id(entries: t.Sequence[MountEntry]) -> dict[int, MountEntry]:
    return {entry.mount_id: entry for entry in entries}


MOUNTINFO = "/proc/self/mountinfo"


def read_mountinfo(path: str = MOUNTINFO) -> tuple[MountEntry, ...]:
    """This process's mount table (or another process's, given its mountinfo path)."""
    # newline="": no translation of "\r" in paths into line ends.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return parse_mountinfo(handle.read())
