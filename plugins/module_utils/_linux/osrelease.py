# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""os-release(5) and extension-release parsing: KEY=VALUE lines with shell-style quoting."""

from __future__ import annotations

import re
import shlex
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import resolve_in_root

_NEED_ESCAPE = "\"\\`$"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Where a tree keeps its os-release; /etc wins (os-release(5)).
OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")


class ReleaseFileError(ImmutableRootError):
    """A release file has a line that is not KEY=VALUE."""


def parse_release(text: str, source: str = "release file") -> dict[str, str]:
    """Parse os-release / extension-release text into a dict; raise ReleaseFileError on bad lines."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator or not _KEY.match(key):
            raise ReleaseFileError("%s line %d is not KEY=VALUE: %r" % (source, number, raw))
        unquoted = _unquote(value)
        if unquoted is None:
            raise ReleaseFileError("%s line %d has an unterminated quote: %r" % (source, number, raw))
        values[key] = unquoted
    return values


def _unquote(value: str) -> str | None:
    """Shell-style unquoting as os-release(5) asks for; None when a quote is not closed.

    Inside double quotes a backslash escapes only the characters shells need escaped there
    (systemd's SHELL_NEED_ESCAPE); inside single quotes nothing is special.
    """
    out: list[str] = []
    index = 0
    quote = ""
    while index < len(value):
        char = value[index]
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                out.append(char)
        elif char == "\\" and index + 1 < len(value) and (not quote or value[index + 1] in _NEED_ESCAPE):
            index += 1
            out.append(value[index])
        elif char in "\"'" and not quote:
            quote = char
        elif char == quote:
            quote = ""
        else:
            out.append(char)
        index += 1
    return None if quote else "".join(out)


def render_release(values: t.Mapping[str, str]) -> str:
    """Render KEY=VALUE lines, quoting values that need it, in the given order."""
    lines = []
    for key, value in values.items():
        if not _KEY.match(key):
            raise ReleaseFileError("invalid release key %r" % key)
        lines.append("%s=%s" % (key, shlex.quote(value) if value else '""'))
    return "\n".join(lines) + "\n"


def read_os_release(root: str) -> tuple[str, dict[str, str]] | None:
    """(path, values) of the os-release of the tree at root, or None when it has none."""
    for relative in OS_RELEASE_PATHS:
        # Debian's etc/os-release is a symlink; an absolute target must not escape to the host's file.
        path = resolve_in_root(root, relative)
        try:
            with open(path, encoding="utf-8") as handle:
                return path, parse_release(handle.read(), path)
        except FileNotFoundError:
            continue
    return None
