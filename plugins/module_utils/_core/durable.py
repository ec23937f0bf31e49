# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash-safe file replacement: after a power cut the file is the old or the new version, never torn."""

from __future__ import annotations

import os
import random
import string


def fsync_directory(path: str) -> None:
    """Make a rename or unlink inside directory path durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write data to a unique temporary file beside path, fsync it, rename it over path, fsync the directory."""
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        durable_replace_at(directory, os.path.basename(path), data, mode)
    finally:
        os.close(directory)


def durable_replace_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """durable_replace for the entry name of the directory dir_fd: nothing is looked up by path again."""
    for attempt in range(100):
        temporary = ".%s.%d.%d.tmp" % (name, os.getpid(), attempt)
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode,
                         dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError("no free temporary name beside %s" % name)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask may have narrowed the mode given to open
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(dir_fd)


def durable_remove(path: str) -> bool:
    """Remove path if it exists and make the removal durable; return whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_directory(os.path.dirname(path) or ".")
    return True


def unique_symlink(target: str, directory: str, prefix: str) -> str:
    """Create a symlink -> target with a fresh name prefix<pid>.<random> in directory and return its path.

    symlink(2) fails with EEXIST rather than replacing anything, so the name that succeeds is ours alone.
    """
    letters = random.SystemRandom()
    for _attempt in range(100):
        suffix = "".join(letters.choice(string.ascii_letters) for _letter in range(8))
        path = os.path.join(directory, "%s%d.%s" % (prefix, os.getpid(), suffix))
        try:
            os.symlink(target, path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary name in %s" % directory)


def durable_symlink(target: str, path: str) -> None:
    """Create or replace the symlink path -> target atomically (temporary link + rename) and durably."""
    directory = os.path.dirname(path) or "."
    temporary = unique_symlink(target, directory, ".%s." % os.path.basename(path))
    try:
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    fsync_directory(directory)
