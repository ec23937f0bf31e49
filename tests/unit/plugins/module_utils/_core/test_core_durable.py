# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core import durable as _durable
from ansible_collections.immutable.root.plugins.module_utils._core.durable import (
    durable_remove, durable_replace, durable_symlink,
)


def test_replace_writes_mode_and_leaves_no_temporary(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "fstab"
    target.write_text("old\n")
    durable_replace(str(target), b"new\n", 0o600)
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o7777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["fstab"]


def test_replace_order_is_write_fsync_rename_fsync_directory(tmp_path: pathlib.Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir("/proc/self/fd/%d" % fd) else "fsync-file")
        real_fsync(fd)

    def rename(source: str, destination: str, **dir_fds: int) -> None:
        calls.append("rename")
        real_rename(source, destination, **dir_fds)

    monkeypatch.setattr(_durable.os, "fsync", fsync)
    monkeypatch.setattr(_durable.os, "rename", rename)
    durable_replace(str(tmp_path / "f"), b"x")
    assert calls == ["fsync-file", "rename", "fsync-dir"]


def test_replace_failure_keeps_the_old_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f"
    target.write_text("old")

    def broken_rename(source: str, destination: str, **dir_fds: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_durable.os, "rename", broken_rename)
    with pytest.raises(OSError):
        durable_replace(str(target), b"new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_replace_does_not_follow_a_planted_temporary_symlink(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    os.symlink(outside, tmp_path / (".f.%d.0.tmp" % os.getpid()))
    durable_replace(str(tmp_path / "f"), b"data")
    assert outside.read_text() == "keep" and (tmp_path / "f").read_bytes() == b"data"


def test_symlink_replace_and_remove(tmp_path: pathlib.Path) -> None:
    link = tmp_path / "current"
    durable_symlink("links/a", str(link))
    durable_symlink("links/b", str(link))
    assert os.readlink(link) == "links/b"
    assert durable_remove(str(link)) is True
    assert durable_remove(str(link)) is False
    assert os.listdir(tmp_path) == []
