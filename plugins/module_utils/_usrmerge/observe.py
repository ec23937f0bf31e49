# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: reading the root into an Observed snapshot through O_NOFOLLOW descriptors."""

from __future__ import annotations

import collections
import errno
import os
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import read_mountinfo

from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import (
    Hasher, O_DIR, kind_of, measure, same_object,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    ALLOWED, BACKUP_DIR, Layout, Node, Observed, PREFIX, Request, SKIP_FLAG, UsrMergeError, show,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.plan import plan_layout

MAX_OPEN_DIRECTORIES = 64


def open_root(root: str) -> int:
    return os.open(root, O_DIR)


def open_relative(root_fd: int, path: str) -> int:
    """A descriptor of the directory at path below root_fd; fails (ELOOP, ENOTDIR) rather than follow a link."""
    fd = os.dup(root_fd)
    walked = []
    for name in (part for part in path.split("/") if part):
        walked.append(name)
        try:
            child = os.open(name, O_DIR, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsrMergeError("%s is not a directory any more (a symlink or file took its place during the "
                                    "run); not following it" % show("/".join(walked)))
            raise
        finally:
            os.close(fd)
        fd = child
    return fd


class Directories:
    """Descriptors of directories below the root by relative path, the least recently used closed first."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._open: "collections.OrderedDict[str, int]" = collections.OrderedDict()

    def get(self, path: str) -> int:
        if not path:
            return self.root_fd
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        fd = open_relative(self.root_fd, path)
        self._open[path] = fd
        while len(self._open) > MAX_OPEN_DIRECTORIES:
            os.close(self._open.popitem(last=False)[1])
        return fd

    def forget(self, path: str) -> None:
        """Close path and everything below it (after it was renamed or removed)."""
        for known in [known for known in self._open if known == path or known.startswith(path + "/")]:
            os.close(self._open.pop(known))

    def close(self) -> None:
        for fd in list(self._open.values()):
            os.close(fd)
        self._open.clear()


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class Snapshot:
    """Builds Nodes: metadata, file digests, link targets and what each link resolves to."""

    def __init__(self, root_fd: int, hasher: Hasher, mapping: t.Mapping[str, str]) -> None:
        self.root_fd = root_fd
        self.hasher = hasher
        self.mapping = mapping
        self.leftovers: dict[str, Node] = {}

    def node(self, dir_fd: int, name: str, path: str, st: os.stat_result) -> Node:
        kind = kind_of(st.st_mode)
        target = resolved = physical = digest = xattrs = ""
        if kind == "link":
            target = os.readlink(name, dir_fd=dir_fd)
            resolved, physical = measure(self.root_fd, path, self.hasher, self.mapping)
        elif kind == "file":
            digest, xattrs = self.hasher.file(dir_fd, name, st)
        return Node(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_dev, st.st_ino, st.st_size,
                    st.st_rdev, target, digest, xattrs, resolved, physical, allocated=st.st_blocks * 512)

    def tree(self, dir_fd: int, path: str, st: os.stat_result) -> Node:
        """A directory and everything below it; dir_fd is open on it."""
        opened = os.fstat(dir_fd)
        if not same_object(opened, st):
            raise UsrMergeError("%s changed while it was being read" % show(path))
        children = {}
        with os.scandir(dir_fd) as entries:
            listed = sorted((entry.name, entry.stat(follow_symlinks=False)) for entry in entries)
        for name, child_st in listed:
            child_path = path + "/" + name
            if stat.S_ISDIR(child_st.st_mode):
                fd = os.open(name, O_DIR, dir_fd=dir_fd)
                try:
                    node = self.tree(fd, child_path, child_st)
                finally:
                    os.close(fd)
            else:
                node = self.node(dir_fd, name, child_path, child_st)
            if name.startswith(PREFIX):
                self.leftovers[child_path] = node
            else:
                children[name] = node
        return Node("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_dev, st.st_ino, children=children)

    def counterparts(self, src_fd: int, src: Node, dst_fd: int, dst: str, found: dict[str, Node]) -> None:
        """lstat, for every entry of src, the same name (and its staging name) in the directory dst."""
        for name, child in sorted((src.children or {}).items()):
            for candidate in (name, PREFIX + name):
                st = lstat(dst_fd, candidate)
                if st is None:
                    continue
                path = dst + "/" + candidate
                is_dir = stat.S_ISDIR(st.st_mode)
                if candidate != name:
                    self.leftovers[path] = Node(kind_of(st.st_mode))
                    continue
                found[path] = Node("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_dev,
                                   st.st_ino) if is_dir else self.node(dst_fd, name, path, st)
                if is_dir and child.kind == "dir":
                    sub_src = os.open(name, O_DIR, dir_fd=src_fd)
                    try:
                        sub_dst = os.open(name, O_DIR, dir_fd=dst_fd)
                        try:
                            self.counterparts(sub_src, child, sub_dst, path, found)
                        finally:
                            os.close(sub_dst)
                    finally:
                        os.close(sub_src)


def top_nodes(root_fd: int, hasher: Hasher) -> tuple[dict[str, Node | None], dict[str, str]]:
    """lstat of usr, of every allowed name and of its /usr counterpart; the directory each symlink reaches."""
    tops: dict[str, Node | None] = {}
    links: dict[str, str] = {}
    usr_st = lstat(root_fd, "usr")
    usr_fd = os.open("usr", O_DIR, dir_fd=root_fd) if usr_st is not None and stat.S_ISDIR(usr_st.st_mode) else None
    try:
        for path in ("usr",) + ALLOWED + tuple("usr/" + name for name in ALLOWED):
            dir_fd, name = (usr_fd, path[4:]) if path.startswith("usr/") else (root_fd, path)
            st = usr_st if path == "usr" else (lstat(dir_fd, name) if dir_fd is not None else None)
            if st is None:
                tops[path] = None
                continue
            target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else ""
            tops[path] = Node(kind_of(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_dev,
                              st.st_ino, target=target)
            if target:
                found, physical = measure(root_fd, path, hasher, {})
                links[path] = physical if found.startswith("dir ") else ""
    finally:
        if usr_fd is not None:
            os.close(usr_fd)
    return tops, links


def backup_location(root_fd: int) -> tuple[int, str]:
    """(device, problem) of the backup directory, or of its nearest existing parent."""
    fd = os.dup(root_fd)
    try:
        walked = []
        for name in BACKUP_DIR.split("/"):
            st = lstat(fd, name)
            walked.append(name)
            if st is None:
                break
            if not stat.S_ISDIR(st.st_mode):
                return 0, "%s is a %s, not a directory" % (show("/".join(walked)), kind_of(st.st_mode))
            child = os.open(name, O_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.fstat(fd).st_dev, ""
    finally:
        os.close(fd)


def skip_flag_state(root_fd: int, root: str) -> tuple[bool, str]:
    """(present, problem): whether the skip flag exists, and why the module cannot look for it or remove it."""
    etc, _slash, name = SKIP_FLAG.rpartition("/")
    st = lstat(root_fd, etc)
    if st is not None and stat.S_ISLNK(st.st_mode):
        return False, "%s/%s is a symlink to %s; refusing to follow it to look for %s" % (
            root.rstrip("/"), etc, os.readlink(etc, dir_fd=root_fd), show(SKIP_FLAG))
    if st is None or not stat.S_ISDIR(st.st_mode):
        return False, ""
    fd = open_relative(root_fd, etc)
    try:
        flag = lstat(fd, name)
    finally:
        os.close(fd)
    if flag is not None and stat.S_ISDIR(flag.st_mode):
        return True, "%s/%s is a directory, not debootstrap's flag file; refusing to remove it" % (
            root.rstrip("/"), SKIP_FLAG)
    return flag is not None, ""


def mounts_inside(root: str, relatives: t.Sequence[str]) -> tuple[str, ...]:
    """Mountpoints of this process's table on or below root/<relative> for any of relatives, as root-relative paths."""
    if not relatives:
        return ()
    base = os.path.realpath(root).rstrip("/")
    tops = [base + "/" + relative for relative in relatives]
    found = set()
    for entry in read_mountinfo():
        for top in tops:
            if entry.mountpoint == top or entry.mountpoint.startswith(top + "/"):
                found.add(entry.mountpoint[len(base) + 1:])
    return tuple(sorted(found))


def observe(request: Request, hasher: Hasher | None = None) -> tuple[Observed, Layout]:
    """Read everything the planner needs; also returns the layout the walk was guided by."""
    hasher = hasher or Hasher()
    try:
        root_fd = open_root(request.root)
    except OSError as exc:
        raise UsrMergeError("root: cannot open %s: %s" % (request.root, exc.strerror))
    try:
        tops, links = top_nodes(root_fd, hasher)
        layout = plan_layout(request, tops, links)
        snapshot = Snapshot(root_fd, hasher, layout.mapping)
        trees: dict[str, Node] = {}
        usr_nodes: dict[str, Node] = {}
        for source in layout.sources:
            src_fd = open_relative(root_fd, source.path)
            try:
                trees[source.path] = tree = snapshot.tree(src_fd, source.path, os.fstat(src_fd))
                dst_parent_fd = open_relative(root_fd, source.dst.rpartition("/")[0])
                try:
                    dst_st = lstat(dst_parent_fd, source.dst.rpartition("/")[2])
                finally:
                    os.close(dst_parent_fd)
                if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
                    dst_fd = open_relative(root_fd, source.dst)
                    try:
                        usr_nodes[source.dst] = Node("dir", stat.S_IMODE(dst_st.st_mode), dst_st.st_uid,
                                                     dst_st.st_gid, dst_st.st_dev, dst_st.st_ino)
                        snapshot.counterparts(src_fd, tree, dst_fd, source.dst, usr_nodes)
                    finally:
                        os.close(dst_fd)
            finally:
                os.close(src_fd)
        for parent in ("", "usr"):
            parent_fd = open_relative(root_fd, parent)
            try:
                with os.scandir(parent_fd) as entries:
                    names = sorted(entry.name for entry in entries if entry.name.startswith(PREFIX))
                for name in names:
                    path = (parent + "/" if parent else "") + name
                    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        fd = os.open(name, O_DIR, dir_fd=parent_fd)
                        try:
                            snapshot.leftovers[path] = snapshot.tree(fd, path, st)
                        finally:
                            os.close(fd)
                    else:
                        snapshot.leftovers[path] = Node(kind_of(st.st_mode))
            finally:
                os.close(parent_fd)
        usr_fd = open_relative(root_fd, "usr")
        try:
            space = os.fstatvfs(usr_fd)
        finally:
            os.close(usr_fd)
        backup_dev, backup_problem = backup_location(root_fd)
        skip_flag, skip_flag_problem = skip_flag_state(root_fd, request.root)
        moved = [source.path for source in layout.sources] + list(snapshot.leftovers)
        observed = Observed(
            mounts_inside=mounts_inside(request.root, moved),
            tops=tops, links=links, trees=trees, usr_nodes=usr_nodes, leftovers=snapshot.leftovers,
            skip_flag=skip_flag, skip_flag_problem=skip_flag_problem,
            usr_free=space.f_bavail * space.f_frsize,
            # btrfs reports no inode limit (f_files == 0)
            usr_free_inodes=space.f_favail if space.f_files else -1,
            backup_dev=backup_dev, backup_problem=backup_problem,
        )
    finally:
        os.close(root_fd)
    return observed, layout
