# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: content manifests, taken before and after, that prove every path still means the same."""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    Node, Plan, UsrMergeError, canonical, describe, show, value,
)

MAX_SYMLINK_HOPS = 40  # the kernel's MAXSYMLINKS
CHUNK = 1 << 20
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# SELinux labels legitimately differ between /bin and /usr/bin; they are copied but not compared.
UNCOMPARED_XATTRS = ("security.selinux",)


def kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "link"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block")):
        if test(mode):
            return kind
    return "socket"


def same_object(first: os.stat_result, second: os.stat_result) -> bool:
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


class Hasher:
    """sha256 and extended attributes of regular files, read once per unchanged inode.

    An inode seen again with the same size and mtime (a hard link made by the merge) is not read again.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, int, int], tuple[str, str]] = {}

    def file(self, dir_fd: int, name: str, st: os.stat_result) -> tuple[str, str]:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._cache:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                opened = os.fstat(fd)
                if not same_object(opened, st) or not stat.S_ISREG(opened.st_mode):
                    raise UsrMergeError("%s changed while it was being read" % name)
                digest = hashlib.sha256()
                while True:
                    chunk = os.read(fd, CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                self._cache[key] = (digest.hexdigest(), xattr_digest(fd))
            finally:
                os.close(fd)
        return self._cache[key]

    def value(self, dir_fd: int, name: str, st: os.stat_result) -> str:
        kind = kind_of(st.st_mode)
        digest, xattrs = self.file(dir_fd, name, st) if kind == "file" else ("", "")
        return describe(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest, xattrs, st.st_rdev)


def xattr_digest(fd: int) -> str:
    try:
        names = sorted(name for name in os.listxattr(fd) if name not in UNCOMPARED_XATTRS)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):  # a filesystem without extended attributes
            return ""
        raise
    if not names:
        return ""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + os.getxattr(fd, name) + b"\0")
    return digest.hexdigest()[:16]


def measure(root_fd: int, path: str, hasher: Hasher, mapping: t.Mapping[str, str],
            follow: bool = True) -> tuple[str, str]:
    """(manifest value, physical path) of what path leads to, resolved as if root_fd were '/'.

    Every component is opened with O_NOFOLLOW and symlinks are expanded here, so absolute targets restart at
    the root and '..' stops there: nothing outside the root is ever read. The physical path is "" when the
    path does not resolve; the value then names the missing path in its merged form, so that a dangling
    link reads the same before and after the merge.
    """
    parts = collections.deque(part for part in path.split("/") if part)
    names: list[str] = []
    fds: list[int] = []
    hops = 0
    try:
        while parts:
            name = parts.popleft()
            if name == ".":
                continue
            if name == "..":
                if names:
                    names.pop()
                    os.close(fds.pop())
                continue
            current = fds[-1] if fds else root_fd
            try:
                st = os.stat(name, dir_fd=current, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return "missing " + show(canonical("/".join(names + [name] + list(parts)), mapping)), ""
            if stat.S_ISLNK(st.st_mode) and (parts or follow):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return "loop", ""
                text = os.readlink(name, dir_fd=current)
                if text.startswith("/"):
                    while fds:
                        os.close(fds.pop())
                    names = []
                parts.extendleft(reversed([part for part in text.split("/") if part]))
                continue
            if not parts:
                return hasher.value(current, name, st), "/".join(names + [name])
            if not stat.S_ISDIR(st.st_mode):
                return "missing " + show(canonical("/".join(names + [name] + list(parts)), mapping)), ""
            fds.append(os.open(name, O_DIR, dir_fd=current))
            names.append(name)
        st = os.fstat(fds[-1] if fds else root_fd)
        return describe("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), "/".join(names)
    finally:
        for fd in fds:
            os.close(fd)


def _walk(path: str, node: Node) -> t.Iterator[tuple[str, Node]]:
    yield path, node
    for name, child in sorted((node.children or {}).items()):
        yield from _walk(path + "/" + name, child)


def before(trees: t.Mapping[str, Node], usr_nodes: t.Mapping[str, Node]) -> dict[str, tuple[str, str]]:
    """path -> (value, physical path) of every original path: the source trees and the /usr entries they meet."""
    manifest = {}
    for top, tree in trees.items():
        for path, node in _walk(top, tree):
            manifest[path] = (value(node), node.resolved_path if node.kind == "link" else path)
    for path, node in usr_nodes.items():
        manifest[path] = (value(node), node.resolved_path if node.kind == "link" else path)
    return manifest


def expected(plan: Plan, manifest: t.Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """What each path must resolve to afterwards: unchanged, except where a conflict or a dangling
    link was resolved (then the kept entry's value, also for links that led to the replaced one)."""
    return {path: plan.overrides.get(path, plan.overrides.get(physical, found))
            for path, (found, physical) in manifest.items()}


def after(root_fd: int, paths: t.Iterable[str], hasher: Hasher, mapping: t.Mapping[str, str]) -> dict[str, str]:
    """measure() of every path; the directory holding a run of siblings is resolved only once."""
    found = {}
    current: tuple[str, int] | None = None  # (parent path, descriptor of what it resolves to)
    try:
        for path in paths:
            head, _slash, name = path.rpartition("/")
            if current is None or current[0] != head:
                if current is not None and current[1] >= 0:
                    os.close(current[1])
                current = (head, _open_physical(root_fd, head, hasher, mapping))
            st = None
            if current[1] >= 0:
                try:
                    st = os.stat(name, dir_fd=current[1], follow_symlinks=False)
                except FileNotFoundError:
                    st = None
            if st is None or stat.S_ISLNK(st.st_mode):
                found[path] = measure(root_fd, path, hasher, mapping)[0]
            else:
                found[path] = hasher.value(current[1], name, st)
    finally:
        if current is not None and current[1] >= 0:
            os.close(current[1])
    return found


def _open_physical(root_fd: int, path: str, hasher: Hasher, mapping: t.Mapping[str, str]) -> int:
    """A descriptor of the directory path resolves to inside the root, or -1."""
    found, physical = measure(root_fd, path, hasher, mapping)
    if not found.startswith("dir "):
        return -1
    fd = os.dup(root_fd)
    for name in (part for part in physical.split("/") if part):
        try:
            child = os.open(name, O_DIR, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def differences(wanted: t.Mapping[str, str], found: t.Mapping[str, str]) -> list[str]:
    """Human lines for every path whose value changed, sorted."""
    return ["%s: expected %s, found %s" % (show(path), wanted[path], found.get(path, "nothing"))
            for path in sorted(wanted) if found.get(path) != wanted[path]]
