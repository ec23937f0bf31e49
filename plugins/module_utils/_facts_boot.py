# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""immutability_facts: boot loader entries, parsed purely from configuration texts.

rEFInd: refind.conf `menuentry "Title" { volume …; loader …; initrd …; options "…"; disabled }` stanzas
(rEFInd's configfile.html, "Creating Manual Boot Stanzas"). systemd-boot: loader/entries/*.conf
(the Boot Loader Specification's type #1 entries: title, linux, initrd, options).
"""

from __future__ import annotations

import shlex
import typing as t

# Where rEFInd looks for its configuration, relative to the ESP, in the order refind-install writes them.
REFIND_CONFIGS = ("EFI/refind/refind.conf", "EFI/BOOT/refind.conf", "EFI/boot/refind.conf")
SYSTEMD_BOOT_ENTRIES = "loader/entries"
ESP_MOUNTPOINTS = ("/efi", "/boot/efi", "/boot")
# GPT partition type of an EFI System Partition (UEFI specification, 5.3.3).
ESP_PARTTYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
_REFIND_KEYS = {"volume": "volume", "loader": "loader", "initrd": "initrd", "options": "options", "icon": "icon",
                "ostype": "ostype"}


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def parse_refind_conf(text: str, config: str) -> list[dict[str, t.Any]]:
    """The manual boot stanzas of a refind.conf; submenuentry blocks are kept as the stanza's `submenus`."""
    entries: list[dict[str, t.Any]] = []
    current: dict[str, t.Any] | None = None
    sub: dict[str, t.Any] | None = None
    for raw in text.splitlines():
        words = _words(raw.strip())
        if not words:
            continue
        keyword = words[0].lower()
        if current is None:
            if keyword == "menuentry":
                title = " ".join(word for word in words[1:] if word != "{")
                current = {"loader_type": "refind", "config": config, "title": title, "volume": None, "loader": None,
                           "initrd": None, "options": None, "disabled": False, "submenus": []}
            continue
        if keyword == "}":
            if sub is not None:
                current["submenus"].append(sub)
                sub = None
            else:
                entries.append(current)
                current = None
            continue
        target = sub if sub is not None else current
        if keyword == "submenuentry":
            sub = {"title": " ".join(word for word in words[1:] if word != "{"), "loader": None, "initrd": None,
                   "options": None, "disabled": False}
        elif keyword == "disabled":
            target["disabled"] = True
        elif keyword in _REFIND_KEYS:
            target[_REFIND_KEYS[keyword]] = " ".join(words[1:]) if len(words) > 1 else ""
    return entries


def parse_boot_loader_entry(text: str, path: str) -> dict[str, t.Any]:
    """A Boot Loader Specification type #1 entry (KEY VALUE lines; `initrd` and `options` may repeat)."""
    entry: dict[str, t.Any] = {"loader_type": "systemd-boot", "config": path, "title": None, "volume": None,
                               "loader": None, "initrd": None, "options": None, "disabled": False, "submenus": []}
    initrds, options = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _sep, value = line.partition(" ")
        value = value.strip()
        if key == "title":
            entry["title"] = value
        elif key in ("linux", "efi", "uki"):
            entry["loader"] = value
        elif key == "initrd":
            initrds.append(value)
        elif key == "options":
            options.append(value)
    entry["initrd"] = " ".join(initrds) or None
    entry["options"] = " ".join(options) or None
    return entry


def esp_candidates(mounts: t.Sequence[t.Tuple[str, str]]) -> list[str]:
    """Mountpoints of mounted vfat filesystems at the usual ESP places, most specific first."""
    vfat = {mountpoint for mountpoint, fstype in mounts if fstype in ("vfat", "msdos")}
    return [place for place in ESP_MOUNTPOINTS if place in vfat]


def esp_partitions(lsblk: t.Mapping[str, t.Any]) -> list[str]:
    """Device paths of ESP partitions in `lsblk --json --output PATH,PARTTYPE,FSTYPE` output."""
    found: list[str] = []

    def walk(devices: t.Sequence[t.Mapping[str, t.Any]]) -> None:
        for device in devices:
            if str(device.get("parttype") or "").lower() == ESP_PARTTYPE and device.get("path"):
                found.append(str(device["path"]))
            walk(device.get("children") or [])

    walk(lsblk.get("blockdevices") or [])
    return found
