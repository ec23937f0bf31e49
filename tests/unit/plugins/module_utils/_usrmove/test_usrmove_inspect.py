# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check's parsers and preflight decisions, against captured real text (bookworm's initramfs-tools init,
/proc/locks) and truth tables."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._usrmove.inspect import (
    dracut_verdict, fstab_usr_entry, genkernel_verdict, initramfs_tools_verdict, manifest_differences,
    mkinitcpio_verdict, parse_failed_units, parse_proc_locks, parse_rc_crashed, preflight_checks, refusal,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmove.model import (
    Initramfs, PreflightFacts, Verification,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
INIT = (FIXTURES / "initramfs-tools-init-bookworm.txt").read_text()
SEPUSR_FSTAB = "/dev/vda1 / ext4 rw,errors=remount-ro 0 1\n/dev/vda2 /usr ext4 rw 0 2\n"
ROOT_ONLY_FSTAB = "/dev/vda / ext4 rw 0 1\n# /dev/vda2 /usr ext4 rw 0 2\n"
IMAGE = "/boot/initrd.img-6.1.0-50-amd64"


def test_proc_locks_keys_by_device_and_inode_and_skips_waiters() -> None:
    held = parse_proc_locks((FIXTURES / "proc_locks.txt").read_text())
    assert held == {(0xfe, 1, 131090): 4242, (0xfe, 0, 16056337): -1, (0, 0x1a, 2051): 977}


def test_proc_locks_ignores_garbage() -> None:
    assert parse_proc_locks("nonsense\n1: POSIX ADVISORY WRITE x fe:01:1 0 EOF\n1: POSIX ADVISORY WRITE 1 fe01 0 EOF\n") == {}


def test_fstab_usr_entry() -> None:
    assert fstab_usr_entry(SEPUSR_FSTAB) == "/dev/vda2 /usr ext4 rw 0 2"
    assert fstab_usr_entry(ROOT_ONLY_FSTAB) is None
    assert fstab_usr_entry("/dev/vda2 /usr ext4 noauto 0 2\n") is None


def test_bookworm_init_mounts_usr_listed_in_fstab() -> None:
    assert initramfs_tools_verdict(INIT, SEPUSR_FSTAB, IMAGE) == Initramfs("initramfs-tools", IMAGE, True, None)


def test_init_without_the_usr_block_is_refused_naming_what_is_missing() -> None:
    stripped = INIT.replace("if read_fstab_entry /usr; then", "").replace("mountfs /usr", "")
    verdict = initramfs_tools_verdict(stripped, SEPUSR_FSTAB, IMAGE)
    assert not verdict.mounts_usr
    assert verdict.missing == "its /init has no `if read_fstab_entry /usr` and no `mountfs /usr`: it never mounts /usr"


def test_initramfs_tools_needs_the_fstab_entry_and_an_init() -> None:
    assert "fstab has no /usr entry" in (initramfs_tools_verdict(INIT, ROOT_ONLY_FSTAB, IMAGE).missing or "")
    assert initramfs_tools_verdict(None, SEPUSR_FSTAB, IMAGE).missing == "the image has no /init script"


@pytest.mark.parametrize("listing, mounts", [
    ("-rwxr-xr-x   1 root root  1234 Jan  1 00:00 usr/lib/dracut/hooks/pre-pivot/50-mount-usr.sh\n", True),
    ("-rwxr-xr-x   1 root root 99 Jan 1 00:00 usr/lib/systemd/system-generators/systemd-fstab-generator\n", True),
    ("-rwxr-xr-x   1 root root 99 Jan 1 00:00 usr/bin/bash\n\n", False),
])
def test_dracut_listing(listing: str, mounts: bool) -> None:
    assert dracut_verdict(listing, SEPUSR_FSTAB, "/boot/initramfs.img").mounts_usr is mounts


def test_dracut_needs_the_fstab_entry() -> None:
    listing = "x usr/lib/dracut/hooks/pre-pivot/50-mount-usr.sh\n"
    assert not dracut_verdict(listing, ROOT_ONLY_FSTAB, "/boot/i.img").mounts_usr


@pytest.mark.parametrize("conf, mounts", [
    ("HOOKS=(base udev autodetect modconf block filesystems usr fsck)\n", True),
    ("HOOKS=(base systemd autodetect modconf block filesystems)\n", True),
    ("HOOKS=(base udev usr)\n# later conf.d\nHOOKS=(base udev block filesystems)\n", False),
    ("# nothing\n", False),
])
def test_mkinitcpio_hooks(conf: str, mounts: bool) -> None:
    verdict = mkinitcpio_verdict(conf, "/etc/mkinitcpio.conf")
    assert verdict.mounts_usr is mounts
    assert verdict.generator == "mkinitcpio"


def test_genkernel_follows_fstab() -> None:
    assert genkernel_verdict(SEPUSR_FSTAB, "/etc/genkernel.conf").mounts_usr
    assert not genkernel_verdict(ROOT_ONLY_FSTAB, "/etc/genkernel.conf").mounts_usr


GOOD = PreflightFacts(root_read_only=False, root_fstype="ext4", usr_separate=True, usr_source="/dev/vda2",
                      initramfs=Initramfs("initramfs-tools", IMAGE, True, None), needed_bytes=100,
                      available_bytes=1000, package_managers=(), merged=False)


def verdicts(facts: PreflightFacts) -> dict[str, bool]:
    return {check.name: check.passed for check in preflight_checks(facts)}


def test_all_checks_pass_in_order() -> None:
    assert list(verdicts(GOOD).items()) == [("initramfs", True), ("space", True), ("package_manager", True),
                                            ("root_writable", True)]
    assert refusal(preflight_checks(GOOD)) is None


@pytest.mark.parametrize("change, failing", [
    (dict(initramfs=Initramfs("initramfs-tools", IMAGE, False, "its /init has no `mountfs /usr`")), ["initramfs"]),
    (dict(initramfs=Initramfs(None, None, False, "no initramfs generator is installed")), ["initramfs"]),
    (dict(initramfs=None), ["initramfs"]),
    (dict(usr_separate=False, initramfs=None), []),
    (dict(needed_bytes=1001), ["space"]),
    (dict(available_bytes=-1, needed_bytes=10 ** 12), []),
    (dict(package_managers=("dpkg: /var/lib/dpkg/lock is locked by pid 7",)), ["package_manager"]),
    (dict(root_read_only=True), ["root_writable"]),
    (dict(root_read_only=True, merged=True), []),
    (dict(root_read_only=True, needed_bytes=5000), ["space", "root_writable"]),
])
def test_each_check_fails_alone(change: dict, failing: list[str]) -> None:
    facts = dataclasses.replace(GOOD, **change)
    assert [name for name, passed in verdicts(facts).items() if not passed] == failing


def test_refusal_names_every_failed_check_with_its_reason() -> None:
    missing = Initramfs("initramfs-tools", "/var/tmp/x.img", False, "its /init has no `mountfs /usr`: it never mounts /usr")
    facts = dataclasses.replace(GOOD, initramfs=missing, package_managers=("pacman: /var/lib/pacman/db.lck exists",))
    message = refusal(preflight_checks(facts)) or ""
    assert message.startswith("preflight refused the /usr move, nothing was changed: ")
    assert ("initramfs: /usr is a separate filesystem (/dev/vda2) and must be mounted by the initramfs; checked "
            "initramfs-tools (/var/tmp/x.img): its /init has no `mountfs /usr`") in message
    assert "package_manager: a package manager is running: pacman: /var/lib/pacman/db.lck exists" in message
    assert "space" not in message


def test_failed_units_and_crashed_services() -> None:
    assert parse_failed_units("foo.service loaded failed failed Foo\nbar.mount loaded failed failed Bar\n") == (
        "foo.service", "bar.mount")
    assert parse_failed_units("") == ()
    assert parse_rc_crashed(" sshd\n\n cron \n") == ("sshd", "cron")


def test_manifest_differences() -> None:
    recorded = {"/bin/ls": "sha256:a", "/bin/sh": "sha256:b", "/lib/x": "dangling"}
    assert manifest_differences(recorded, dict(recorded)) == []
    assert manifest_differences(recorded, {"/bin/ls": "sha256:c", "/lib/x": "dangling"}) == [
        "/bin/ls: expected sha256:a, found sha256:c", "/bin/sh: expected sha256:b, found missing"]


def test_verification_problems() -> None:
    clean = Verification(3, (), 2, (), "systemd", "running", ())
    assert clean.problems == []
    dirty = Verification(3, ("/bin/ls: expected a, found b",), 2, ("/usr/bin/x: /lib/ld.so",), "systemd",
                         "degraded", ("foo.service",))
    assert [problem.split(" ")[1] for problem in dirty.problems] == ["old", "binaries", "reports"]
