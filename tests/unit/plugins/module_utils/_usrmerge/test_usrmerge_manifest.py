# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The manifest's pure half: original paths and their values from a snapshot, what must hold afterwards."""

from __future__ import annotations

import errno
import os
import pathlib
import stat

import pytest

from ansible_collections.immutable.root.plugins.module_utils._usrmerge import manifest
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import Node, Plan, describe
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import (
    before, differences, expected, kind_of,
)

CAT = Node("file", 0o755, digest="c" * 64, ino=10, dev=1)
USR_CAT = Node("file", 0o755, digest="u" * 64, ino=20, dev=1)
LINK = Node("link", 0o777, target="cat", resolved=describe("file", 0o755, 0, 0, "c" * 64), resolved_path="bin/cat")
TREES = {"bin": Node("dir", 0o755, ino=1, dev=1, children={"cat": CAT, "kitty": LINK})}


def plan_with(overrides: dict) -> Plan:
    return Plan(layout=None, ops=(), conflicts=(), overrides=overrides, cleanup=(),  # type: ignore[arg-type]
                remove_skip_flag=False, needed_bytes=0, needed_inodes=0, counts={}, actions=())


def test_before_lists_every_original_path_with_what_it_resolves_to() -> None:
    manifest = before(TREES, {"usr/bin/cat": USR_CAT})
    assert manifest == {
        "bin": ("dir mode=0755 owner=0:0", "bin"),
        "bin/cat": (describe("file", 0o755, 0, 0, "c" * 64), "bin/cat"),
        "bin/kitty": (describe("file", 0o755, 0, 0, "c" * 64), "bin/cat"),
        "usr/bin/cat": (describe("file", 0o755, 0, 0, "u" * 64), "usr/bin/cat"),
    }


def test_expected_follows_overrides_also_through_links() -> None:
    manifest = before(TREES, {"usr/bin/cat": USR_CAT})
    kept_usr = expected(plan_with({"bin/cat": "usr cat"}), manifest)
    assert kept_usr["bin/cat"] == kept_usr["bin/kitty"] == "usr cat", "a link to the replaced file reads the new one"
    assert kept_usr["usr/bin/cat"] == manifest["usr/bin/cat"][0]
    assert expected(plan_with({}), manifest) == {path: found for path, (found, _physical) in manifest.items()}


def test_differences_name_each_path() -> None:
    assert differences({"bin/cat": "a", "bin/ls": "b"}, {"bin/cat": "a", "bin/ls": "c"}) == [
        "/bin/ls: expected b, found c"]
    assert differences({"bin/x": "a"}, {}) == ["/bin/x: expected a, found nothing"]


def test_kind_of_every_file_type() -> None:
    kinds = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link", stat.S_IFIFO: "fifo",
             stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFSOCK: "socket"}
    assert {mode: kind_of(mode | 0o644) for mode in kinds} == kinds


@pytest.mark.parametrize("code, expected", [(errno.ENOTSUP, ""), (errno.EIO, None)])
def test_xattr_errors_other_than_unsupported_are_not_no_xattrs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                               code: int, expected: str | None) -> None:
    """Regression: any listxattr failure read as "no xattrs", so a manifest could miss a difference."""
    def failing(_fd: int) -> list[str]:
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(manifest.os, "listxattr", failing)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        if expected is None:
            with pytest.raises(OSError):
                manifest.xattr_digest(fd)
        else:
            assert manifest.xattr_digest(fd) == expected
    finally:
        os.close(fd)
