# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The architecture an ELF binary is built for, in systemd's names (src/basic/architecture.h)."""

from __future__ import annotations

import struct

ELF_MAGIC = b"\x7fELF"
HEADER_BYTES = 20  # e_ident (16), e_type (2), e_machine (2)
# (e_machine, 64-bit, big-endian) -> systemd architecture; e_machine numbers from elf.h.
_BY_MACHINE = {
    (62, True, False): "x86-64", (3, False, False): "x86",
    (183, True, False): "arm64", (183, True, True): "arm64-be", (40, False, False): "arm", (40, False, True): "arm-be",
    (243, True, False): "riscv64", (243, False, False): "riscv32",
    (21, True, True): "ppc64", (21, True, False): "ppc64-le", (20, False, True): "ppc", (20, False, False): "ppc-le",
    (22, True, True): "s390x", (22, False, True): "s390",
    (258, True, False): "loongarch64",
    (8, True, True): "mips64", (8, True, False): "mips64-le", (8, False, True): "mips", (8, False, False): "mips-le",
    (43, True, True): "sparc64", (2, False, True): "sparc", (4, False, True): "m68k", (50, True, False): "ia64",
    (36902, True, False): "alpha",
}


def elf_architecture(header: bytes) -> str | None:
    """systemd's architecture name for the ELF file starting with header; None when it is no ELF we know."""
    if len(header) < HEADER_BYTES or header[:4] != ELF_MAGIC or header[4] not in (1, 2) or header[5] not in (1, 2):
        return None
    is_64, big_endian = header[4] == 2, header[5] == 2
    (machine,) = struct.unpack(">H" if big_endian else "<H", header[18:20])
    return _BY_MACHINE.get((machine, is_64, big_endian))


PT_INTERP = 3


def elf_interpreter(data: bytes) -> str | None:
    """The PT_INTERP path of the ELF file whose first bytes are data; None for a static or non-ELF file, or when
    the program headers or the path lie beyond data."""
    if len(data) < 52 or data[:4] != ELF_MAGIC or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    is_64, order = data[4] == 2, ">" if data[5] == 2 else "<"
    if is_64:
        if len(data) < 64:
            return None
        phoff, = struct.unpack(order + "Q", data[32:40])
        phentsize, phnum = struct.unpack(order + "HH", data[54:58])
        layout = order + "IIQQQQ"  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
    else:
        phoff, = struct.unpack(order + "I", data[28:32])
        phentsize, phnum = struct.unpack(order + "HH", data[42:46])
        layout = order + "IIIII"  # p_type, p_offset, p_vaddr, p_paddr, p_filesz
    size = struct.calcsize(layout)
    for index in range(phnum):
        start = phoff + index * phentsize
        if phentsize < size or start + size > len(data):
            return None
        fields = struct.unpack(layout, data[start:start + size])
        if fields[0] != PT_INTERP:
            continue
        offset, filesz = (fields[2], fields[5]) if is_64 else (fields[1], fields[4])
        if offset + filesz > len(data):
            return None
        return data[offset:offset + filesz].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return None
