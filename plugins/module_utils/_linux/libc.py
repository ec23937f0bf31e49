# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one handle on the C library, and the one way a call through it reports failure (OSError with errno).

CDLL(None) is the C library the interpreter is already linked against: ctypes.util.find_library would run
`ldconfig -p` (two processes, milliseconds) on every call and can name a different libc than the one loaded.
"""

from __future__ import annotations

import ctypes
import errno
import os
import typing as t

_handle: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _handle
    if _handle is None:
        _handle = ctypes.CDLL(None, use_errno=True)
    return _handle


def function(name: str) -> t.Any:
    """The C library's function name, or None when this C library does not have it."""
    return getattr(libc(), name, None)


def check(result: int, what: str, filename: str | None = None) -> int:
    """result of a libc call that returns -1 on failure; raise OSError with errno and what failed."""
    if result < 0:
        code = ctypes.get_errno() or errno.EIO
        raise OSError(code, "%s: %s" % (what, os.strerror(code)), filename)
    return result


def call(name: str, *args: t.Any, what: str | None = None, filename: str | None = None) -> int:
    """Call a C library function; ENOSYS when the library does not have it, OSError when it fails."""
    found = function(name)
    if found is None:
        raise OSError(errno.ENOSYS, "%s: not in this C library" % (what or name), filename)
    return check(int(found(*args)), what or name, filename)


def syscall(number: int, *args: t.Any, what: str, filename: str | None = None) -> int:
    """syscall(2) for calls the C library has no wrapper for."""
    found = libc().syscall
    found.restype = ctypes.c_long
    return check(int(found(ctypes.c_long(number), *args)), what, filename)
