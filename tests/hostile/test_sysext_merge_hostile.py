# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge with release files that are FIFOs, devices or huge: a verdict, never a hang."""

from __future__ import annotations

import os
import pathlib
import stat
import typing as t

import pytest

from support.modules import direct_module
from support.namespace import MountNamespace
from support.sysext import make_extension


def merge(ns: MountNamespace, root: pathlib.Path, check: bool) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "sysext_merge", {"root": str(root)}, check=check, timeout=120)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    assert "Traceback" not in stderr
    return result


@pytest.mark.parametrize("kind", ["fifo", "zero", "huge"])
def test_hostile_release_files_get_a_verdict_without_hanging(sxns: MountNamespace, root: pathlib.Path,
                                                             kind: str) -> None:
    extension = make_extension(root / "var/lib/extensions/odd", "odd", release=None,
                               files={"usr/share/odd/data": "odd\n"})
    release = extension / "usr/lib/extension-release.d/extension-release.odd"
    release.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(release)
    elif kind == "zero":
        os.mknod(release, stat.S_IFCHR | 0o644, os.makedev(1, 5))
    else:
        release.write_bytes(b"ID=debian\nA=" + b"x" * (2 << 20) + b"\n")
    for check in (True, False):
        result = merge(sxns, root, check)
        found = {item["name"]: item for item in result.get("extensions", [])}
        assert "odd" in found, result
        assert found["odd"]["verdict"] != "merge", found["odd"]
        assert "cannot be read" in (found["odd"]["reason"] or ""), found["odd"]
