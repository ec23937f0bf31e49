# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._paths import resolve_in_root, validate_path


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
