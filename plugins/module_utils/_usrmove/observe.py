# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check: reads the machine into the facts the preflight and the verification decide on."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import resolve_in_root
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.elf import elf_interpreter
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, mount_containing, read_mountinfo,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmove.inspect import (
    PACKAGE_LOCKS, PACKAGE_PROCESSES, dracut_verdict, genkernel_verdict, initramfs_tools_verdict, mkinitcpio_verdict,
    parse_failed_units, parse_proc_locks, parse_rc_crashed,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmove.model import (
    OLD_DIRECTORIES, Initramfs, UsrMoveError,
)

# Where each generator is installed (inside root), in the order they are looked for.
GENERATOR_PROGRAMS = (
    ("dracut", ("usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut")),
    ("mkinitcpio", ("usr/bin/mkinitcpio",)),
    ("genkernel", ("usr/bin/genkernel",)),
    ("initramfs-tools", ("usr/sbin/update-initramfs", "sbin/update-initramfs")),
)
IMAGE_NAMES = {
    "initramfs-tools": ("boot/initrd.img-{release}",),
    "dracut": ("boot/initramfs-{release}.img", "boot/initrd.img-{release}", "boot/initrd-{release}"),
}
INTERP_READ = 65536


def read_text(root: str, relative: str) -> str | None:
    try:
        with open(os.path.join(root, relative), encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def root_and_usr(root: str, entries: t.Sequence[MountEntry]) -> tuple[MountEntry, MountEntry]:
    root_mount = mount_containing(entries, root)
    usr_mount = mount_containing(entries, os.path.join(root, "usr"))
    if root_mount is None or usr_mount is None:
        raise UsrMoveError("root: no mount holds %s in the mount table" % root)
    return root_mount, usr_mount


def usr_is_separate(root_mount: MountEntry, usr_mount: MountEntry) -> bool:
    return usr_mount.mount_id != root_mount.mount_id and usr_mount.device != root_mount.device


def installed_generator(root: str) -> str | None:
    for generator, programs in GENERATOR_PROGRAMS:
        if any(os.path.exists(os.path.join(root, program)) for program in programs):
            return generator
    return None


def default_image(root: str, generator: str) -> str | None:
    release = os.uname().release
    for pattern in IMAGE_NAMES.get(generator, ()):
        path = os.path.join(root, pattern.format(release=release))
        if os.path.exists(path):
            return path
    return None


def inspect_initramfs(runner: Runner, root: str, image: str | None) -> Initramfs:
    """Find the generator and look into its image (or configuration) for the /usr mount."""
    generator = installed_generator(root)
    fstab_text = read_text(root, "etc/fstab") or ""
    if generator is None:
        return Initramfs(None, None, False, "no initramfs generator is installed")
    if generator == "mkinitcpio":
        texts = [read_text(root, "etc/mkinitcpio.conf") or ""]
        texts += [read_text(root, path) or "" for path in sorted(glob.glob(os.path.join(root, "etc/mkinitcpio.conf.d/*.conf")))]
        return mkinitcpio_verdict("\n".join(texts), os.path.join(root, "etc/mkinitcpio.conf"))
    if generator == "genkernel":
        return genkernel_verdict(fstab_text, os.path.join(root, "etc/genkernel.conf"))
    image = image or default_image(root, generator)
    if image is None or not os.path.isfile(image):
        return Initramfs(generator, image, False, "no initramfs image for kernel %s was found (pass initramfs)"
                         % os.uname().release)
    if generator == "dracut":
        listing = runner.run(["lsinitrd", image]).stdout
        return dracut_verdict(listing, fstab_text, image)
    scratch = tempfile.mkdtemp(prefix="usr-move-initramfs.")
    try:
        runner.run(["unmkinitramfs", image, scratch])
        # unmkinitramfs puts an image with early cpio archives in early*/ and main/
        for candidate in ("init", "main/init"):
            init_text = read_text(scratch, candidate)
            if init_text is not None:
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return initramfs_tools_verdict(init_text, fstab_text, image)


def running_package_managers(root: str, mounts: t.Sequence[MountEntry]) -> tuple[str, ...]:
    """A line per sign of a running package manager: a held lock, pacman's lock file, a process."""
    proc_locks = read_text("/", "proc/locks") or ""
    held = parse_proc_locks(proc_locks)
    found = []
    for manager, relative, existence in PACKAGE_LOCKS:
        path = os.path.join(root, relative)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if existence:
            found.append("%s: %s exists (remove it only if no %s runs)" % (manager, path, manager))
            continue
        # /proc/locks names the superblock's device; stat(2) on a btrfs subvolume answers the subvolume's own.
        devices = {(os.major(st.st_dev), os.minor(st.st_dev))}
        holder_mount = mount_containing(mounts, path)
        if holder_mount is not None:
            major, minor = holder_mount.device.split(":")
            devices.add((int(major), int(minor)))
        pid = next((held[(major, minor, st.st_ino)] for major, minor in sorted(devices)
                    if (major, minor, st.st_ino) in held), None)
        if pid is not None:
            holder = "pid %d" % pid if pid > 0 else "an open file description lock"
            found.append("%s: %s is locked by %s" % (manager, path, holder))
    if root == "/":
        for comm_path in glob.glob("/proc/[0-9]*/comm"):
            comm = (read_text("/", comm_path.lstrip("/")) or "").strip()
            if comm in PACKAGE_PROCESSES:
                found.append("%s: process %s (pid %s) runs" % (PACKAGE_PROCESSES[comm], comm, comm_path.split("/")[2]))
    return tuple(found)


class Resolver:
    """What an old path resolves to: sha256 of its bytes, 'directory', or 'dangling'; inodes read once."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._digests: dict[tuple[int, int], str] = {}

    def value(self, relative: str) -> str:
        try:
            st = os.stat(resolve_in_root(self.root, relative))
        except (FileNotFoundError, NotADirectoryError):
            return "dangling"
        if stat.S_ISDIR(st.st_mode):
            return "directory"
        if not stat.S_ISREG(st.st_mode):
            return "special"
        key = (st.st_dev, st.st_ino)
        if key not in self._digests:
            digest = hashlib.sha256()
            with open(resolve_in_root(self.root, relative), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self._digests[key] = "sha256:" + digest.hexdigest()
        return self._digests[key]


def old_paths(root: str) -> list[str]:
    """Every path below the old top-level directories that are still real directories ('/bin/ls', ...)."""
    found = []
    for name in OLD_DIRECTORIES:
        top = os.path.join(root, name)
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        found.append("/" + name)
        for directory, dirs, files in os.walk(top):
            inside = "/" + os.path.relpath(directory, root)
            found += [inside + "/" + entry for entry in dirs + files]
            dirs[:] = [entry for entry in dirs if not os.path.islink(os.path.join(directory, entry))]
    return sorted(found)


def old_directories(root: str) -> list[str]:
    """The old top-level directories that are still real directories (the move is pending while any is)."""
    return [name for name in OLD_DIRECTORIES
            if not os.path.islink(os.path.join(root, name)) and os.path.isdir(os.path.join(root, name))]


def bytes_to_copy(root: str, separate: bool) -> int:
    """What the move copies: nothing on one filesystem (hard links), every regular file's bytes onto another
    (an upper bound: identical duplicates already in /usr are not copied)."""
    if not separate:
        return 0
    total = 0
    for name in old_directories(root):
        for directory, _dirs, files in os.walk(os.path.join(root, name)):
            for entry in files:
                st = os.lstat(os.path.join(directory, entry))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def usr_available(root: str) -> int:
    space = os.statvfs(os.path.join(root, "usr"))
    return space.f_bavail * space.f_frsize


def resolve_all(root: str, paths: t.Iterable[str]) -> dict[str, str]:
    resolver = Resolver(root)
    return {path: resolver.value(path.lstrip("/")) for path in paths}


def broken_interpreters(root: str) -> tuple[int, tuple[str, ...]]:
    """(binaries checked, 'BINARY: INTERPRETER' for each ELF in usr/bin whose interpreter does not resolve)."""
    checked = 0
    broken = []
    usr_bin = os.path.join(root, "usr/bin")
    with os.scandir(usr_bin) as entries:
        names = sorted(entry.name for entry in entries if entry.is_file(follow_symlinks=False))
    for name in names:
        try:
            with open(os.path.join(usr_bin, name), "rb") as handle:
                head = handle.read(INTERP_READ)
        except PermissionError:
            continue
        interpreter = elf_interpreter(head)
        if interpreter is None:
            continue
        checked += 1
        try:
            ok = stat.S_ISREG(os.stat(resolve_in_root(root, interpreter)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            ok = False
        if not ok:
            broken.append("/usr/bin/%s: %s" % (name, interpreter))
    return checked, tuple(broken)


def missing_compat_links(root: str, links: t.Sequence[str]) -> tuple[str, ...]:
    """The compatibility paths that do not resolve although their /usr counterpart does."""
    missing = []
    for link in links:
        relative = link.lstrip("/")
        if os.path.exists(resolve_in_root(root, "usr/" + relative)) and not os.path.exists(resolve_in_root(root, relative)):
            missing.append(link)
    return tuple(missing)


def init_state(runner: Runner, root: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(init system, its overall state, failed units or crashed services) of the running system."""
    if root != "/":
        return "none", None, ()
    if os.path.isdir("/run/systemd/system"):
        # --wait: right after a reboot the system is still "starting"; degraded exits non-zero.
        state = runner.run(["systemctl", "is-system-running", "--wait"], check=False).stdout.strip()
        failed = runner.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]).stdout
        return "systemd", state, parse_failed_units(failed)
    try:
        crashed = runner.run(["rc-status", "--crashed"], check=False).stdout
    except CommandError:
        return "none", None, ()
    return "openrc", None, parse_rc_crashed(crashed)


def read_mounts() -> tuple[MountEntry, ...]:
    return read_mountinfo()
