# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading squashfs and erofs superblock magics without blkid: literal headers, not the module's constants."""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import read_head, superblock_type


def head(*placed: tuple[int, bytes], size: int = 4096) -> bytes:
    data = bytearray(size)
    for offset, value in placed:
        data[offset:offset + len(value)] = value
    return bytes(data)


@pytest.mark.parametrize("data,expected", [
    (head((0, b"hsqs")), "squashfs"),
    (head((1024, bytes.fromhex("e2e1f5e0"))), "erofs"),
    (head((0, b"sqsh")), None),  # big-endian squashfs: systemd's kernels mount little-endian only
    (head((1080, bytes.fromhex("53ef"))), None),  # ext4: blkid decides
    (head((0, b"hsqs"), (512, b"EFI PART")), None),  # a GPT header: blkid decides
    (b"hsq", None),
    (b"", None),
    (head((1024, bytes.fromhex("e2e1f5")), size=1027), None),
])
def test_superblock_type(data: bytes, expected: str | None) -> None:
    assert superblock_type(data) == expected


def test_read_head_reads_regular_files_only(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "a.raw"
    image.write_bytes(b"hsqs" + bytes(5000))
    assert read_head(str(image))[:4] == b"hsqs" and len(read_head(str(image))) == 1028
    fifo = tmp_path / "fifo.raw"
    os.mkfifo(fifo)
    assert read_head(str(fifo)) == b""  # and it did not block
    link = tmp_path / "link.raw"
    link.symlink_to(image)
    assert read_head(str(link)) == b""
    assert read_head(str(tmp_path / "missing.raw")) == b""
