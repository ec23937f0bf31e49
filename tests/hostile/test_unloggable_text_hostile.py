# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A NUL byte or a lone surrogate in any option: every module names the parameter and touches nothing (syslog's
refusal of a NUL named none; a surrogate crashed the invocation log)."""

from __future__ import annotations

import os
import pathlib
import typing as t

import pytest

from support.modules import direct_module
from support.namespace import MountNamespace


def listing(path: pathlib.Path) -> list[tuple[str, int, int]]:
    found = []
    for current, directories, files in os.walk(path):
        for name in directories + files:
            st = os.lstat(os.path.join(current, name))
            found.append((os.path.relpath(os.path.join(current, name), path), st.st_mode, st.st_size))
    return sorted(found)


# module, its arguments with a NUL somewhere (paths under {tmp}), and the parameter the refusal must name.
CASES: list[tuple[str, dict[str, t.Any], str]] = [
    ("ro_bind", {"path": "{tmp}/lock\0ed"}, "path"),
    ("ro_bind", {"path": "{tmp}/locked", "persist": "fstab", "fstab_path": "{tmp}/fs\0tab"}, "fstab_path"),
    ("sysext_merge", {"state": "merged", "root": "{tmp}/r\0"}, "root"),
    ("sysext_build", {"name": "hello", "sources": ["{tmp}/src", "{tmp}/s\0rc"], "dest": "{tmp}/out"}, "sources[1]"),
    ("sysext_build", {"name": "hel\0lo", "sources": ["{tmp}/src"], "dest": "{tmp}/out"}, "name"),
    ("btrfs_generation", {"state": "present", "top": "{tmp}/top", "name": "g\0en"}, "name"),
    ("usrmerge_symlinks", {"root": "{tmp}/\0root"}, "root"),
    ("immutability_facts", {"root": "{tmp}/\0"}, "root"),
    ("chroot_command", {"root": "{tmp}/root", "argv": ["true", "a\0b"]}, "argv[1]"),
    ("usr_move_check", {"stage": "preflight", "root": "{tmp}/ro\0ot"}, "root"),
]


def substituted(value: t.Any, tmp: str) -> t.Any:
    if isinstance(value, str):
        return value.replace("{tmp}", tmp)
    if isinstance(value, list):
        return [substituted(item, tmp) for item in value]
    return value


@pytest.mark.parametrize("module,args,parameter", CASES, ids=["%s-%s" % (case[0], case[2]) for case in CASES])
def test_a_nul_byte_is_refused_naming_the_parameter(ns: MountNamespace, tmp_path: pathlib.Path, module: str,
                                                    args: dict[str, t.Any], parameter: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "root").mkdir()
    before = listing(tmp_path)
    rc, result, stderr = direct_module(ns, module, {key: substituted(value, str(tmp_path)) for key, value in args.items()})
    assert result is not None and "Traceback" not in stderr, stderr
    assert rc == 1 and result.get("failed") is True
    assert result["msg"] == "%s must not contain a NUL byte" % parameter
    assert not result.get("changed")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("module,args,parameter", [
    ("immutability_facts", {"root": "{tmp}/\ud800"}, "root"),
    ("sysext_build", {"name": "hello", "sources": ["{tmp}/src"], "dest": "{tmp}/out", "release": {"ID": "\udcff"}},
     "release.ID"),
], ids=["immutability_facts-root", "sysext_build-release"])
def test_a_lone_surrogate_is_refused_naming_the_parameter(ns: MountNamespace, tmp_path: pathlib.Path, module: str,
                                                          args: dict[str, t.Any], parameter: str) -> None:
    # JSON can carry "\ud800"; Ansible's invocation log crashed encoding it.
    (tmp_path / "src").mkdir()
    before = listing(tmp_path)
    rc, result, stderr = direct_module(ns, module, {key: substituted(value, str(tmp_path)) for key, value in args.items()})
    assert result is not None and "Traceback" not in stderr, stderr
    assert rc == 1 and result["msg"].startswith("%s must be UTF-8 text (" % parameter), result["msg"]
    assert listing(tmp_path) == before
