# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import errno
import os
import pathlib
import platform
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux import fs, libc


def without(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """A C library that lacks names (glibc < 2.28 has no renameat2, musl builds may lack syncfs)."""
    real = libc.function
    monkeypatch.setattr(libc, "function", lambda name: None if name in names else real(name))


def test_exchange_swaps_a_directory_and_a_symlink(tmp_path: pathlib.Path) -> None:
    (tmp_path / "dir").mkdir()
    os.symlink("elsewhere", tmp_path / "link")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fs.exchange(fd, "dir", fd, "link")
    finally:
        os.close(fd)
    assert os.readlink(tmp_path / "dir") == "elsewhere" and (tmp_path / "link").is_dir()


def test_renameat2_without_a_libc_wrapper_uses_the_syscall(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a C library without renameat2 raised AttributeError, which escaped main as a traceback."""
    if platform.machine() not in fs.RENAMEAT2_SYSCALL:
        pytest.skip("no syscall number known here")
    without(monkeypatch, "renameat2")
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    fs.renameat2(fs.AT_FDCWD, str(tmp_path / "a"), fs.AT_FDCWD, str(tmp_path / "b"), fs.RENAME_EXCHANGE)
    assert (tmp_path / "a").read_text() == "b" and (tmp_path / "b").read_text() == "a"


def test_renameat2_nowhere_is_an_os_error(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without(monkeypatch, "renameat2")
    monkeypatch.setattr(fs.platform, "machine", lambda: "unknown-cpu")
    with pytest.raises(OSError) as caught:
        fs.renameat2(fs.AT_FDCWD, str(tmp_path / "a"), fs.AT_FDCWD, str(tmp_path / "b"), fs.RENAME_NOREPLACE)
    assert caught.value.errno == errno.ENOSYS


def test_rename_noreplace_refuses_to_replace_also_without_the_flag(tmp_path: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            fs.rename_noreplace(fd, "a", "b")

        def no_flag(*_args: t.Any) -> None:
            raise OSError(errno.EINVAL, "no RENAME_NOREPLACE here")
        monkeypatch.setattr(fs, "renameat2", no_flag)
        with pytest.raises(FileExistsError):
            fs.rename_noreplace(fd, "a", "b")
        fs.rename_noreplace(fd, "a", "c")
    finally:
        os.close(fd)
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "c").read_text() == "a"


def test_syncfs_has_one_failure_behaviour(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: one wrapper fell back to os.sync() and ignored the result; failure is an OSError everywhere."""
    fs.syncfs_path(str(tmp_path))
    with pytest.raises(OSError) as caught:
        fs.syncfs(9999, "a closed descriptor")
    assert caught.value.errno == errno.EBADF and "syncfs(a closed descriptor)" in str(caught.value)
    without(monkeypatch, "syncfs")
    with pytest.raises(OSError) as missing:
        fs.syncfs_path(str(tmp_path))
    assert missing.value.errno == errno.ENOSYS


def test_libc_is_loaded_once() -> None:
    assert libc.libc() is libc.libc()
