# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import errno
import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import open_nofollow, resolve_in_root, validate_path


@pytest.mark.parametrize("value", ["/", "/var/lib/pacman", "/with space", "/a.b/c-d"])
def test_valid_paths(value: str) -> None:
    assert validate_path("path", value) == value


@pytest.mark.parametrize("value, problem", [
    ("relative/dir", "absolute"),
    ("", "non-empty"),
    (None, "non-empty"),
    (["/x"], "non-empty"),
    ("/a/../b", ".."),
    ("/a/..", ".."),
    ("/a//b", "normalised"),
    ("//a", "normalised"),
    ("/a/", "normalised"),
    ("/a/./b", "normalised"),
    ("/a\0b", "NUL"),
])
def test_invalid_paths_name_the_parameter(value: object, problem: str) -> None:
    with pytest.raises(ParameterError) as error:
        validate_path("root", value)
    assert error.value.msg.startswith("root: ") and problem in error.value.msg and error.value.param == "root"


def test_existence_checks(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("")
    assert validate_path("path", str(tmp_path), must_exist=True, directory=True) == str(tmp_path)
    with pytest.raises(ParameterError, match="does not exist"):
        validate_path("path", str(tmp_path / "missing"), must_exist=True)
    with pytest.raises(ParameterError, match="not a directory"):
        validate_path("path", str(tmp_path / "file"), directory=True)


def test_resolve_in_root_confines_symlinks(tmp_path: pathlib.Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("/usr/lib", tmp_path / "abs")
    os.symlink("../../../../..", tmp_path / "usr/lib/up")
    os.symlink("loop", tmp_path / "loop")
    assert resolve_in_root(str(tmp_path), "lib/x") == str(tmp_path / "usr/lib/x")
    assert resolve_in_root(str(tmp_path), "abs/x") == str(tmp_path / "usr/lib/x")
    assert resolve_in_root(str(tmp_path), "usr/lib/up/etc") == str(tmp_path / "etc")
    assert resolve_in_root(str(tmp_path), "/../../x") == str(tmp_path / "x")
    with pytest.raises(OSError, match="too many levels"):
        resolve_in_root(str(tmp_path), "loop")


def test_open_nofollow_refuses_a_symlink_anywhere_in_the_path(tmp_path: pathlib.Path) -> None:
    """Regression: ro_bind checked realpath and then bound by name, so a symlink planted after the check won."""
    (tmp_path / "real/dir").mkdir(parents=True)
    os.symlink("real", tmp_path / "link")
    os.symlink("dir", tmp_path / "real/last")
    fd = open_nofollow(str(tmp_path / "real/dir"))
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "real/dir"))
    finally:
        os.close(fd)
    for planted in ("link/dir", "real/last"):
        with pytest.raises(OSError) as caught:
            open_nofollow(str(tmp_path / planted))
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR), planted
