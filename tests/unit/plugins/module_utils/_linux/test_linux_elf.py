# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import platform
import struct

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.elf import elf_architecture


def header(machine: int, is_64: bool, big_endian: bool) -> bytes:
    ident = b"\x7fELF" + bytes([2 if is_64 else 1, 2 if big_endian else 1, 1]) + bytes(9)
    return ident + struct.pack(">HH" if big_endian else "<HH", 2, machine)


@pytest.mark.parametrize("machine, is_64, big_endian, expected", [
    (62, True, False, "x86-64"), (3, False, False, "x86"), (183, True, False, "arm64"), (40, False, False, "arm"),
    (243, True, False, "riscv64"), (21, True, False, "ppc64-le"), (22, True, True, "s390x"),
    (258, True, False, "loongarch64"),
    (9999, True, False, None),
])
def test_elf_headers_name_systemd_architectures(machine: int, is_64: bool, big_endian: bool,
                                                expected: str | None) -> None:
    assert elf_architecture(header(machine, is_64, big_endian)) == expected


def test_not_elf_or_short_is_none() -> None:
    assert elf_architecture(b"#!/bin/sh\n" + bytes(20)) is None
    assert elf_architecture(header(62, True, False)[:19]) is None


def test_this_interpreters_shell_is_this_machine() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the expected name below is x86_64's")
    with open("/bin/sh", "rb") as handle:
        assert elf_architecture(handle.read(20)) == "x86-64"
