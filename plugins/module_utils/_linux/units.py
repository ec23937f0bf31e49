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
    for index, byte in enumerate(trimmed.encode("utf-8", "surrogateescape")):
        char = chr(byte)
        if char == "/":
            escaped.append("-")
        elif char in _UNESCAPED and not (index == 0 and char == "."):
            escaped.append(char)
        else:
            escaped.append("\\x%02x" % byte)
    return "".join(escaped)


def escape_specifiers(value: str) -> str:
    """A value for a unit file setting that expands specifiers (What=, Where=): "%" is written "%%"."""
    return value.replace("%", "%%")


def unit_value_problem(value: str) -> str | None:
    """Why value cannot be written as a unit file setting byte for byte, or None when it can.

    systemd reads settings line by line, joins a line ending in a backslash with the next, strips
    whitespace around values and ignores assignments that are not valid UTF-8.
    """
    if any(char in value for char in "\n\r"):
        return "contains a newline or carriage return, which a unit file setting cannot hold"
    if value.endswith("\\"):
        return "ends in a backslash, which systemd reads as a line continuation"
    if value != value.strip(" \t\v\f"):
        return "begins or ends with whitespace, which systemd strips from a setting"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8, which systemd ignores in a unit file"
    return None


def mount_unit_name(path: str) -> str:
    """The name systemd requires for a mount unit of mountpoint path."""
    return escape_path(path) + ".mount"
