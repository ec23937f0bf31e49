# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Split-/usr trees for usrmerge tests and benchmarks.

- BtrfsPool: a btrfs filesystem on a loop image, mounted only inside a MountNamespace; fixture trees are
  subvolumes and every case works on a snapshot (about 30 ms to make, measured on this kind of machine).
- Debian's convert-usrmerge, downloaded once with `apt-get download` and run inside a copy (chroot, /proc
  mounted in the namespace), never on this machine.
- Manifests: whole-tree (type, mode, owner, size, link target, content) and "what each path resolves to
  inside the root", computed in a forked child that chroot()s into the tree, independently of the module.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import typing as t

from support.modules import collections_path
from support.namespace import MountNamespace

USRMERGE_DEB_GLOB = "usrmerge_*_all.deb"
CONVERT = "usr/lib/usrmerge/convert-usrmerge"
OLD_DIRECTORIES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class BtrfsPool:
    """Subvolumes on a private btrfs loop image; `path()` is for commands run in the namespace, `view()` for
    reading from this process (through /proc/PID/root, which walks the namespace's mounts)."""

    def __init__(self, workdir: pathlib.Path, size: str = "2G", ns: MountNamespace | None = None) -> None:
        self.workdir = workdir
        self.ns = ns or MountNamespace()
        self.image = workdir / "pool.img"
        self.mountpoint = workdir / "pool"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        subprocess.run(["mkfs.btrfs", "-q", "-f", str(self.image)], check=True, capture_output=True)
        self.device = self.ns.run(["losetup", "--find", "--show", str(self.image)]).stdout.strip()
        try:
            self.ns.run(["mount", "-o", "noatime", self.device, str(self.mountpoint)])
        except AssertionError:
            subprocess.run(["losetup", "-d", self.device], check=False)
            raise

    def path(self, name: str) -> str:
        return str(self.mountpoint / name)

    def view(self, name: str) -> pathlib.Path:
        return pathlib.Path("/proc/%d/root%s" % (self.ns.pid, self.path(name)))

    def btrfs(self, *argv: str) -> None:
        self.ns.run(["btrfs", "-q"] + list(argv))

    def from_tarball(self, name: str, tarball: pathlib.Path) -> None:
        self.btrfs("subvolume", "create", self.path(name))
        self.ns.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-xpf", str(tarball),
                     "-C", self.path(name)])
        self.btrfs("property", "set", "-ts", self.path(name), "ro", "true")
        self.sync()

    def snapshot(self, source: str, name: str) -> str:
        self.btrfs("subvolume", "snapshot", self.path(source), self.path(name))
        return self.path(name)

    def delete(self, name: str) -> None:
        self.btrfs("subvolume", "delete", self.path(name))

    def sync(self) -> None:
        self.ns.run(["btrfs", "filesystem", "sync", str(self.mountpoint)])

    def close(self) -> None:
        try:
            self.ns.run(["umount", str(self.mountpoint)], check=False)
            subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
        finally:
            self.ns.close()
            self.image.unlink(missing_ok=True)


def split_usr_tarball() -> pathlib.Path:
    from vmlab import rootfs  # the lab's content-keyed cache of Debian trees

    return rootfs.ensure_tree(rootfs.SPLIT_USR_TREE)


def usrmerge_deb() -> pathlib.Path:
    """Debian's usrmerge package, fetched once into the shared cache with apt-get download (never installed)."""
    from vmlab.cache import cache_root

    directory = cache_root() / "debs" / "usrmerge"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(directory.glob(USRMERGE_DEB_GLOB))
        if not found:
            staging = pathlib.Path(tempfile.mkdtemp(dir=directory, prefix=".download-"))
            try:
                os.chmod(staging, 0o755)  # apt's sandbox user must be able to write here
                subprocess.run(["apt-get", "download", "-qq", "usrmerge"], cwd=staging, check=True,
                               capture_output=True)
                for deb in staging.glob(USRMERGE_DEB_GLOB):
                    os.rename(deb, directory / deb.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            found = sorted(directory.glob(USRMERGE_DEB_GLOB))
    return found[-1]


def convert_usrmerge(ns: MountNamespace, root: str, view: pathlib.Path) -> subprocess.CompletedProcess:
    """Run Debian's convert-usrmerge inside the tree at root, then take the package's own files out again."""
    deb = usrmerge_deb()
    listed = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True)
    members = subprocess.run(["tar", "-t"], input=listed.stdout, check=True, capture_output=True).stdout.decode()
    before = {member for member in members.splitlines() if (view / member).exists() or (view / member).is_symlink()}
    ns.run(["dpkg-deb", "-x", str(deb), root])
    completed = ns.run(["sh", "-c", 'mount -t proc proc "$1/proc" && chroot "$1" /%s; rc=$?; umount "$1/proc"; '
                        'exit $rc' % CONVERT, "sh", root], check=False)
    for member in sorted(set(members.splitlines()) - before, key=len, reverse=True):
        path = view / member
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif path.exists():
            path.unlink()
    return completed


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str  # symlink text
    inode: int  # files: compared through content when the inodes differ


FIND_FIELDS = "%P", "%y", "%m", "%U", "%G", "%s", "%i", "%l"
KINDS = {"d": "dir", "l": "link", "f": "file"}


def tree_manifest(root: pathlib.Path, skip: t.Sequence[str] = ()) -> dict[str, Entry]:
    """Every path below root (without following symlinks), with what identifies its content.

    find(1) lists it: four times faster than os.walk here, which matters for hundreds of kill points.
    """
    listed = subprocess.run(["find", str(root), "-mindepth", "1", "-printf", "\\0".join(FIND_FIELDS) + "\\0"],
                            check=True, capture_output=True).stdout.split(b"\0")
    found = {}
    for start in range(0, len(listed) - 1, len(FIND_FIELDS)):
        path, kind, mode, uid, gid, size, inode, target = (field.decode("utf-8", "surrogateescape")
                                                           for field in listed[start:start + len(FIND_FIELDS)])
        if path in skip:
            continue
        kind = KINDS.get(kind, "special " + kind)
        found[path] = Entry(kind, int(mode, 8), int(uid), int(gid), int(size) if kind == "file" else 0, target,
                            int(inode) if kind == "file" else 0)
    return found


def sha256(path: pathlib.Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def tree_differences(first: pathlib.Path, first_manifest: t.Mapping[str, Entry], second: pathlib.Path,
                     second_manifest: t.Mapping[str, Entry]) -> list[str]:
    """Paths that differ in type, mode, owner, symlink text or content (read only where the inodes differ)."""
    differing = []
    for path in sorted(set(first_manifest) | set(second_manifest)):
        one, two = first_manifest.get(path), second_manifest.get(path)
        if one is None or two is None:
            differing.append("%s: only in %s" % (path, first if two is None else second))
        elif dataclasses.replace(one, inode=0) != dataclasses.replace(two, inode=0):
            differing.append("%s: %s != %s" % (path, one, two))
        elif one.kind == "file" and one.inode != two.inode and sha256(first / path) != sha256(second / path):
            differing.append("%s: content differs" % path)
    return differing


def original_paths(manifest: t.Mapping[str, Entry]) -> list[str]:
    """Every path in the split directories, and its /usr counterpart where that exists too."""
    paths = [path for path in manifest if path.split("/")[0] in OLD_DIRECTORIES]
    return sorted(paths + ["usr/" + path for path in paths if "usr/" + path in manifest])


def resolve_in_chroot(root: pathlib.Path, paths: t.Sequence[str]) -> dict[str, list[int]]:
    """What each path resolves to (following symlinks) as a process chroot()ed into root sees it:
    [inode, mode, uid, gid, size] for files, [0, mode, uid, gid, 0] for directories, [] when missing."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(reader)
            os.chroot(str(root))
            os.chdir("/")
            found = {}
            for path in paths:
                try:
                    st = os.stat("/" + path)
                    directory = stat.S_ISDIR(st.st_mode)
                    found[path] = [0 if directory else st.st_ino, st.st_mode, st.st_uid, st.st_gid,
                                   0 if directory else st.st_size]
                except OSError:
                    found[path] = []
            with os.fdopen(writer, "w") as handle:
                json.dump(found, handle)
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return t.cast(dict[str, list[int]], json.loads(data))


def shell_works(root: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c", "true"], capture_output=True, text=True, check=False)


def module_argv(module: str, args: t.Mapping[str, t.Any], directory: pathlib.Path) -> tuple[list[str], str]:
    """argv of a direct module run and its args file (as support.modules.direct_module builds them)."""
    module_args = dict(args, _ansible_check_mode=False, _ansible_diff=False)
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", dir=directory, delete=False)
    with handle:
        json.dump({"ANSIBLE_MODULE_ARGS": module_args}, handle)
    return [sys.executable, "-m", "ansible_collections.immutable.root.plugins.modules." + module, handle.name], \
        handle.name


def run_killed_after(ns: MountNamespace, module: str, args: t.Mapping[str, t.Any], delay: float,
                     directory: pathlib.Path, env: t.Mapping[str, str] | None = None) -> int | None:
    """Run the module, and SIGKILL it `delay` seconds after it passed its first step boundary (where it
    pauses itself until the timer starts); its return code if it ended before that, else None."""
    from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import STOP_AT_ENV

    argv, args_file = module_argv(module, args, directory)
    run_env = dict(os.environ, PYTHONPATH=collections_path(), **(env or {}))
    run_env[STOP_AT_ENV] = "1"
    process = subprocess.Popen(ns.prefix() + argv, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _pid, status = os.waitpid(process.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode
        os.kill(process.pid, signal.SIGCONT)
        try:
            return process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)  # nsenter exec()s the interpreter: this is the module itself
            process.wait()
            return None
    finally:
        if process.stderr:
            process.stderr.close()
        os.unlink(args_file)


def start_stopping_at(ns: MountNamespace, module: str, args: t.Mapping[str, t.Any], step: int,
                      directory: pathlib.Path) -> tuple[subprocess.Popen, str]:
    """Start the module so that it stops itself (SIGSTOP) at boundary `step`; returns once it has stopped
    (or ended first)."""
    from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import STOP_AT_ENV

    argv, args_file = module_argv(module, args, directory)
    run_env = dict(os.environ, PYTHONPATH=collections_path(), **{STOP_AT_ENV: str(step)})
    process = subprocess.Popen(ns.prefix() + argv, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    _pid, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        process.returncode = os.waitstatus_to_exitcode(status)
    return process, args_file


def finish(process: subprocess.Popen, args_file: str) -> tuple[int, dict[str, t.Any] | None, str]:
    if process.returncode is None:
        os.kill(process.pid, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=600)
    os.unlink(args_file)
    try:
        return process.returncode, json.loads(stdout), stderr
    except ValueError:
        return process.returncode, None, stderr


def random_delays(seed: int, count: int, longest: float) -> list[float]:
    generator = random.Random(seed)
    return [round(generator.uniform(0.0, longest), 4) for _number in range(count)]
