# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: carrying out a plan so that every old path resolves to the same content at every instant."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._linux.fs import exchange, rename_noreplace, syncfs
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import (
    CHUNK, Hasher, O_DIR, kind_of, same_object,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    BACKUP_DIR, EntryOp, Node, Observed, PREFIX, Plan, SKIP_FLAG, UsrMergeError, parent, relative, show,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.observe import Directories, lstat, open_root

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
# copy_file_range(2) refuses copies across filesystems before Linux 5.3 and between filesystem types since 5.19
# (EXDEV), and fails where a filesystem or a seccomp filter does not offer it: pread and pwrite copy then.
COPY_RANGE_REFUSED = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM)
SPECIAL_TYPES = {"fifo": stat.S_IFIFO, "char": stat.S_IFCHR, "block": stat.S_IFBLK, "socket": stat.S_IFSOCK}
BACKUP_MODE = 0o700  # saved copies may be setuid binaries


def remove_tree(parent_fd: int, name: str) -> None:
    """rm -r by descriptor: symlinks inside are unlinked, never followed."""
    try:
        fd = os.open(name, O_DIR, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    try:
        with os.scandir(fd) as entries:
            listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for child, is_dir in listed:
            if is_dir:
                remove_tree(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def copy_xattrs(src_fd: int, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        os.setxattr(dst_fd, name, os.getxattr(src_fd, name))


def data_extents(fd: int, size: int) -> t.Iterator[tuple[int, int]]:
    """(start, end) of each stretch of fd's first size bytes that holds data; holes are skipped, never read."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole from offset on
                return
            if exc.errno != errno.EINVAL:
                raise
            yield offset, size  # no SEEK_DATA here: all of it is data
            return
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def copy_range(src_fd: int, dst_fd: int, start: int, end: int) -> None:
    """Bytes start to end of src_fd to the same offsets of dst_fd."""
    offset = start
    try:
        while offset < end:
            done = os.copy_file_range(src_fd, dst_fd, end - offset, offset, offset)
            if done == 0:  # the source shrank; the manifest check reports it
                return
            offset += done
        return
    except OSError as exc:
        if exc.errno not in COPY_RANGE_REFUSED:
            raise
    while offset < end:
        chunk = os.pread(src_fd, min(CHUNK, end - offset), offset)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst_fd, view, offset)
            view = view[written:]
            offset += written


def copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    """A reflink where the filesystem can; else a copy of the data extents only, so a sparse file stays sparse."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)  # a reflink on btrfs and xfs: no data is copied
        return
    except OSError:
        pass
    for start, end in data_extents(src_fd, size):
        copy_range(src_fd, dst_fd, start, end)
    os.ftruncate(dst_fd, size)  # the holes after the last extent


def check_identity(st: os.stat_result | None, node: Node, path: str) -> os.stat_result:
    if st is None or (node.ino and (st.st_dev, st.st_ino) != (node.dev, node.ino)) or kind_of(st.st_mode) != node.kind:
        raise UsrMergeError("%s changed during the run (it is not the %s that was planned for); stopping" % (
            show(path), node.kind))
    return st


class Executor:
    """Carries out a Plan; `done` lists the completed actions."""

    def __init__(self, root: str, plan: Plan, observed: Observed) -> None:
        self.plan = plan
        self.observed = observed
        self.root_fd = open_root(root)
        self.dirs = Directories(self.root_fd)
        self.hasher = Hasher()
        self.done: list[Action] = []
        self.staged: list[tuple[str, bool]] = []  # (destination, replaces an existing entry)
        self.old: list[tuple[str, str]] = []  # (directory, its old self swapped out), removed by finish()
        self.devices: dict[int, str] = {}

    def close(self) -> None:
        self.dirs.close()
        os.close(self.root_fd)

    def _record(self, action: str, target: str = "") -> None:
        self.done.extend(item for item in self.plan.actions
                         if item.action == action and (not target or item.target == target))

    def _sync(self, *paths: str) -> None:
        for path in paths:
            fd = self.dirs.get(path)
            self.devices.setdefault(os.fstat(fd).st_dev, path)
        for path in self.devices.values():
            syncfs(self.dirs.get(path), path)

    def prepare(self) -> None:
        """Everything up to and including the symlink swaps; the old directories stay until finish()."""
        step_boundary("usrmerge.planned")
        self.probe_exchange()
        for item in self.plan.cleanup:
            parent_fd, name = self.dirs.get(parent(item.path)), item.path.rpartition("/")[2]
            self.dirs.forget(item.path)
            if item.how == "rmtree":
                remove_tree(parent_fd, name)
            elif lstat(parent_fd, name) is not None:
                os.unlink(name, dir_fd=parent_fd)
        if self.plan.cleanup:
            self._record("remove_leftover")
            step_boundary("usrmerge.cleanup")
        if self.plan.remove_skip_flag:
            etc_fd = self.dirs.get(parent(SKIP_FLAG))
            if lstat(etc_fd, SKIP_FLAG.rpartition("/")[2]) is not None:
                os.unlink(SKIP_FLAG.rpartition("/")[2], dir_fd=etc_fd)
            self._record("remove_skip_flag")
            step_boundary("usrmerge.skip_flag")
        self.backups()
        self.create()
        self.publish()
        self.replace_sources()
        self.exchange()

    def finish(self) -> None:
        """Remove the old directories, then one full commit: a swap is durable before the module says changed."""
        for owner, path in self.old:
            parent_fd = self.dirs.get(parent(path))
            remove_tree(parent_fd, path.rpartition("/")[2])
            step_boundary("usrmerge.removed old %s" % show(owner))
        self._sync("", "usr")

    def probe_exchange(self) -> None:
        """Fail before the first change where the filesystem cannot swap a directory for a symlink atomically."""
        for directory in sorted({parent(source.path) for source in self.plan.layout.sources}):
            fd = self.dirs.get(directory)
            first, second = PREFIX + "probe-1", PREFIX + "probe-2"
            try:
                for name in (first, second):
                    if lstat(fd, name) is not None:
                        os.unlink(name, dir_fd=fd)
                    os.symlink(name, name, dir_fd=fd)
            except OSError as exc:
                raise UsrMergeError("root: cannot write in %s: %s; nothing was changed" % (show(directory), exc.strerror))
            try:
                exchange(fd, first, fd, second)
            except OSError as exc:
                raise UsrMergeError("root: %s cannot swap a directory for a symlink atomically (renameat2 "
                                    "RENAME_EXCHANGE: %s); nothing was changed" % (show(directory), exc.strerror))
            finally:
                for name in (first, second):
                    os.unlink(name, dir_fd=fd)

    def backup_directory(self, path: str) -> int:
        """Descriptor of BACKUP_DIR/path, made as needed; no component may be a symlink."""
        fd = self.root_fd
        walked = ""
        for index, name in enumerate((BACKUP_DIR + "/" + path).strip("/").split("/")):
            walked = walked + "/" + name if walked else name
            if lstat(fd, name) is None:
                os.mkdir(name, BACKUP_MODE if index == 2 else 0o755, dir_fd=fd)
            fd = self.dirs.get(walked)
        return fd

    def backups(self) -> None:
        saved = [op for op in self.plan.ops if op.backup]
        for op in saved:
            node = op.node if op.backup == op.src else self.observed.usr_nodes[op.backup]
            self.save(op.backup, node)
        if saved:
            self._sync("", "usr", BACKUP_DIR)
            self._record("backup")
            step_boundary("usrmerge.backup")

    def save(self, path: str, node: Node) -> None:
        target_fd = self.backup_directory(parent(path))
        name = path.rpartition("/")[2]
        source_fd = self.dirs.get(parent(path))
        st = check_identity(lstat(source_fd, name), node, path)
        if lstat(target_fd, PREFIX + name) is not None:
            os.unlink(PREFIX + name, dir_fd=target_fd)
        existing = lstat(target_fd, name)
        if existing is not None:
            if self._same(source_fd, name, st, target_fd, existing):
                return
            raise UsrMergeError("%s already holds something else; move it away and run again" % show(
                BACKUP_DIR + "/" + path))
        self.fill(source_fd, name, node, target_fd, name, "link" if st.st_dev == os.fstat(target_fd).st_dev
                  else "copy", os.readlink(name, dir_fd=source_fd) if node.kind == "link" else "")

    def _same(self, first_fd: int, name: str, first: os.stat_result, second_fd: int,
              second: os.stat_result) -> bool:
        if same_object(first, second):
            return True
        if kind_of(first.st_mode) == "link" == kind_of(second.st_mode):
            return os.readlink(name, dir_fd=first_fd) == os.readlink(name, dir_fd=second_fd)
        return self.hasher.value(first_fd, name, first) == self.hasher.value(second_fd, name, second)

    def fill(self, src_fd: int, src_name: str, node: Node, dst_fd: int, dst_name: str, how: str,
             text: str = "") -> None:
        """Make dst_name in dst_fd a copy of src_name (or hard link, or symlink with text); atomic when visible."""
        if node.kind == "link":
            os.symlink(text, dst_name, dir_fd=dst_fd)
            os.chown(dst_name, node.uid, node.gid, dir_fd=dst_fd, follow_symlinks=False)
            return
        if how == "link":
            try:
                os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                check_identity(lstat(dst_fd, dst_name), node, dst_name)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # a bind mount between them: copy instead
                    raise
        staging = dst_name if dst_name.startswith(PREFIX) else PREFIX + dst_name
        if node.kind != "file":
            os.mknod(staging, node.mode | SPECIAL_TYPES[node.kind], node.rdev, dir_fd=dst_fd)
            os.chown(staging, node.uid, node.gid, dir_fd=dst_fd, follow_symlinks=False)
            os.chmod(staging, node.mode, dir_fd=dst_fd)
        else:
            self.copy_file(src_fd, src_name, node, dst_fd, staging)
        if staging != dst_name:
            rename_noreplace(dst_fd, staging, dst_name)

    def copy_file(self, src_fd: int, src_name: str, node: Node, dst_fd: int, dst_name: str) -> None:
        source = os.open(src_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
        try:
            st = check_identity(os.fstat(source), node, src_name)
            target = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=dst_fd)
            try:
                copy_data(source, target, st.st_size)
                # chown clears setuid bits and file capabilities: owner first, then mode, then attributes.
                os.fchown(target, st.st_uid, st.st_gid)
                os.fchmod(target, stat.S_IMODE(st.st_mode))
                copy_xattrs(source, target)
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(target)
        finally:
            os.close(source)

    def make_directory(self, op: EntryOp) -> None:
        dst_fd, name = self.dirs.get(parent(op.dst)), op.dst.rpartition("/")[2]
        staging = PREFIX + name
        os.mkdir(staging, 0o700, dir_fd=dst_fd)
        fd = os.open(staging, O_DIR, dir_fd=dst_fd)
        try:
            os.fchown(fd, op.node.uid, op.node.gid)
            os.fchmod(fd, op.node.mode)
            source = self.dirs.get(op.src)
            check_identity(os.fstat(source), op.node, op.src)
            copy_xattrs(source, fd)
        finally:
            os.close(fd)
        rename_noreplace(dst_fd, staging, name)

    def create(self) -> None:
        # Copies of one inode become hard links of one copy, as they were; an identical file already in /usr
        # (left by an interrupted run) counts as that copy.
        copies = {(op.node.dev, op.node.ino): op.dst for op in self.plan.ops if op.kind == "duplicate"}
        for op in self.plan.ops:
            if op.create == "mkdir":
                self.make_directory(op)
            elif op.create:
                src_fd, src_name = self.dirs.get(parent(op.src)), op.src.rpartition("/")[2]
                dst_fd, name = self.dirs.get(parent(op.dst)), op.dst.rpartition("/")[2]
                check_identity(lstat(src_fd, src_name), op.node, op.src)
                # A new symlink is whole when it appears; anything else waits under a staging name for the sync.
                staged = op.over or op.create != "symlink"
                target = PREFIX + name if staged else name
                if staged:
                    self.staged.append((op.dst, op.over))
                first = copies.get((op.node.dev, op.node.ino)) if op.create in ("copy", "special") else None
                if first is not None:
                    self.link_copy(first, dst_fd, target)
                    continue
                self.fill(src_fd, src_name, op.node, dst_fd, target, op.create, op.symlink_text)
                if op.create in ("copy", "special"):
                    copies[(op.node.dev, op.node.ino)] = parent(op.dst) + "/" + target
        if any(op.create == "copy" for op in self.plan.ops):
            self._sync("", "usr")  # copied data is on disk before any name shows it
        step_boundary("usrmerge.staged")

    def link_copy(self, first: str, dst_fd: int, name: str) -> None:
        os.link(first.rpartition("/")[2], name, src_dir_fd=self.dirs.get(parent(first)), dst_dir_fd=dst_fd,
                follow_symlinks=False)

    def publish(self) -> None:
        """Staged entries take their names only now, after the sync: a name never shows a torn copy."""
        for path, over in self.staged:
            fd, name = self.dirs.get(parent(path)), path.rpartition("/")[2]
            if over:
                os.rename(PREFIX + name, name, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                rename_noreplace(fd, PREFIX + name, name)
        for op in self.plan.ops:
            if op.chmod_dst:
                fd = self.dirs.get(op.dst)
                os.fchown(fd, op.node.uid, op.node.gid)
                os.fchmod(fd, op.node.mode)
        step_boundary("usrmerge.published")

    def replace_sources(self) -> None:
        for op in self.plan.ops:
            if not op.replace_src:
                continue
            fd, name = self.dirs.get(parent(op.src)), op.src.rpartition("/")[2]
            check_identity(lstat(fd, name), op.node, op.src)
            os.symlink(relative(op.dst, parent(op.src)), PREFIX + name, dir_fd=fd)
            os.rename(PREFIX + name, name, src_dir_fd=fd, dst_dir_fd=fd)
        # A full commit before the swaps: fsync of a directory alone (btrfs's log tree) could make a swap
        # durable without the links and copies it depends on.
        self._sync("", "usr")
        self._record("merge")
        step_boundary("usrmerge.sources")

    def links_only(self, path: str) -> None:
        """The safety check before a directory goes: nothing in it but symlinks and directories."""
        stack = [path]
        while stack:
            current = stack.pop()
            fd = self.dirs.get(current)
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(current + "/" + entry.name)
                    elif not entry.is_symlink():
                        raise UsrMergeError("%s/%s is not a symlink after the merge; not replacing %s" % (
                            show(current), entry.name, show(path)))

    def exchange(self) -> None:
        for source in self.plan.layout.sources:
            self.links_only(source.path)
            self.dirs.forget(source.path)
            fd, name = self.dirs.get(parent(source.path)), source.path.rpartition("/")[2]
            os.symlink(source.link_text, PREFIX + name, dir_fd=fd)
            exchange(fd, PREFIX + name, fd, name)
            self.old.append((source.path, (parent(source.path) + "/" if parent(source.path) else "") + PREFIX + name))
            self._record("replace_with_symlink", show(source.path))
            step_boundary("usrmerge.exchanged %s" % show(source.path))
        for path, text in self.plan.layout.new_links:
            fd, name = self.dirs.get(parent(path)), path.rpartition("/")[2]
            os.symlink(text, PREFIX + name, dir_fd=fd)
            rename_noreplace(fd, PREFIX + name, name)
            self._record("symlink", show(path))
            step_boundary("usrmerge.symlink %s" % show(path))
