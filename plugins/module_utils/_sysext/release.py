# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""systemd-sysext's release data: load_env_file_pairs, strverscmp_improved and extension-release matching."""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError
from ansible_collections.immutable.root.plugins.module_utils._linux.fs import read_regular

# src/basic/string-util.h, src/basic/escape.h
_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_COMMENTS = "#;"
_SHELL_NEED_ESCAPE = "\"\\`$"
# Runs of characters that do not change the parser's state, consumed in one step (linear time in C speed).
_VALUE_RUN = re.compile(r"[^ \t\n\r\\]+")
_SINGLE_QUOTED_RUN = re.compile(r"[^']+")
_DOUBLE_QUOTED_RUN = re.compile(r'[^"\\]+')
_COMMENT_RUN = re.compile(r"[^\\\n\r]+")

# What this collection accepts as an image name: systemd-sysext lists names like "a:b" or "bad name"
# as valid, and then the overlay mount fails (measured with systemd 252), so the modules are stricter.
# Where an extension keeps its release file: RELEASE_DIR/extension-release.NAME (extension-release.c).
RELEASE_DIR = "usr/lib/extension-release.d"
MODULE_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MODULE_NAME = re.compile(MODULE_NAME_PATTERN)

# src/basic/architecture.c (uname machine -> systemd architecture name), all architectures at once.
_ARCHITECTURE_BY_MACHINE = {
    "aarch64": "arm64", "aarch64_be": "arm64-be",
    "armv8l": "arm", "armv8b": "arm-be", "armv7ml": "arm", "armv7mb": "arm-be", "armv7l": "arm", "armv7b": "arm-be",
    "armv6l": "arm", "armv6b": "arm-be", "armv5tl": "arm", "armv5tel": "arm", "armv5tejl": "arm",
    "armv5tejb": "arm-be", "armv5teb": "arm-be", "armv5tb": "arm-be", "armv4tl": "arm", "armv4tb": "arm-be",
    "armv4l": "arm", "armv4b": "arm-be",
    "alpha": "alpha", "arc": "arc", "arceb": "arc-be", "crisv32": "cris",
    "x86_64": "x86-64", "i686": "x86", "i586": "x86", "i486": "x86", "i386": "x86",
    "ia64": "ia64", "parisc64": "parisc64", "parisc": "parisc", "loongarch64": "loongarch64", "m68k": "m68k",
    "mips64": "mips64", "mips": "mips", "nios2": "nios2",
    "ppc64le": "ppc64-le", "ppc64": "ppc64", "ppcle": "ppc-le", "ppc": "ppc",
    "riscv64": "riscv64", "riscv32": "riscv32",
    "s390x": "s390x", "s390": "s390", "sh5": "sh64", "sh4a": "sh", "sh4": "sh", "sh3": "sh", "sh2a": "sh", "sh2": "sh",
    "sparc64": "sparc64", "sparc": "sparc", "tilegx": "tilegx",
}
ARCHITECTURES = frozenset(_ARCHITECTURE_BY_MACHINE.values()) | {"mips-le", "mips64-le"}

SCOPES = ("system", "initrd", "portable")
_DEFAULT_SCOPES = ("system", "portable")


class SysextError(ImmutableRootError):
    """systemd-sysext would fail, or did something other than what was planned."""


class ReleaseSyntaxError(ImmutableRootError):
    """A release file systemd would reject as a whole (invalid UTF-8)."""


# A release file is a few hundred bytes; the cap keeps a hostile one (or /dev/zero behind a name) from
# exhausting memory or time.
MAX_RELEASE_BYTES = 1 << 20


def read_release_bytes(path: str, limit: int = MAX_RELEASE_BYTES) -> bytes:
    """The bytes of the regular release file path, at most limit of them; OSError for anything else (a FIFO or a
    device behind a release file name must neither block nor be read without end)."""
    return read_regular(path, limit)


def parse_env_pairs(data: bytes, source: str = "release file") -> dict[str, str]:
    """Parse os-release / extension-release data exactly like systemd's load_env_file_pairs().

    A port of parse_env_file_internal() (src/basic/env-file.c, 252): lines without '=' are dropped,
    quotes may be mixed inside one value, a later assignment replaces an earlier one, and the data
    ends at the first NUL byte. Invalid UTF-8 in a key or value fails the whole file, as in systemd.
    """
    text = data.split(b"\0", 1)[0].decode("latin-1")  # one char per byte, like the C loop
    pairs: dict[str, str] = {}
    state = "PRE_KEY"
    key: list[str] = []
    value: list[str] | None = None
    last_key_ws: int | None = None
    last_value_ws: int | None = None

    def push() -> None:
        name = "".join(key[:last_key_ws] if last_key_ws is not None else key)
        pairs[_utf8(name, source)] = _utf8("".join(value or ()), source)

    index, length = 0, len(text)
    while index < length:
        char = text[index]
        index += 1
        if state == "PRE_KEY":
            if char in _COMMENTS:
                state = "COMMENT"
            elif char not in _WHITESPACE:
                state, key, last_key_ws = "KEY", [char], None
        elif state == "KEY":
            if char in _NEWLINE:
                state, key = "PRE_KEY", []
            elif char == "=":
                state, last_value_ws = "PRE_VALUE", None
            else:
                if char not in _WHITESPACE:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key.append(char)
        elif state == "PRE_VALUE":
            if char in _NEWLINE:
                push()
                state, key, value = "PRE_KEY", [], None
            elif char == "'":
                state = "SINGLE_QUOTE_VALUE"
            elif char == '"':
                state = "DOUBLE_QUOTE_VALUE"
            elif char == "\\":
                state = "VALUE_ESCAPE"
            elif char not in _WHITESPACE:
                state = "VALUE"
                value = _append(value, char)
        elif state == "VALUE":
            if char in _NEWLINE:
                if value is not None and last_value_ws is not None:
                    del value[last_value_ws:]
                push()
                state, key, value = "PRE_KEY", [], None
            elif char == "\\":
                state, last_value_ws = "VALUE_ESCAPE", None
            elif char in _WHITESPACE:
                if last_value_ws is None:
                    last_value_ws = len(value or [])
                value = _append(value, char)
            else:
                # A run of ordinary characters at once (whitespace stays one entry each, so that
                # last_value_ws can cut trailing whitespace off by list index).
                run = _VALUE_RUN.match(text, index)
                last_value_ws = None
                value = _append(value, char + run.group() if run else char)
                index = run.end() if run else index
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if char not in _NEWLINE:  # an escaped newline is eaten entirely
                value = _append(value, char)
        elif state == "SINGLE_QUOTE_VALUE":
            if char == "'":
                state = "PRE_VALUE"
            else:
                run = _SINGLE_QUOTED_RUN.match(text, index)
                value = _append(value, char + run.group() if run else char)
                index = run.end() if run else index
        elif state == "DOUBLE_QUOTE_VALUE":
            if char == '"':
                state = "PRE_VALUE"
            elif char == "\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                run = _DOUBLE_QUOTED_RUN.match(text, index)
                value = _append(value, char + run.group() if run else char)
                index = run.end() if run else index
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            if char in _SHELL_NEED_ESCAPE:
                value = _append(value, char)
            elif char != "\n":  # other characters keep their backslash, as in a shell
                value = _append(_append(value, "\\"), char)
        elif state == "COMMENT":
            if char == "\\":
                state = "COMMENT_ESCAPE"
            elif char in _NEWLINE:
                state = "PRE_KEY"
            else:
                run = _COMMENT_RUN.match(text, index)
                index = run.end() if run else index
        else:  # COMMENT_ESCAPE
            state = "COMMENT"
    if state in ("PRE_VALUE", "VALUE", "VALUE_ESCAPE", "SINGLE_QUOTE_VALUE", "DOUBLE_QUOTE_VALUE",
                 "DOUBLE_QUOTE_VALUE_ESCAPE"):
        if state == "VALUE" and value is not None and last_value_ws is not None:
            del value[last_value_ws:]
        push()
    return pairs


def _append(value: list[str] | None, char: str) -> list[str]:
    # In place: building a new list per character made parsing quadratic (a 100 KB value took 17 s).
    if value is None:
        return [char]
    value.append(char)
    return value


def _utf8(raw: str, source: str) -> str:
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise ReleaseSyntaxError("%s: invalid UTF-8 in %r" % (source, raw))


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_alpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _is_version_char(char: str) -> bool:
    return _is_digit(char) or _is_alpha(char) or char in "~-^."


def strverscmp_improved(left: str, right: str) -> int:
    """Compare two version strings the way systemd sorts extension names (-1, 0 or 1).

    A port of strverscmp_improved() (src/fundamental/string-util-fundamental.c, 252), which implements
    the UAPI version format: '~' sorts before everything (pre-releases), then the end of the string,
    then '-', '^', '.'; numeric segments compare by value and are newer than alphabetic ones; any other
    character separates segments. 'c10' is newer than 'c9'.
    """
    a, b = left + "\0", right + "\0"
    i = j = 0

    def cmp(x: t.Any, y: t.Any) -> int:
        return (x > y) - (x < y)

    while True:
        while a[i] != "\0" and not _is_version_char(a[i]):
            i += 1
        while b[j] != "\0" and not _is_version_char(b[j]):
            j += 1
        if a[i] == "~" or b[j] == "~":
            result = cmp(a[i] != "~", b[j] != "~")
            if result:
                return result
            i += 1
            j += 1
        # Except for '~' segments, the string with more segments is newer: this must follow the '~' check.
        if a[i] == "\0" or b[j] == "\0":
            return cmp(a[i], b[j])
        for prefix in "-^.":
            if a[i] == prefix or b[j] == prefix:
                result = cmp(a[i] != prefix, b[j] != prefix)
                if result:
                    return result
                i += 1
                j += 1
        if _is_digit(a[i]) or _is_digit(b[j]):
            ii, jj = i, j
            while _is_digit(a[ii]):
                ii += 1
            while _is_digit(b[jj]):
                jj += 1
            result = cmp(i != ii, j != jj)
            if result:
                return result
            while a[i] == "0":
                i += 1
            while b[j] == "0":
                j += 1
            result = cmp(ii - i, jj - j) or cmp(a[i:ii], b[j:jj])
        else:
            ii, jj = i, j
            while _is_alpha(a[ii]):
                ii += 1
            while _is_alpha(b[jj]):
                jj += 1
            common = min(ii - i, jj - j)
            result = cmp(a[i:i + common], b[j:j + common]) or cmp(ii - i, jj - j)
        if result:
            return result
        i, j = ii, jj


def version_sorted(names: t.Iterable[str]) -> list[str]:
    """Names in systemd-sysext's order: lowest first, so the last one is the top overlay layer."""
    import functools  # local: keeps the module's import list to what the planners need

    return sorted(names, key=functools.cmp_to_key(strverscmp_improved))


def version_ties(names: t.Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of different names that compare equal: their layer order is up to qsort."""
    ordered = version_sorted(names)
    return [(x, y) for x, y in zip(ordered, ordered[1:]) if strverscmp_improved(x, y) == 0]


def systemd_architecture(machine: str) -> str | None:
    """systemd's name for a uname machine string (x86_64 -> x86-64), None when systemd has none."""
    return _ARCHITECTURE_BY_MACHINE.get(machine)


def systemd_image_name_is_valid(name: str) -> bool:
    """image_name_is_valid() (src/basic/os-util.c, 252): what systemd-sysext accepts as a name at all."""
    if not name or name in (".", "..") or "/" in name or len(name.encode("utf-8", "surrogateescape")) > 255:
        return False
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not name.startswith(".#")


def module_name_problem(name: str) -> str | None:
    """Why this collection refuses an image name, or None when it is fine."""
    if not _MODULE_NAME.match(name):
        return "name %r does not match %s" % (name, MODULE_NAME_PATTERN)
    if len(name) > 255:
        return "name %r is longer than 255 characters" % name
    return None


def parse_boolean(value: str) -> bool | None:
    """parse_boolean() (src/basic/parse-util.c): None when the value is neither."""
    lowered = value.lower()
    if lowered in ("1", "yes", "y", "true", "t", "on"):
        return True
    if lowered in ("0", "no", "n", "false", "f", "off"):
        return False
    return None


@dataclass(frozen=True)
class HostRelease:
    """The fields of the target's os-release that extension matching looks at."""

    os_id: str
    version_id: str = ""
    sysext_level: str = ""

    @classmethod
    def from_pairs(cls, pairs: t.Mapping[str, str]) -> HostRelease:
        return cls(pairs.get("ID", ""), pairs.get("VERSION_ID", ""), pairs.get("SYSEXT_LEVEL", ""))


def extension_release_problem(release: t.Mapping[str, str], host: HostRelease, architecture: str,
                              scope: str = "system") -> str | None:
    """None when systemd-sysext would merge an image with this extension-release data, else the reason.

    Follows extension_release_validate() (src/shared/extension-release.c, 252) step by step: scope,
    architecture, ID, ID=_any, host without version data, SYSEXT_LEVEL, VERSION_ID. The reasons are
    systemd's own debug messages, which 252 prints only with SYSTEMD_LOG_LEVEL=debug.
    """
    if not release:
        return "carries no extension-release data"
    scopes = release["SYSEXT_SCOPE"].split() if "SYSEXT_SCOPE" in release else list(_DEFAULT_SCOPES)
    if scope not in scopes:
        return "is not suitable for scope %s (SYSEXT_SCOPE=%r)" % (scope, release.get("SYSEXT_SCOPE", ""))
    arch = release.get("ARCHITECTURE", "")
    if arch and arch != "_any" and arch != architecture:
        return "is for architecture '%s', but deployed on top of '%s'" % (arch, architecture)
    ext_id = release.get("ID", "")
    if not ext_id:
        return "does not contain ID in extension-release but requested to match '%s' or be '_any'" % host.os_id
    if ext_id == "_any":
        return None
    if ext_id != host.os_id:
        return "is for OS '%s', but deployed on top of '%s'" % (ext_id, host.os_id)
    if not host.version_id and not host.sysext_level:
        return None  # a rolling release (Arch): the ID is enough
    ext_level = release.get("SYSEXT_LEVEL", "")
    if host.sysext_level and ext_level:
        if ext_level != host.sysext_level:
            return "is for sysext API level '%s', but running on sysext API level '%s'" % (ext_level, host.sysext_level)
    elif host.version_id:
        ext_version = release.get("VERSION_ID", "")
        if not ext_version:
            return "does not contain VERSION_ID in extension-release but requested to match '%s'" % host.version_id
        if ext_version != host.version_id:
            return "is for OS version '%s', but deployed on top of '%s'" % (ext_version, host.version_id)
    return None
