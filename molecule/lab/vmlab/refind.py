# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""rEFInd for the UEFI image: the files (unpacked from Debian's .deb, never installed), refind.conf, the ESP.

Never `apt-get install refind` on a host: its debconf default install_to_esp=true puts rEFInd on the host's ESP.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vmlab.cache import locked
from vmlab.errors import LabError
from vmlab.run import require_tools, run

REFIND_SUBDIR = Path("usr/share/refind/refind")
LOADER = "refind_x64.efi"
BTRFS_DRIVER = Path("drivers_x64/btrfs_x64.efi")
REPO_ROOT = Path(__file__).resolve().parents[3]


def _usable(directory: Path) -> bool:
    return (directory / LOADER).is_file() and (directory / BTRFS_DRIVER).is_file()


def ensure_refind(cache: Path) -> Path:
    """Directory holding refind_x64.efi and drivers_x64/: from $IMMUTABLE_LAB_REFIND_DIR, `make setup`'s
    <repo>/.cache/refind, or unpacked from `apt-get download refind` into the lab cache."""
    candidates = [Path(os.environ["IMMUTABLE_LAB_REFIND_DIR"])] if os.environ.get("IMMUTABLE_LAB_REFIND_DIR") else []
    candidates += [REPO_ROOT / ".cache" / "refind" / "root" / REFIND_SUBDIR, cache / "refind" / "root" / REFIND_SUBDIR]
    for directory in candidates:
        if _usable(directory):
            return directory
    target = cache / "refind"
    with locked(cache / "locks" / "refind.lock", "the rEFInd download", timeout=600):
        if _usable(target / "root" / REFIND_SUBDIR):
            return target / "root" / REFIND_SUBDIR
        require_tools(["apt-get", "dpkg-deb"])
        run(["rm", "-rf", str(target)], timeout=60)
        (target / "deb").mkdir(parents=True)
        run(["sh", "-c", 'cd "$1" && apt-get download -qq refind', "sh", str(target / "deb")], timeout=600,
            what="apt-get download refind")
        debs = sorted((target / "deb").glob("refind_*.deb"))
        if len(debs) != 1:
            raise LabError(f"apt-get download refind left {len(debs)} packages in {target / 'deb'}")
        run(["dpkg-deb", "-x", str(debs[0]), str(target / "root")], timeout=120, what="dpkg-deb -x refind")
    if not _usable(target / "root" / REFIND_SUBDIR):
        raise LabError(f"the refind package has no {LOADER} or {BTRFS_DRIVER} under {target / 'root' / REFIND_SUBDIR}")
    return target / "root" / REFIND_SUBDIR


def digest(directory: Path) -> str:
    hasher = hashlib.sha256()
    for relative in (Path(LOADER), BTRFS_DRIVER):
        hasher.update((directory / relative).read_bytes())
    return hasher.hexdigest()


def refind_conf(kernel_args: str) -> str:
    """A static configuration booting subvolume @ of the partition named ROOT.

    `scanfor manual`: rEFInd's automatic scan ignores symlinks such as Debian's /vmlinuz (rEFInd drivers.html),
    while manual entries follow them through the btrfs driver.  `timeout -1` boots the default at once.
    """
    return f"""timeout -1
textonly
scanfor manual
default_selection 1

menuentry "Debian bookworm (lab, subvolume @)" {{
    volume  ROOT
    loader  /@/vmlinuz
    initrd  /@/initrd.img
    options "{kernel_args}"
}}
"""


def make_esp(esp: Path, size_mib: int, refind_dir: Path, conf: str) -> None:
    """A FAT32 image with rEFInd at the removable-media path, so OVMF needs no boot entry in NVRAM.

    Built with mtools: this machine's kernel has no vfat driver.
    """
    require_tools(["mkfs.vfat", "mmd", "mcopy"])
    run(["mkfs.vfat", "-C", "-F", "32", "-n", "EFI", str(esp), str(size_mib * 1024)], timeout=60, what="mkfs.vfat")
    conf_file = esp.with_name("refind.conf")
    conf_file.write_text(conf)
    image = ["-i", str(esp)]
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", *image, "::/EFI", "::/EFI/BOOT", "::/EFI/BOOT/drivers_x64"], timeout=60, env=env)
    run(["mcopy", *image, str(refind_dir / LOADER), "::/EFI/BOOT/BOOTX64.EFI"], timeout=60, env=env)
    run(["mcopy", *image, str(refind_dir / BTRFS_DRIVER), "::/EFI/BOOT/drivers_x64/btrfs_x64.efi"], timeout=60, env=env)
    run(["mcopy", *image, str(conf_file), "::/EFI/BOOT/refind.conf"], timeout=60, env=env)
    conf_file.unlink()
