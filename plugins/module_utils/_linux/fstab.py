# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure fstab(5) handling: parse entries, render one, and rewrite a file's text line by line."""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import unescape


# libmount splits fields at C isspace() characters; str.split() would also split at U+00A0, U+2028 and
# friends, so a path with a non-breaking space would never match its own entry.
_FIELD_SEPARATOR = re.compile(r"[ \t\n\v\f\r]+")


def escape(path: str) -> str:
    """A path as an fstab field: every character the field splitter breaks at, and the backslash, as \\ooo
    (libmount unescapes any octal escape; the kernel's mountinfo escaping covers only space, tab and newline)."""
    return "".join("\\%03o" % ord(char) if char in " \t\n\v\f\r\\" else char for char in path)


def fields_of(line: str) -> list[str]:
    """The whitespace-separated fields of an fstab line, split at ASCII whitespace only."""
    return [field for field in _FIELD_SEPARATOR.split(line) if field]


@dataclass(frozen=True)
class FstabEntry:
    line_number: int  # 1-based
    raw: str
    spec: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]
    freq: int
    passno: int


def parse_fstab(text: str) -> tuple[FstabEntry, ...]:
    """Entries of an fstab; comment, blank and malformed lines are skipped (mount(8) ignores them too)."""
    entries = []
    for number, raw in enumerate(lines_of(text), start=1):
        fields = fields_of(raw)
        if not fields or fields[0].startswith("#") or len(fields) < 4:
            continue
        try:
            freq = int(fields[4]) if len(fields) > 4 else 0
            passno = int(fields[5]) if len(fields) > 5 else 0
        except ValueError:
            continue
        entries.append(FstabEntry(
            line_number=number, raw=raw, spec=unescape(fields[0]), mountpoint=unescape(fields[1]),
            fstype=fields[2], options=tuple(fields[3].split(",")), freq=freq, passno=passno,
        ))
    return tuple(entries)


def render_entry(spec: str, mountpoint: str, fstype: str, options: t.Sequence[str], freq: int = 0,
                 passno: int = 0) -> str:
    return "%s %s %s %s %d %d" % (escape(spec), escape(mountpoint), fstype, ",".join(options), freq, passno)


def same_entry(entry: FstabEntry, line: str) -> bool:
    """Whether entry means the same as line (whitespace and field escaping aside)."""
    (parsed,) = parse_fstab(line)
    return (entry.spec, entry.mountpoint, entry.fstype, entry.options, entry.freq, entry.passno) == (
        parsed.spec, parsed.mountpoint, parsed.fstype, parsed.options, parsed.freq, parsed.passno)


def lines_of(text: str) -> list[str]:
    """The lines of text, split at "\n" only; a final "\n" ends the last line rather than starting one."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def rewrite(text: str, replace: t.Mapping[int, str | None], append: t.Sequence[str] = ()) -> str:
    """text with the given 1-based lines replaced (None deletes them) and lines appended at the end.

    Untouched lines keep every byte, "\r" included; every line ends with "\n", the last one too.
    """
    lines = []
    for number, line in enumerate(lines_of(text), start=1):
        new = replace.get(number, line)
        if new is not None:
            lines.append(new)
    lines.extend(append)
    if not lines:
        return ""
    return "\n".join(lines) + "\n"
