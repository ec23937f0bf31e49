# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""systemd unit naming (systemd.unit(5) "String Escaping for Inclusion in Unit Names")."""

from __future__ import annotations

import string

_UNESCAPED = frozenset(string.ascii_letters + string.digits + ":_.")


def escape_path(path: str) -> str:
    """What `systemd-escape --path` prints: '/' becomes '-', other unsafe bytes become \\xNN."""
    trimmed = "/".join(part for part in path.split("/") if part)
    if not trimmed:
        return "-"
    escaped = []
    for index, byte in enumerate(trimmed.encode("utf-8")):
        char = chr(byte)
        if char == "/":
            escaped.append("-")
        elif char in _UNESCAPED and not (index == 0 and char == "."):
            escaped.append(char)
        else:
            escaped.append("\\x%02x" % byte)
    return "".join(escaped)


def mount_unit_name(path: str) -> str:
    """The name systemd requires for a mount unit of mountpoint path."""
    return escape_path(path) + ".mount"
