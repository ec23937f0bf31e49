# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import platform
import struct

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.elf import elf_architecture, elf_interpreter


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


def elf_with_interpreter(interp: bytes, is_64: bool, big_endian: bool) -> bytes:
    order = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([2 if is_64 else 1, 2 if big_endian else 1, 1]) + bytes(9)
    if is_64:
        ehsize, phentsize = 64, 56
        header = ident + struct.pack(order + "HHIQQQIHHHHHH", 2, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 0, 0, 0)
        load = struct.pack(order + "IIQQQQQQ", 1, 5, 0, 0, 0, 0, 0, 0)
        offset = ehsize + 2 * phentsize
        interp_ph = struct.pack(order + "IIQQQQQQ", 3, 4, offset, 0, 0, len(interp), len(interp), 1)
    else:
        ehsize, phentsize = 52, 32
        header = ident + struct.pack(order + "HHIIIIIHHHHHH", 2, 3, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 0, 0, 0)
        load = struct.pack(order + "IIIIIIII", 1, 0, 0, 0, 0, 0, 5, 0)
        offset = ehsize + 2 * phentsize
        interp_ph = struct.pack(order + "IIIIIIII", 3, offset, 0, 0, len(interp), len(interp), 4, 1)
    return header + load + interp_ph + interp


@pytest.mark.parametrize("is_64, big_endian", [(True, False), (False, False), (True, True), (False, True)])
def test_interpreter_of_constructed_elf(is_64: bool, big_endian: bool) -> None:
    data = elf_with_interpreter(b"/lib/ld-linux.so.2\0", is_64, big_endian)
    assert elf_interpreter(data) == "/lib/ld-linux.so.2"
    assert elf_interpreter(data[:-5]) is None  # the path lies beyond what was read


def test_no_interpreter() -> None:
    data = elf_with_interpreter(b"/lib/ld\0", True, False)
    static = data.replace(struct.pack("<I", 3), struct.pack("<I", 6), 1)
    assert elf_interpreter(static) is None
    assert elf_interpreter(b"#!/bin/sh\n" + bytes(60)) is None
    assert elf_interpreter(data[:40]) is None


def test_this_machines_shell_names_its_loader() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the expected loader below is x86_64's")
    with open("/bin/sh", "rb") as handle:
        assert elf_interpreter(handle.read(65536)) == "/lib64/ld-linux-x86-64.so.2"
