# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check: parsers of what the preflight reads, and the preflight's decisions (pure)."""

from __future__ import annotations

import re
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._usrmove.model import Check, Initramfs, PreflightFacts

# Lock files each package manager holds while it runs. dpkg and apk hold fcntl/flock locks on files that stay
# in place, so only a lock in /proc/locks counts; pacman's db.lck exists exactly while pacman runs; portage
# takes fcntl locks on these files and removes some of them afterwards.
PACKAGE_LOCKS: tuple[tuple[str, str, bool], ...] = (
    # (manager, path inside root, the file's existence alone means "running")
    ("dpkg", "var/lib/dpkg/lock-frontend", False),
    ("dpkg", "var/lib/dpkg/lock", False),
    ("pacman", "var/lib/pacman/db.lck", True),
    ("apk", "lib/apk/db/lock", False),
    ("portage", "var/db/.pkg.portage_lockfile", False),
    ("portage", "var/lib/portage/.world.portage_lockfile", False),
)
# Process names (comm) of the package managers; a script's comm is its file name.
PACKAGE_PROCESSES = {"dpkg": "dpkg", "apt": "dpkg", "apt-get": "dpkg", "unattended-upgr": "dpkg",
                     "pacman": "pacman", "apk": "apk", "emerge": "portage", "ebuild": "portage"}

# Debian's initramfs-tools init (/usr/share/initramfs-tools/init, /init in the image) mounts a separate /usr
# itself, from the root's fstab: `if read_fstab_entry /usr; then ... mountfs /usr`.
_ITOOLS_READ = re.compile(r"^\s*if\s+read_fstab_entry\s+/usr\b", re.MULTILINE)
_ITOOLS_MOUNT = re.compile(r"^\s*mountfs\s+/usr\b", re.MULTILINE)
# dracut: the usrmount module's hook (non-systemd initrd), or systemd's fstab generator, which mounts
# /sysroot/usr from the root's fstab in a systemd initrd.
DRACUT_USR_FILES = ("usr/lib/dracut/hooks/pre-pivot/50-mount-usr.sh",
                    "usr/lib/systemd/system-generators/systemd-fstab-generator",
                    "lib/systemd/system-generators/systemd-fstab-generator")
_HOOKS = re.compile(r"^\s*HOOKS\s*=\s*\(([^)]*)\)", re.MULTILINE)


def parse_proc_locks(text: str) -> dict[tuple[int, int, int], int]:
    """(major, minor, inode) -> pid of every lock in /proc/locks (blocked waiters, '->' lines, are skipped)."""
    held: dict[tuple[int, int, int], int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            held[(int(major, 16), int(minor, 16), int(inode))] = pid
        except ValueError:
            continue
    return held


def fstab_usr_entry(fstab_text: str) -> str | None:
    """The raw fstab line that mounts /usr, or None."""
    for entry in parse_fstab(fstab_text):
        if entry.mountpoint.rstrip("/") == "/usr" and "noauto" not in entry.options:
            return entry.raw
    return None


def initramfs_tools_verdict(init_text: str | None, fstab_text: str, image: str) -> Initramfs:
    """Whether an initramfs-tools image mounts /usr: its /init must have the code and fstab must list /usr."""
    if init_text is None:
        return Initramfs("initramfs-tools", image, False, "the image has no /init script")
    missing = [what for what, pattern in (("`if read_fstab_entry /usr`", _ITOOLS_READ), ("`mountfs /usr`", _ITOOLS_MOUNT))
               if not pattern.search(init_text)]
    if missing:
        return Initramfs("initramfs-tools", image, False, "its /init has no %s: it never mounts /usr" % " and no ".join(missing))
    if fstab_usr_entry(fstab_text) is None:
        return Initramfs("initramfs-tools", image, False,
                         "/etc/fstab has no /usr entry, and initramfs-tools mounts /usr only when fstab lists it")
    return Initramfs("initramfs-tools", image, True, None)


def dracut_verdict(listing: str, fstab_text: str, image: str) -> Initramfs:
    """Whether a dracut image (lsinitrd's listing) carries the /usr mount."""
    names = {line.split()[-1].lstrip("./") for line in listing.splitlines() if line.split()}
    if not any(name in names for name in DRACUT_USR_FILES):
        return Initramfs("dracut", image, False,
                         "the image has neither the usrmount module's %s nor systemd-fstab-generator "
                         "(add the usrmount or systemd module)" % DRACUT_USR_FILES[0])
    if fstab_usr_entry(fstab_text) is None:
        return Initramfs("dracut", image, False, "/etc/fstab has no /usr entry for the initramfs to mount")
    return Initramfs("dracut", image, True, None)


def mkinitcpio_verdict(conf_text: str, conf: str) -> Initramfs:
    """Whether mkinitcpio's HOOKS mount /usr: the usr hook (busybox init) or the systemd hook do."""
    found = _HOOKS.findall(conf_text)
    hooks = found[-1].split() if found else []
    if "usr" in hooks or "systemd" in hooks:
        return Initramfs("mkinitcpio", conf, True, None)
    return Initramfs("mkinitcpio", conf, False, "HOOKS=(%s) has neither the usr nor the systemd hook" % " ".join(hooks))


def genkernel_verdict(fstab_text: str, conf: str) -> Initramfs:
    """genkernel's linuxrc mounts /usr when the root's fstab lists it (no option turns that off)."""
    if fstab_usr_entry(fstab_text) is None:
        return Initramfs("genkernel", conf, False, "/etc/fstab has no /usr entry, and genkernel's linuxrc mounts "
                                                   "/usr only when fstab lists it")
    return Initramfs("genkernel", conf, True, None)


def preflight_checks(facts: PreflightFacts) -> list[Check]:
    """Each preflight check with its verdict and reason, in the order they are reported."""
    checks = []
    if facts.usr_separate:
        initramfs = facts.initramfs
        if initramfs is None or initramfs.generator is None:
            checks.append(Check("initramfs", False, "/usr is a separate filesystem (%s) but no initramfs generator "
                                "(%s) was found to mount it before init" % (
                                    facts.usr_source, "dracut, genkernel, initramfs-tools, mkinitcpio")))
        elif not initramfs.mounts_usr:
            checks.append(Check("initramfs", False, "/usr is a separate filesystem (%s) and must be mounted by the "
                                "initramfs; checked %s (%s): %s" % (facts.usr_source, initramfs.generator,
                                                                    initramfs.inspected, initramfs.missing)))
        else:
            checks.append(Check("initramfs", True, "/usr is a separate filesystem (%s); %s (%s) mounts it" % (
                facts.usr_source, initramfs.generator, initramfs.inspected)))
    else:
        checks.append(Check("initramfs", True, "/usr is on the root filesystem; no initramfs needs to mount it"))
    if facts.available_bytes >= 0 and facts.needed_bytes > facts.available_bytes:
        checks.append(Check("space", False, "the /usr filesystem has %s available but the move copies %s" % (
            _size(facts.available_bytes), _size(facts.needed_bytes))))
    else:
        checks.append(Check("space", True, "%s to copy, %s available" % (
            _size(facts.needed_bytes), "unknown" if facts.available_bytes < 0 else _size(facts.available_bytes))))
    if facts.package_managers:
        checks.append(Check("package_manager", False, "a package manager is running: %s" % "; ".join(
            facts.package_managers)))
    else:
        checks.append(Check("package_manager", True, "no package manager lock is held"))
    if facts.root_read_only and not facts.merged:
        checks.append(Check("root_writable", False, "/ (%s) is mounted read-only" % facts.root_fstype))
    else:
        checks.append(Check("root_writable", True, "/ (%s) is writable" % facts.root_fstype
                            if not facts.root_read_only else "/ is read-only but already merged"))
    return checks


def refusal(checks: t.Sequence[Check]) -> str | None:
    """The failure message naming every failed check, or None when all passed."""
    failed = [check for check in checks if not check.passed]
    if not failed:
        return None
    return "preflight refused the /usr move, nothing was changed: %s" % "; ".join(
        "%s: %s" % (check.name, check.reason) for check in failed)


def parse_failed_units(text: str) -> tuple[str, ...]:
    """Unit names from `systemctl list-units --failed --plain --no-legend` (first column)."""
    return tuple(line.split()[0] for line in text.splitlines() if line.split())


def parse_rc_crashed(text: str) -> tuple[str, ...]:
    """Service names from `rc-status --crashed` (one per line)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def manifest_differences(recorded: t.Mapping[str, str], found: t.Mapping[str, str]) -> list[str]:
    """Every recorded path whose value differs now, as 'PATH: expected X, found Y'."""
    return ["%s: expected %s, found %s" % (path, value, found.get(path, "missing"))
            for path, value in sorted(recorded.items()) if found.get(path) != value]


def _size(number: int) -> str:
    return "%.1f MiB (%d bytes)" % (number / 1048576.0, number)
