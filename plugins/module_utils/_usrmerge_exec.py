# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: carrying out a plan so that every old path resolves to the same content at every instant.

Order: copies or hard links appear in /usr (staged under temporary names, synced, then renamed into place);
each original file is then replaced by a symlink to its new place with one rename; each directory, now
holding only symlinks and directories, is swapped for its symlink with renameat2(RENAME_EXCHANGE), so
/lib64 or /bin never vanish (Debian bug #1020920); the old directories are removed after verification.
Everything is done through directory descriptors opened with O_NOFOLLOW.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._actions import Action
from ansible_collections.immutable.root.plugins.module_utils._checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._usrmerge import (
    BACKUP_DIR, PREFIX, SKIP_FLAG, EntryOp, Node, Observed, Plan, UsrMergeError, parent, relative, show,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge_manifest import (
    O_DIR, Hasher, kind_of, same_object,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge_walk import Directories, lstat, open_root

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
# renameat2(2) has no glibc wrapper before 2.28; these are the syscall numbers (asm/unistd.h).
RENAMEAT2_SYSCALL = {
    "x86_64": 316, "i386": 353, "i686": 353, "aarch64": 276, "armv7l": 382, "armv6l": 382, "riscv64": 276,
    "loongarch64": 276, "ppc64le": 357, "ppc64": 357, "s390x": 347, "mips64": 5311, "sparc64": 345,
}
SPECIAL_TYPES = {"fifo": stat.S_IFIFO, "char": stat.S_IFCHR, "block": stat.S_IFBLK, "socket": stat.S_IFSOCK}
BACKUP_MODE = 0o700  # saved copies may be setuid binaries


class _Libc:
    _libc: t.Any = None

    @classmethod
    def get(cls) -> t.Any:
        if cls._libc is None:
            cls._libc = ctypes.CDLL(None, use_errno=True)
        return cls._libc


def renameat2(old_fd: int, old: str, new_fd: int, new: str, flags: int) -> None:
    libc = _Libc.get()
    args = (ctypes.c_int(old_fd), os.fsencode(old), ctypes.c_int(new_fd), os.fsencode(new), ctypes.c_uint(flags))
    if hasattr(libc, "renameat2"):
        result = libc.renameat2(*args)
    elif platform.machine() in RENAMEAT2_SYSCALL:
        result = libc.syscall(ctypes.c_long(RENAMEAT2_SYSCALL[platform.machine()]), *args)
    else:
        raise OSError(errno.ENOSYS, "renameat2 is neither in the C library nor known for %s" % platform.machine())
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), new)


def rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    try:
        renameat2(dir_fd, old, dir_fd, new, RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):  # the filesystem or kernel lacks the flag
            raise
        if lstat(dir_fd, new) is not None:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)
        os.rename(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def syncfs(fd: int) -> None:
    libc = _Libc.get()
    if not hasattr(libc, "syncfs") or libc.syncfs(ctypes.c_int(fd)) != 0:
        os.sync()


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


def copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)  # a reflink on btrfs and xfs: no data is copied
        return
    except OSError:
        pass
    copied = 0
    try:
        while copied < size:
            done = os.copy_file_range(src_fd, dst_fd, size - copied)
            if done == 0:
                break
            copied += done
        return
    except (OSError, AttributeError):  # old kernels refuse copies across filesystems; Python < 3.8
        os.lseek(src_fd, copied, os.SEEK_SET)
        os.lseek(dst_fd, copied, os.SEEK_SET)
    while True:
        chunk = os.read(src_fd, 1 << 20)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def check_identity(st: t.Optional[os.stat_result], node: Node, path: str) -> os.stat_result:
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
        self.done: t.List[Action] = []
        self.staged: t.List[t.Tuple[str, bool]] = []  # (destination, replaces an existing entry)
        self.old: t.List[t.Tuple[str, str]] = []  # (directory, its old self swapped out), removed by finish()
        self.devices: t.Dict[int, str] = {}

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
            syncfs(self.dirs.get(path))

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
                renameat2(fd, first, fd, second, RENAME_EXCHANGE)
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
            renameat2(fd, PREFIX + name, fd, name, RENAME_EXCHANGE)
            self.old.append((source.path, (parent(source.path) + "/" if parent(source.path) else "") + PREFIX + name))
            self._record("replace_with_symlink", show(source.path))
            step_boundary("usrmerge.exchanged %s" % show(source.path))
        for path, text in self.plan.layout.new_links:
            fd, name = self.dirs.get(parent(path)), path.rpartition("/")[2]
            os.symlink(text, PREFIX + name, dir_fd=fd)
            rename_noreplace(fd, PREFIX + name, name)
            self._record("symlink", show(path))
            step_boundary("usrmerge.symlink %s" % show(path))
