# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs loop images for btrfs_generation tests and benchmarks.

- The test process moves into a private mount namespace of its own first, so everything mounted here is
  invisible to the machine and dies with the process (loop devices from `mount -o loop` auto-clear).
- A Pool is a btrfs filesystem on a sparse loop image that holds the other images: copies made with
  `cp --reflink=always` cost nothing, which makes a fresh filesystem per test case (and per crash point) cheap.
- Disk images inside the pool are the filesystems the module manages (their top level mounted on `top`).
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import typing as t


from support.modules import direct_module

TAR_OPTIONS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
_namespace_entered = False


def run(argv: t.Sequence[str], check: bool = True, **kwargs: t.Any) -> subprocess.CompletedProcess:
    completed = subprocess.run(list(argv), text=True, capture_output=True, check=False, **kwargs)
    if check and completed.returncode != 0:
        raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(argv), completed.returncode, completed.stdout, completed.stderr))
    return completed


def enter_private_mount_namespace() -> None:
    """Unshare this (single-threaded) process's mount namespace once; mounts made afterwards stay private."""
    global _namespace_entered
    if not _namespace_entered:
        os.unshare(os.CLONE_NEWNS)  # type: ignore[attr-defined]  # Python >= 3.12
        run(["mount", "--make-rprivate", "/"])
        _namespace_entered = True


def mountpoints_under(path: str) -> list[str]:
    """Mount points at or below path in this process's mount namespace."""
    found = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4].replace("\\040", " ")
        if mountpoint == path or mountpoint.startswith(path + "/"):
            found.append(mountpoint)
    return found


class Pool:
    """A btrfs filesystem on a sparse loop image, mounted privately; images inside are reflink-copied."""

    def __init__(self, size: str = "24G") -> None:
        enter_private_mount_namespace()
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="immutable-root-btrfs-pool-"))
        self.image = self.workdir / "pool.img"
        self.root = self.workdir / "pool"
        self.root.mkdir()
        run(["truncate", "-s", size, str(self.image)])
        run(["mkfs.btrfs", "-q", "-f", str(self.image)])
        run(["mount", "-o", "loop,noatime", str(self.image), str(self.root)])
        self._counter = 0

    def fresh(self, stem: str) -> pathlib.Path:
        self._counter += 1
        return self.root / ("%s-%d" % (stem, self._counter))

    def close(self) -> None:
        """Unmount whatever a failed test left mounted inside the pool, then the pool; remove it only when
        nothing is mounted any more (rmtree must never walk into a mounted filesystem)."""
        prefix = str(self.root)
        for mountpoint in sorted(mountpoints_under(prefix), key=len, reverse=True):
            run(["umount", mountpoint], check=False)
        if not mountpoints_under(prefix):
            shutil.rmtree(self.workdir, ignore_errors=True)


_POOL: Pool | None = None


def shared_pool() -> Pool:
    """One pool per test process (pytest imports fixtures per module; the pool must not be built twice)."""
    global _POOL
    if _POOL is None:
        _POOL = Pool()
        atexit.register(_POOL.close)
    return _POOL


def minbase_tarball() -> pathlib.Path:
    from vmlab import rootfs  # the lab's content-keyed cache of Debian trees (tests/conftest.py puts it on the path)

    return rootfs.ensure_tree(rootfs.MINBASE_TREE)


def minbase_tree(pool: Pool) -> pathlib.Path:
    """The mmdebstrap minbase root, unpacked once into the pool (as a read-only subvolume)."""
    tree = pool.root / "minbase"
    if not (tree / "etc" / "os-release").exists():
        if tree.exists():
            run(["btrfs", "property", "set", "-ts", str(tree), "ro", "false"])
            run(["btrfs", "subvolume", "delete", str(tree)])
        run(["btrfs", "subvolume", "create", str(tree)])
        run(["tar"] + TAR_OPTIONS + ["-xpf", str(minbase_tarball()), "-C", str(tree)])
        run(["btrfs", "property", "set", "-ts", str(tree), "ro", "true"])
    return tree


class Disk:
    """A btrfs image inside the pool; mount() puts its top level (subvolid 5) on a directory."""

    def __init__(self, pool: Pool, image: pathlib.Path) -> None:
        self.pool = pool
        self.image = image
        self.top = image.with_suffix(".top")
        self.mounted = False

    @classmethod
    def create(cls, pool: Pool, size: str = "2G", stem: str = "disk") -> "Disk":
        disk = cls(pool, pool.fresh(stem).with_suffix(".img"))
        run(["truncate", "-s", size, str(disk.image)])
        run(["mkfs.btrfs", "-q", "-f", str(disk.image)])
        return disk

    def clone(self, stem: str = "clone") -> "Disk":
        """A reflink copy (the golden image must not be mounted)."""
        copy = Disk(self.pool, self.pool.fresh(stem).with_suffix(".img"))
        run(["cp", "--reflink=always", str(self.image), str(copy.image)])
        return copy

    def mount(self, options: str = "") -> str:
        self.top.mkdir(exist_ok=True)
        run(["mount", "-o", "loop,subvolid=5" + ("," + options if options else ""), str(self.image), str(self.top)])
        self.mounted = True
        return str(self.top)

    def umount(self) -> None:
        if self.mounted:
            run(["umount", str(self.top)])
            self.mounted = False

    def loop_device(self) -> str:
        """The loop device `mount -o loop` attached (auto-clear: it goes away with the last unmount)."""
        for backing in pathlib.Path("/sys/block").glob("loop*/loop/backing_file"):
            if backing.read_text().strip() == str(self.image):
                return "/dev/" + backing.parent.parent.name
        raise AssertionError("no loop device for %s" % self.image)

    def discard(self) -> None:
        self.umount()
        self.image.unlink(missing_ok=True)
        if self.top.exists():
            self.top.rmdir()


def module(args: dict[str, t.Any], check: bool = False, env: dict[str, str] | None = None
           ) -> tuple[int, dict[str, t.Any] | None, str]:
    """Run btrfs_generation directly in this process's (private) mount namespace."""
    return direct_module(None, "btrfs_generation", args, check=check, env=env)


def ok(args: dict[str, t.Any], check: bool = False) -> dict[str, t.Any]:
    rc, result, stderr = module(args, check=check)
    assert rc == 0 and result is not None and not result.get("failed"), (rc, result, stderr)
    return result


def slots_of(top: str) -> list[str]:
    """Generation names in current's slots, read with readlink only (independently of the module)."""
    links = os.path.join(top, "current")
    directory = os.path.normpath(os.path.join(top, os.readlink(links)))
    entries = sorted(os.listdir(directory), key=int)
    assert entries == [str(number) for number in range(len(entries))], entries
    return [os.path.basename(os.readlink(os.path.join(directory, entry))) for entry in entries]


def check_layout(top: str, slots: int = 4) -> list[str]:
    """Invariants after any run, even a killed one; returns current's slots.

    current resolves to a link directory with every slot, each slot is a complete generation (a subvolume
    root whose etc/fstab names it), and no link directory anywhere has a dangling slot.
    """
    current = slots_of(top)
    assert len(current) == slots, current
    template = pathlib.Path(top, "fstab").read_text()
    for name in set(current):
        root = pathlib.Path(top, "snapshots", name, "@")
        assert not root.is_symlink() and root.stat().st_ino == 256, "%s is no subvolume root" % root
        assert (root / "etc/fstab").read_text() == template.replace("CURRENT_SNAPSHOTS_PATH", "/snapshots/" + name), "fstab of %s" % name
        assert (root / "etc/os-release").is_file(), "content of %s" % name
    for directory in pathlib.Path(top, "links").iterdir():
        for slot in directory.iterdir():
            assert slot.exists(), "dangling slot %s -> %s" % (slot, os.readlink(slot))
    return current


def listing(top: str) -> dict[str, t.Any]:
    """Everything of the layout outside the generations' content: names, link texts, modes, fstab."""
    found: dict[str, t.Any] = {}
    for base, directories, files in os.walk(top):
        relative = os.path.relpath(base, top)
        if relative.count(os.sep) >= 2 and relative.startswith("snapshots" + os.sep):
            directories[:] = []
            continue
        for entry in directories + files:
            path = os.path.join(base, entry)
            status = os.lstat(path)
            target = os.readlink(path) if os.path.islink(path) else None
            found[os.path.join(relative, entry)] = (status.st_mode, status.st_mtime_ns, target)
    return found


def subvolumes(top: str) -> list[str]:
    return [line.split(" path ", 1)[1] for line in run(["btrfs", "subvolume", "list", top]).stdout.splitlines()]


def mountinfo() -> str:
    return pathlib.Path("/proc/self/mountinfo").read_text()


def dump(result: dict[str, t.Any]) -> str:
    return json.dumps({key: result.get(key) for key in ("msg", "actions", "slots", "warnings")}, indent=1)
