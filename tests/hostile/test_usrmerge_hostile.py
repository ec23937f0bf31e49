# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks with a mount point inside a directory it would move: refused before anything moves."""

from __future__ import annotations

import os
import pathlib
import typing as t

import pytest

from support.modules import direct_module
from support.namespace import MountNamespace
from support.usrmerge import tree_manifest


def usrmerge(ns: MountNamespace, args: dict, check: bool = False) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "usrmerge_symlinks", args, check=check)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    assert "Traceback" not in stderr
    return result


def split_tree(root: pathlib.Path) -> pathlib.Path:
    for directory in ("bin/mnt", "sbin", "lib/modules", "usr/bin", "usr/sbin", "usr/lib", "etc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "bin/tool").write_text("#!/bin/sh\n")
    (root / "lib/libx.so").write_text("lib\n")
    (root / "usr/bin/other").write_text("#!/bin/sh\n")
    return root


@pytest.mark.parametrize("mountpoint", ["bin/mnt", "lib/modules", "bin"])
def test_mount_inside_a_moved_directory_is_refused_before_anything_moves(ns: MountNamespace, tmp_path: pathlib.Path,
                                                                         mountpoint: str) -> None:
    root = split_tree(tmp_path / "root")
    ns.run(["mount", "-t", "tmpfs", "tmpfs", str(root / mountpoint)] if mountpoint != "bin"
           else ["mount", "--bind", str(root / "bin"), str(root / "bin")])
    before = tree_manifest(root)
    for check in (True, False):
        result = usrmerge(ns, {"root": str(root)}, check=check)
        assert result.get("failed"), result
        assert "/%s is a mount point" % mountpoint in result["msg"] and "nothing was changed" in result["msg"], result
        assert not result["changed"] and result["actions"] == []
    assert tree_manifest(root) == before
    assert not [name for name in os.listdir(root) + os.listdir(root / "usr") if name.startswith(".usrmerge")]

    ns.run(["umount", str(root / mountpoint)])
    merged = usrmerge(ns, {"root": str(root)})
    assert not merged.get("failed") and merged["changed"], merged.get("msg")
    assert os.readlink(root / "bin") == "usr/bin" and (root / "usr/bin/tool").is_file()
