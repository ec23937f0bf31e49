# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""chroot_command on a real btrfs loop image holding a minbase generation: the seed's chroot (dev, proc, sys and
a common bound), the mounts never seen outside the module's process, undone after success and failure."""

from __future__ import annotations

import os
import pathlib
import typing as t

import pytest

from support.btrfs import Disk, Pool, minbase_tree, mountinfo, ok, shared_pool
from support.modules import direct_module

M = "chroot_command"


@pytest.fixture(scope="module")
def disk() -> t.Iterator[Disk]:
    pool: Pool = shared_pool()
    disk = Disk.create(pool, "2G", "chroot")
    top = disk.mount()
    ok({"top": top, "state": "initialized", "name": "gen-a", "source": str(minbase_tree(pool)),
        "commons": ["@var@log", "@home"]})
    yield disk
    disk.discard()


def chroot(args: dict[str, t.Any], check: bool = False) -> tuple[int, dict[str, t.Any]]:
    rc, result, stderr = direct_module(None, M, args, check=check)
    assert result is not None, stderr
    return rc, result


def test_the_seeds_chroot_runs_and_leaves_nothing_mounted(disk: Disk) -> None:
    top = str(disk.top)
    before = mountinfo()
    args = {"device": disk.loop_device(), "subvolume": "/snapshots/gen-a/@",
            "subvolumes": [{"subvolume": "/commons/@var@log", "target": "/var/log"}],
            "command": "echo upgraded > /var/log/probe && test -c /dev/null && test -d /sys/kernel "
                       "&& grep -q ' /var/log ' /proc/self/mounts && touch /etc/inside && cat /etc/debian_version"}
    rc, check = chroot(args, check=True)
    assert rc == 0 and not check["changed"] and check["rc"] is None
    assert [mount["target"] for mount in check["mounts"]] == ["/", "/dev", "/proc", "/sys", "/var/log"]
    assert mountinfo() == before and not pathlib.Path(top, "commons/@var@log/probe").exists()
    rc, result = chroot(args)
    assert rc == 0 and result["changed"] and result["rc"] == 0, result
    assert result["stdout"].strip()[:2].isdigit(), "ran in the Debian tree"
    assert pathlib.Path(top, "commons/@var@log/probe").read_text() == "upgraded\n", "the common was bound"
    assert pathlib.Path(top, "snapshots/gen-a/@/etc/inside").exists(), "the generation was the root"
    assert not pathlib.Path(top, "snapshots/gen-a/@/var/log/probe").exists()
    assert mountinfo() == before, "no mount outlives the module"
    assert [action["action"] for action in result["actions"]][-2:] == ["run", "unmount"]


def test_a_failing_command_fails_and_still_undoes_every_mount(disk: Disk) -> None:
    before = mountinfo()
    rc, result = chroot({"device": disk.loop_device(), "subvolume": "/snapshots/gen-a/@",
                         "argv": ["/bin/sh", "-c", "echo broken >&2; exit 3"]})
    assert rc == 1 and result["failed"] and result["rc"] == 3
    assert result["msg"] == "the command exited 3 in the chroot (every mount was undone): broken"
    assert mountinfo() == before


def test_a_symlinked_target_is_refused(disk: Disk, tmp_path: pathlib.Path) -> None:
    root = pathlib.Path(disk.top, "snapshots/gen-a/@")
    (root / "escape").symlink_to(str(tmp_path))
    try:
        before = mountinfo()
        rc, result = chroot({"device": disk.loop_device(), "subvolume": "/snapshots/gen-a/@",
                             "binds": [{"source": "/etc", "target": "/escape/etc"}], "argv": ["true"]})
        assert rc == 1 and "/escape/etc in the chroot is a symlink" in result["msg"], result
        assert mountinfo() == before and os.listdir(tmp_path) == []
    finally:
        (root / "escape").unlink()


@pytest.mark.parametrize("args, message", [
    ({"root": "/", "argv": ["true"]}, "root: is / itself"),
    ({"root": "relative", "argv": ["true"]}, "root: must be an absolute path"),
    ({"device": "/dev/null", "subvolume": "snap", "argv": ["true"]}, "subvolume: must be an absolute path"),
    ({"root": "/tmp", "argv": []}, "argv: must not be empty"),
    ({"root": "/tmp", "argv": ["true"], "binds": [{"source": "/a", "target": "../x"}]}, "binds: each target"),
])
def test_bad_input_names_the_parameter(args: dict[str, t.Any], message: str) -> None:
    before = mountinfo()
    rc, result = chroot(args)
    assert rc == 1 and result["msg"].startswith(message), result
    assert mountinfo() == before
