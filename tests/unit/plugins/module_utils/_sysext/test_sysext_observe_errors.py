# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Regression: OSErrors other than "it is not there" were read as "not merged", "empty" or "no xattrs"."""

from __future__ import annotations

import errno
import pathlib
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import parse_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._sysext import inspect as sysext_inspect
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_observe import hierarchy_state
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import SysextError


def overlay_table(root: pathlib.Path) -> t.Any:
    return parse_mountinfo(
        "1 0 8:1 / / rw - ext4 /dev/sda rw\n"
        "2 1 0:50 / %s/usr ro shared:7 - overlay sysext ro,lowerdir=/a\n" % root)


def test_an_overlay_without_markers_is_not_merged(tmp_path: pathlib.Path) -> None:
    (tmp_path / "usr").mkdir()
    assert not hierarchy_state("/usr", str(tmp_path), overlay_table(tmp_path)).merged


def test_unreadable_merge_markers_are_an_error_not_unmerged(tmp_path: pathlib.Path) -> None:
    (tmp_path / "usr/.systemd-sysext/dev").mkdir(parents=True)  # EISDIR when read: neither absent nor a marker
    with pytest.raises(SysextError, match="merge markers"):
        hierarchy_state("/usr", str(tmp_path), overlay_table(tmp_path))


def test_has_content_is_false_only_when_the_hierarchy_is_not_there(tmp_path: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert not sysext_inspect.has_content(str(tmp_path), "usr")
    (tmp_path / "usr").write_text("a file")
    assert not sysext_inspect.has_content(str(tmp_path), "usr")
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt/x").write_text("x")
    assert sysext_inspect.has_content(str(tmp_path), "opt")

    def broken(_path: str) -> t.Any:
        raise OSError(errno.EIO, "I/O error")
    monkeypatch.setattr(sysext_inspect.os, "scandir", broken)
    with pytest.raises(OSError):
        sysext_inspect.has_content(str(tmp_path), "opt")


def test_a_release_file_whose_xattr_cannot_be_read_is_an_error(tmp_path: pathlib.Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "usr/lib/extension-release.d"
    directory.mkdir(parents=True)
    (directory / "extension-release.other").write_text("ID=debian\n")
    assert sysext_inspect.read_release(str(tmp_path), "tool")[0] is None  # ENODATA: not relaxed

    def broken(*_args: t.Any, **_kwargs: t.Any) -> bytes:
        raise OSError(errno.EIO, "I/O error")
    monkeypatch.setattr(sysext_inspect.os, "getxattr", broken)
    with pytest.raises(OSError):
        sysext_inspect.read_release(str(tmp_path), "tool")
