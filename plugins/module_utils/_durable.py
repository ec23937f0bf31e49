# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash-safe file replacement: after a power cut the file is the old or the new version, never torn.

AnsibleModule.atomic_move renames without fsync, so a crash can leave an empty file behind.
"""

from __future__ import annotations

import os


def fsync_directory(path: str) -> None:
    """Make a rename or unlink inside directory path durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write data to a unique temporary file beside path, fsync it, rename it over path, fsync the directory."""
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    for attempt in range(100):
        temporary = os.path.join(directory, ".%s.%d.%d.tmp" % (base, os.getpid(), attempt))
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError("no free temporary name beside %s" % path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask may have narrowed the mode given to open
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def durable_remove(path: str) -> bool:
    """Remove path if it exists and make the removal durable; return whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_directory(os.path.dirname(path) or ".")
    return True


def durable_symlink(target: str, path: str) -> None:
    """Create or replace the symlink path -> target atomically (temporary link + rename) and durably."""
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, ".%s.%d.link.tmp" % (os.path.basename(path), os.getpid()))
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    try:
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    fsync_directory(directory)
