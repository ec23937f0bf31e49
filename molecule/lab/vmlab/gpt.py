# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPT disk layouts, MiB-aligned: the UEFI image (ESP, then the btrfs partition ROOT) and the separate-/usr image
(ext4 partitions ROOT and USR)."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

SECTOR = 512
MIB_SECTORS = (1 << 20) // SECTOR
COPY_CHUNK = 4 << 20


@dataclasses.dataclass(frozen=True)
class GptLayout:
    esp_start: int
    esp_end: int
    root_start: int
    root_end: int
    total_sectors: int

    @property
    def esp_offset(self) -> int:
        return self.esp_start * SECTOR

    @property
    def root_offset(self) -> int:
        return self.root_start * SECTOR

    @property
    def root_bytes(self) -> int:
        return (self.root_end - self.root_start + 1) * SECTOR

    @property
    def total_bytes(self) -> int:
        return self.total_sectors * SECTOR


def gpt_layout(esp_mib: int, root_mib: int) -> GptLayout:
    """Sectors of each partition; 1 MiB in front (primary GPT) and 1 MiB behind (the backup GPT needs 33 sectors)."""
    if esp_mib < 33 or root_mib < 128:
        raise ValueError(f"ESP must be >= 33 MiB (FAT32) and ROOT >= 128 MiB, not {esp_mib} and {root_mib}")
    esp_start = MIB_SECTORS
    esp_end = esp_start + esp_mib * MIB_SECTORS - 1
    root_start = esp_end + 1
    root_end = root_start + root_mib * MIB_SECTORS - 1
    return GptLayout(esp_start, esp_end, root_start, root_end, root_end + 1 + MIB_SECTORS)


def sgdisk_argv(layout: GptLayout, disk: Path) -> list[str]:
    # The names matter: rEFInd's `volume ROOT` and the kernel's root=PARTLABEL=ROOT both match the GPT name.
    return [
        "sgdisk", "--clear",
        f"--new=1:{layout.esp_start}:{layout.esp_end}", "--typecode=1:ef00", "--change-name=1:EFI",
        f"--new=2:{layout.root_start}:{layout.root_end}", "--typecode=2:8300", "--change-name=2:ROOT",
        str(disk),
    ]


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    typecode: str
    start: int
    end: int

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def size_bytes(self) -> int:
        return (self.end - self.start + 1) * SECTOR


def linux_partitions(sizes_mib: list[tuple[str, int]]) -> tuple[list[Partition], int]:
    """Consecutive Linux partitions (name, MiB) after 1 MiB for the primary GPT; returns them and the disk's sectors."""
    parts: list[Partition] = []
    start = MIB_SECTORS
    for name, mib in sizes_mib:
        if mib < 16:
            raise ValueError(f"partition {name} must be >= 16 MiB, not {mib}")
        end = start + mib * MIB_SECTORS - 1
        parts.append(Partition(name, "8300", start, end))
        start = end + 1
    return parts, start + MIB_SECTORS


def sgdisk_partitions_argv(parts: list[Partition], disk: Path) -> list[str]:
    argv = ["sgdisk", "--clear"]
    for number, part in enumerate(parts, 1):
        argv += [f"--new={number}:{part.start}:{part.end}", f"--typecode={number}:{part.typecode}",
                 f"--change-name={number}:{part.name}"]
    return argv + [str(disk)]


def copy_sparse_into(source: Path, disk: Path, offset: int) -> None:
    """Write `source` into `disk` at `offset`, copying only its data extents so the disk stays sparse."""
    with source.open("rb") as src, disk.open("r+b") as dst:
        size = os.fstat(src.fileno()).st_size
        position = 0
        while position < size:
            try:
                data = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole remains
                raise
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(offset + data)
            remaining = hole - data
            while remaining > 0:
                chunk = src.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
            position = hole
        dst.flush()
        os.fsync(dst.fileno())
