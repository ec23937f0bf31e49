# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Boot entries and ESP discovery for immutability_facts."""

from __future__ import annotations

import json

from ansible_collections.immutable.root.plugins.module_utils._facts_boot import (
    esp_candidates, esp_partitions, parse_boot_loader_entry, parse_refind_conf,
)

# The seed's static configuration, as the btrfs-uefi lab image writes it, plus a disabled stanza with a submenu.
REFIND_CONF = """\
timeout 5
scanfor manual
# menuentry "commented out" {
menuentry "Alpine current" {
    volume ROOT
    loader /current/0/@/vmlinuz
    initrd /current/0/@/initrd.img
    options "root=PARTLABEL=ROOT rootflags=subvol=/current/0/@ ro"
    submenuentry "single user" {
        options "root=PARTLABEL=ROOT rootflags=subvol=/current/0/@ ro single"
    }
}
menuentry "Alpine previous" {
    volume ROOT
    loader /current/1/@/vmlinuz
    disabled
}
"""


def test_refind_stanzas() -> None:
    first, second = parse_refind_conf(REFIND_CONF, "EFI/BOOT/refind.conf")
    assert first["title"] == "Alpine current" and first["volume"] == "ROOT"
    assert first["loader"] == "/current/0/@/vmlinuz" and first["initrd"] == "/current/0/@/initrd.img"
    assert first["options"] == "root=PARTLABEL=ROOT rootflags=subvol=/current/0/@ ro"
    assert first["submenus"] == [{"title": "single user", "loader": None, "initrd": None, "disabled": False,
                                  "options": "root=PARTLABEL=ROOT rootflags=subvol=/current/0/@ ro single"}]
    assert second["disabled"] and second["initrd"] is None and second["config"] == "EFI/BOOT/refind.conf"


def test_refind_conf_of_the_lab_image() -> None:
    # What molecule/lab/vmlab/refind.py puts on the btrfs-uefi image's ESP (aligned keywords, a default).
    text = """timeout -1
textonly
scanfor manual
default_selection 1

menuentry "Debian bookworm (lab, subvolume @)" {
    volume  ROOT
    loader  /@/vmlinuz
    initrd  /@/initrd.img
    options "root=PARTLABEL=ROOT rootflags=subvol=@ rw console=ttyS0"
}
"""
    (entry,) = parse_refind_conf(text, "EFI/BOOT/refind.conf")
    assert (entry["title"], entry["volume"], entry["loader"], entry["initrd"]) == (
        "Debian bookworm (lab, subvolume @)", "ROOT", "/@/vmlinuz", "/@/initrd.img")
    assert entry["options"] == "root=PARTLABEL=ROOT rootflags=subvol=@ rw console=ttyS0"


def test_unbalanced_quotes_do_not_crash() -> None:
    (entry,) = parse_refind_conf('menuentry "x {\n  options "broken\n}\n', "c")
    assert entry["options"] is not None


def test_boot_loader_specification_entry() -> None:
    entry = parse_boot_loader_entry("title Debian\nlinux /vmlinuz\ninitrd /ucode.img\ninitrd /initrd.img\n"
                                    "options root=/dev/vda\noptions ro\n# options no\n", "loader/entries/a.conf")
    assert (entry["title"], entry["loader"], entry["initrd"], entry["options"]) == (
        "Debian", "/vmlinuz", "/ucode.img /initrd.img", "root=/dev/vda ro")
    assert parse_boot_loader_entry("", "e")["initrd"] is None


def test_esp_places() -> None:
    assert esp_candidates([("/", "ext4"), ("/boot", "vfat"), ("/boot/efi", "vfat")]) == ["/boot/efi", "/boot"]
    assert esp_candidates([("/efi", "ext4")]) == []


def test_esp_partitions_from_lsblk() -> None:
    listing = json.loads("""{"blockdevices": [{"path": "/dev/vda", "parttype": null, "fstype": null, "children": [
        {"path": "/dev/vda1", "parttype": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "fstype": "vfat"},
        {"path": "/dev/vda2", "parttype": "0fc63daf-8483-4772-8e79-3d69d8477de4", "fstype": "btrfs"}]}]}""")
    assert esp_partitions(listing) == ["/dev/vda1"]
    assert esp_partitions({}) == []
