# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading image trees the way systemd-sysext does (release file lookup, content, diff impact), on small trees."""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext import inspect as _sysext_inspect
from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import (
    file_impact, has_content, inspect_tree, read_release,
)

RELEASE_DIR = "usr/lib/extension-release.d"


def write(tree: pathlib.Path, relative: str, text: str = "x") -> pathlib.Path:
    path = tree / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def relaxed(path: pathlib.Path, value: bytes = b"false") -> None:
    try:
        os.setxattr(path, "user.extension-release.strict", value)
    except OSError as exc:
        pytest.skip("this filesystem has no user xattrs: %s" % exc)


def test_release_named_after_the_image(tmp_path: pathlib.Path) -> None:
    write(tmp_path, RELEASE_DIR + "/extension-release.tool", "ID=debian\nVERSION_ID=12\n")
    assert read_release(str(tmp_path), "tool") == ({"ID": "debian", "VERSION_ID": "12"},
                                                   RELEASE_DIR + "/extension-release.tool", None)


def test_release_through_an_absolute_symlink_stays_in_the_image(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "usr/share/real-release", "ID=_any\n")
    (tmp_path / RELEASE_DIR).mkdir(parents=True)
    os.symlink("/usr/share/real-release", tmp_path / RELEASE_DIR / "extension-release.tool")
    assert read_release(str(tmp_path), "tool")[0] == {"ID": "_any"}


def test_missing_release(tmp_path: pathlib.Path) -> None:
    assert read_release(str(tmp_path), "tool") == (None, None, "no %s/extension-release.tool" % RELEASE_DIR)
    write(tmp_path, RELEASE_DIR + "/extension-release.other")
    release, path, problem = read_release(str(tmp_path), "tool")
    assert release is None and path is None and "no other extension-release file marked" in str(problem)


def test_renamed_image_with_relaxed_release_file(tmp_path: pathlib.Path) -> None:
    relaxed(write(tmp_path, RELEASE_DIR + "/extension-release.other", "ID=debian\n"))
    write(tmp_path, RELEASE_DIR + "/not-a-release-file")
    strict = write(tmp_path, RELEASE_DIR + "/extension-release.strict")
    relaxed(strict, b"true")
    os.symlink("extension-release.other", tmp_path / RELEASE_DIR / "extension-release.link")
    assert read_release(str(tmp_path), "renamed") == ({"ID": "debian"}, RELEASE_DIR + "/extension-release.other", None)
    relaxed(write(tmp_path, RELEASE_DIR + "/extension-release.second", "ID=debian\n"), b"0")
    release, _path, problem = read_release(str(tmp_path), "renamed")
    assert release is None and "more than one file marked" in str(problem) and "extension-release.second" in str(problem)


def test_unreadable_release(tmp_path: pathlib.Path) -> None:
    write(tmp_path, RELEASE_DIR + "/extension-release.bad").write_bytes(b"ID=\xff\n")
    release, path, problem = read_release(str(tmp_path), "bad")
    assert release is None and path == RELEASE_DIR + "/extension-release.bad" and "invalid UTF-8" in str(problem)
    (tmp_path / RELEASE_DIR / "extension-release.dir").mkdir()
    assert "cannot be read" in str(read_release(str(tmp_path), "dir")[2])


def test_inspect_tree(tmp_path: pathlib.Path) -> None:
    write(tmp_path, RELEASE_DIR + "/extension-release.tool", "ID=debian\n")
    write(tmp_path, "etc/os-release", "ID=debian\n")
    (tmp_path / "opt").mkdir()
    write(tmp_path, "srv")
    content = inspect_tree(str(tmp_path), "tool", ("/usr", "/opt", "/srv"))
    assert content.release == {"ID": "debian"} and content.hierarchies == ("/usr",)
    assert content.not_directories == ("/srv",)
    assert content.os_tree and not content.os_release
    os.symlink("../../etc/os-release", tmp_path / "usr/lib/os-release")
    assert inspect_tree(str(tmp_path), "tool", ("/usr",)).os_release
    assert not has_content(str(tmp_path), "/opt") and not has_content(str(tmp_path), "/missing")


def test_file_impact(tmp_path: pathlib.Path) -> None:
    base, image = tmp_path / "base", tmp_path / "image"
    write(base, "usr/bin/base-tool")
    write(base, "usr/share/doc/readme")
    write(base, "usr/lib/real/libx.so")
    os.symlink("lib", base / "usr/lib64")
    write(image, "usr/bin/base-tool")  # hides the base file
    write(image, "usr/bin/new-tool")
    write(image, "usr/share/doc")  # a file over a base directory hides it
    write(image, "usr/lib64/liby.so")  # a directory over a base symlink replaces it
    write(image, "usr/lib64/deeper/libz.so")
    write(image, "opt/thing/data")
    impact = file_impact(str(image), str(base), ("/usr", "/opt", "/srv"))
    assert impact.shadows == ["/usr/bin/base-tool", "/usr/lib64", "/usr/share/doc"]
    assert impact.adds == ["/usr/bin/new-tool", "/usr/lib64/deeper/libz.so", "/usr/lib64/liby.so",
                           "/opt/thing/data"]
    assert (impact.adds_count, impact.shadows_count) == (4, 3)


def test_file_impact_lists_are_bounded_counts_are_not(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sysext_inspect, "IMPACT_LIMIT", 3)
    for number in range(5):
        write(tmp_path / "image", "usr/share/many/%d" % number)
        write(tmp_path / "image", "usr/share/old/%d" % number)
        write(tmp_path / "base", "usr/share/old/%d" % number)
    impact = file_impact(str(tmp_path / "image"), str(tmp_path / "base"), ("/usr",))
    assert len(impact.adds) == 3 and impact.adds_count == 5
    assert len(impact.shadows) == 3 and impact.shadows_count == 5
