# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Path validation for module parameters, and symlink resolution confined to a tree."""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError

_MAX_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)


def validate_path(param: str, value: object, must_exist: bool = False, directory: bool = False) -> str:
    """Return value when it is an absolute, normalised path without NUL or '..'; else raise ParameterError.

    Normalised means what posixpath.normpath returns: no '//', no '.', no trailing '/'. Paths are
    refused rather than rewritten, so the path a user wrote is the path the module acts on.
    """
    if not isinstance(value, str) or value == "":
        raise ParameterError(param, "must be a non-empty path, got %r" % (value,))
    if "\0" in value:
        raise ParameterError(param, "must not contain a NUL byte")
    if not value.startswith("/"):
        raise ParameterError(param, "must be an absolute path, got %r" % value)
    if ".." in value.split("/"):
        raise ParameterError(param, "must not contain '..', got %r" % value)
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise ParameterError(param, "must be normalised (no '//', '.' or trailing '/'): %r, did you mean %r?"
                             % (value, posixpath.normpath(value).replace("//", "/")))
    if must_exist and not os.path.lexists(value):
        raise ParameterError(param, "%s does not exist" % value)
    if directory and not os.path.isdir(value):
        raise ParameterError(param, "%s is not a directory" % value)
    return value


def resolve_in_root(root: str, relative: str) -> str:
    """Resolve relative (a path inside root) following symlinks as if root were '/'.

    Absolute link targets restart at root and '..' never climbs above it, the way chroot(2) and
    systemd's chase(..., CHASE_PREFIX_ROOT) treat them. Missing components are kept as they are.
    """
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise OSError("too many levels of symbolic links under %s: %s" % (root, relative))
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def open_nofollow(path: str, flags: int = os.O_PATH) -> int:
    """A descriptor of the absolute path, opened one component at a time with O_NOFOLLOW.

    A symlink anywhere in path fails with ELOOP (or ENOTDIR), so the object the descriptor names is the one
    a check by name saw, even if someone swaps a component for a symlink afterwards.
    """
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, "not an absolute path", path)
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = [part for part in path.split("/") if part]
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                child = os.open(part, (flags if last else os.O_PATH | os.O_DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, "/" + "/".join(parts[:index + 1]))
            os.close(fd)
            fd = child
        if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
            # O_PATH|O_NOFOLLOW opens a final symlink itself instead of failing.
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    except BaseException:
        os.close(fd)
        raise
    return fd
