# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: the lstat snapshot model and pure path helpers."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError

ALLOWED = ("bin", "sbin", "lib", "lib32", "lib64", "libo32", "libx32")
# Debian's is_merged (usrmerge postinst): these may point anywhere below /usr/lib*.
ARCH_LIBS = ("lib32", "lib64", "libo32", "libx32")
PREFIX = ".usrmerge~"  # every temporary name this module creates starts with it
BACKUP_DIR = "var/lib/usrmerge-backup"
SKIP_FLAG = "etc/unsupported-skip-usrmerge-conversion"
CONFLICT_MODES = ("fail", "prefer_usr", "prefer_root")
SKIP_FLAG_MODES = ("remove", "keep", "honour")
KINDS = ("move", "move_symlink", "make_directory", "merge_directory", "duplicate", "equivalent_symlink",
         "points_back", "broken_symlink", "conflict")
BLOCK = 4096


class UsrMergeError(ImmutableRootError):
    """The merge cannot be planned or carried out; raised before the first change when it can be."""


@dataclass(frozen=True)
class Node:
    """One lstat result. `resolved` is, for a symlink, the manifest value of what it finally resolves to."""

    kind: str  # dir, file, link, fifo, char, block, socket
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    dev: int = 0
    ino: int = 0
    size: int = 0
    rdev: int = 0
    target: str = ""  # symlink text
    digest: str = ""  # sha256 of a regular file
    xattrs: str = ""  # digest of the extended attributes, "" when there are none
    resolved: str = ""  # links: value of the final object, or "missing …" / "loop …"
    resolved_path: str = ""  # links: the physical path they resolve to ("" when broken)
    children: t.Mapping[str, Node] | None = None  # directories that were walked
    allocated: int = -1  # bytes in allocated blocks (st_blocks * 512), less than size for a sparse file; -1 unknown


@dataclass(frozen=True)
class Request:
    root: str
    directories: tuple[str, ...] | None  # None: every allowed name that is a real directory
    merge_sbin: bool = False
    conflicts: str = "fail"
    skip_flag: str = "remove"


@dataclass(frozen=True)
class Observed:
    """What the planner needs, read from the root beforehand (see _usrmerge.observe.observe)."""

    tops: t.Mapping[str, Node | None]  # lstat of "usr", each allowed name, "usr/<name>", "usr/sbin"
    links: t.Mapping[str, str]  # top-level symlink -> physical directory it resolves to ("" if none)
    trees: t.Mapping[str, Node] = field(default_factory=dict)  # source directories, walked
    usr_nodes: t.Mapping[str, Node] = field(default_factory=dict)  # destinations that exist
    leftovers: t.Mapping[str, Node] = field(default_factory=dict)  # our temporary names
    skip_flag: bool = False
    skip_flag_problem: str = ""  # why the skip flag cannot be looked for or removed ("<root>/etc is a symlink …")
    usr_free: int = -1  # bytes available to root in the filesystem holding usr, -1 unknown
    usr_free_inodes: int = -1
    backup_dev: int = 0  # device the backup directory is (or would be) on
    backup_problem: str = ""  # why backups cannot be written safely, "" when they can
    # mountpoints (relative to root) on or inside a directory the run would move or remove: rename(2) and
    # rmdir(2) fail with EBUSY there, half-way through the run
    mounts_inside: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """A directory to merge: path ("bin", "usr/sbin"), its destination, and the symlink text replacing it."""

    path: str
    dst: str
    link_text: str


@dataclass(frozen=True)
class Layout:
    sources: tuple[Source, ...]
    new_links: tuple[tuple[str, str], ...]  # (absent path, symlink text) to create
    mapping: t.Mapping[str, str]  # top-level path -> physical directory it becomes or is
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EntryOp:
    """What happens to one entry. The executor follows the flags; `kind` is the classification."""

    kind: str
    src: str
    dst: str
    node: Node  # the source entry
    create: str = ""  # how dst gets made: link, copy, symlink, mkdir, special ("" nothing)
    symlink_text: str = ""
    over: bool = False  # the new dst replaces an existing one (staged, then renamed over it)
    replace_src: bool = False  # src becomes a symlink to dst afterwards
    backup: str = ""  # path saved under BACKUP_DIR first
    chmod_dst: bool = False  # a directory takes src's mode and owner


@dataclass(frozen=True)
class Conflict:
    path: str
    usr_path: str
    problem: str
    resolution: str
    resolvable: bool

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "usr_path": self.usr_path, "problem": self.problem, "resolution": self.resolution}


@dataclass(frozen=True)
class Cleanup:
    path: str
    how: str  # unlink, rmtree
    why: str


@dataclass(frozen=True)
class Plan:
    layout: Layout
    ops: tuple[EntryOp, ...]
    conflicts: tuple[Conflict, ...]
    overrides: t.Mapping[str, str]  # path -> manifest value expected afterwards, where it changes
    cleanup: tuple[Cleanup, ...]
    remove_skip_flag: bool
    needed_bytes: int
    needed_inodes: int
    counts: t.Mapping[str, int]
    actions: tuple[Action, ...]

    @property
    def blocking(self) -> tuple[Conflict, ...]:
        return tuple(conflict for conflict in self.conflicts if conflict.resolution == "fail")

    @property
    def empty(self) -> bool:
        return not (self.layout.sources or self.layout.new_links or self.cleanup or self.remove_skip_flag)


def show(path: str) -> str:
    return "/" + path


def describe(kind: str, mode: int, uid: int, gid: int, digest: str = "", xattrs: str = "", rdev: int = 0) -> str:
    """The manifest value of an object: what a reader of the path gets."""
    owner = "mode=%04o owner=%d:%d" % (mode, uid, gid)
    if kind == "file":
        return "file sha256=%s %s%s" % (digest, owner, " xattrs=%s" % xattrs if xattrs else "")
    if kind in ("char", "block"):
        return "%s rdev=%d %s" % (kind, rdev, owner)
    return "%s %s" % (kind, owner)


def value(node: Node) -> str:
    if node.kind == "link":
        return node.resolved
    return describe(node.kind, node.mode, node.uid, node.gid, node.digest, node.xattrs, node.rdev)


def is_broken(node: Node) -> bool:
    return node.kind == "link" and node.resolved.startswith(("missing ", "loop "))


def canonical(path: str, mapping: t.Mapping[str, str]) -> str:
    """Where path lives once the merge is complete: bin/x -> usr/bin/x (and usr/sbin/x -> usr/bin/x)."""
    parts = [part for part in path.split("/") if part]
    for _hop in range(4):
        for length in (2, 1):
            head = "/".join(parts[:length])
            if len(parts) >= length and head in mapping:
                parts = mapping[head].split("/") + parts[length:]
                break
        else:
            break
    return "/".join(parts)


def meaning(link_path: str, text: str, mapping: t.Mapping[str, str]) -> str:
    """Canonical path a symlink at link_path with this text points to (lexically; '..' stops at the root)."""
    parts = [] if text.startswith("/") else link_path.split("/")[:-1]
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            parts = parts[:-1]
        else:
            parts = parts + [part]
    return canonical("/".join(parts), mapping)


def relative(target: str, start: str) -> str:
    """posixpath.relpath for root-relative paths, without the process's working directory."""
    to, base = [p for p in target.split("/") if p], [p for p in start.split("/") if p]
    common = 0
    while common < min(len(to), len(base)) and to[common] == base[common]:
        common += 1
    return "/".join([".."] * (len(base) - common) + to[common:]) or "."


def parent(path: str) -> str:
    return path.rpartition("/")[0]


def relocated_text(src_path: str, dst_path: str, text: str, mapping: t.Mapping[str, str]) -> str:
    """Symlink text for a copy of src_path's link placed at dst_path that points to the same object."""
    if text.startswith("/"):
        return text
    wanted = meaning(src_path, text, mapping)
    if meaning(dst_path, text, mapping) == wanted:
        return text
    return relative(wanted, parent(dst_path))
