# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Copies that keep the holes of sparse files, and the lock that keeps runs on one root apart."""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._usrmerge import execute
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.execute import copy_data, data_extents
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.lock import locked_root
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import UsrMergeError

MIB = 1 << 20


def sparse(path: pathlib.Path) -> bytes:
    with open(path, "wb") as handle:
        handle.truncate(64 * MIB)
        handle.seek(8 * MIB)
        handle.write(b"a" * MIB)
        handle.seek(32 * MIB)
        handle.write(b"b" * 4096)
    return path.read_bytes()


def copied(tmp_path: pathlib.Path) -> tuple[bytes, os.stat_result]:
    content = sparse(tmp_path / "source")
    source = os.open(tmp_path / "source", os.O_RDONLY)
    target = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        copy_data(source, target, len(content))
    finally:
        os.close(source)
        os.close(target)
    assert (tmp_path / "target").read_bytes() == content
    return content, os.stat(tmp_path / "target")


def no_reflink(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_fd: int, _request: int, _arg: int) -> None:
        raise OSError(errno.EXDEV, "no reflink across filesystems")

    monkeypatch.setattr(fcntl, "ioctl", refuse)


def test_data_extents_skip_the_holes(tmp_path: pathlib.Path) -> None:
    sparse(tmp_path / "source")
    fd = os.open(tmp_path / "source", os.O_RDONLY)
    try:
        extents = list(data_extents(fd, 64 * MIB))
        assert sum(end - start for start, end in extents) < 2 * MIB, extents
        assert extents[0][0] <= 8 * MIB < extents[0][1] and extents[-1][1] <= 33 * MIB
        assert list(data_extents(fd, 4 * MIB)) == [], "nothing but a hole below 4 MiB"
    finally:
        os.close(fd)


def test_copy_keeps_the_holes(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_reflink(monkeypatch)
    _content, st = copied(tmp_path)
    assert st.st_size == 64 * MIB and st.st_blocks * 512 < 2 * MIB


def test_copy_keeps_the_holes_without_copy_file_range(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_reflink(monkeypatch)

    def refuse(*_args: int) -> int:
        raise OSError(errno.EXDEV, "across filesystems")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    _content, st = copied(tmp_path)
    assert st.st_size == 64 * MIB and st.st_blocks * 512 < 2 * MIB


def test_copy_without_seek_data_copies_everything(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_reflink(monkeypatch)
    real_lseek = os.lseek

    def lseek(fd: int, offset: int, whence: int) -> int:
        if whence in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "no SEEK_DATA")
        return real_lseek(fd, offset, whence)

    monkeypatch.setattr(execute.os, "lseek", lseek)
    copied(tmp_path)


def test_a_second_lock_waits_and_then_gives_up(tmp_path: pathlib.Path) -> None:
    with locked_root(str(tmp_path), exclusive=True) as warnings:
        assert warnings == []
        with pytest.raises(UsrMergeError, match=r"^root: another usrmerge_symlinks run has held the lock on .* for "
                                                r"0 s; nothing was changed$"):
            with locked_root(str(tmp_path), exclusive=False, timeout=0.3):
                pass
    with locked_root(str(tmp_path), exclusive=False), locked_root(str(tmp_path), exclusive=False, timeout=0):
        pass  # check-mode runs look at the same time


def test_a_filesystem_without_locks_warns(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_fd: int, _operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with locked_root(str(tmp_path), exclusive=True) as warnings:
        assert warnings == ["cannot lock %s (No locks available): a concurrent usrmerge_symlinks run on it is not "
                            "held off" % tmp_path]
    with pytest.raises(UsrMergeError, match="^root: cannot open"):
        with locked_root(str(tmp_path / "absent"), exclusive=True):
            pass
