# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""chroot_command: the mount plan (order, refusals naming the parameter)."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._chroot.plan import plan_mounts
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError


def test_the_seeds_chroot_in_mount_order() -> None:
    mounts = plan_mounts("/dev/vda2", "/snapshots/N/@", True,
                         [{"subvolume": "/commons/@var@log", "target": "/var/log"},
                          {"subvolume": "/commons/@home", "target": "/home"}],
                         [{"source": "/srv/debs", "target": "/var/lib/debs"}])
    assert [(m.kind, m.source, m.target, m.detail) for m in mounts] == [
        ("root", "/dev/vda2", "/", "subvol=/snapshots/N/@"),
        ("rbind", "/dev", "/dev", ""), ("proc", "proc", "/proc", ""), ("rbind", "/sys", "/sys", ""),
        ("subvolume", "/dev/vda2", "/home", "subvol=/commons/@home"),
        ("subvolume", "/dev/vda2", "/var/log", "subvol=/commons/@var@log"),
        ("rbind", "/srv/debs", "/var/lib/debs", ""),
    ]
    assert mounts[0].as_dict() == {"kind": "root", "source": "/dev/vda2", "target": "/"}


def test_parents_are_mounted_before_children() -> None:
    mounts = plan_mounts(None, None, False, [], [{"source": "/a", "target": "/var/log/x"},
                                                 {"source": "/b", "target": "/var"}])
    assert [mount.target for mount in mounts] == ["/var", "/var/log/x"]


def test_without_api_filesystems_only_what_is_asked() -> None:
    assert [m.as_dict() for m in plan_mounts(None, None, False, [], [])] == []
    assert [m.target for m in plan_mounts(None, None, True, [], [])] == ["/dev", "/proc", "/sys"]


@pytest.mark.parametrize("device, subvolumes, binds, message", [
    (None, [{"subvolume": "/commons/@home", "target": "/home"}], [], "subvolumes: needs device"),
    ("/dev/x", [{"subvolume": "commons/@home", "target": "/home"}], [], "subvolumes: each subvolume is an absolute"),
    ("/dev/x", [{"subvolume": "/c/../x", "target": "/home"}], [], "subvolumes: each subvolume is an absolute"),
    ("/dev/x", [{"subvolume": "/c", "target": "home"}], [], "subvolumes: each target must be an absolute"),
    (None, [], [{"source": "/a", "target": "/x/../../etc"}], "binds: each target must be an absolute"),
    (None, [], [{"source": "/a", "target": "/"}], "binds: each target must be an absolute"),
    (None, [], [{"source": "a", "target": "/x"}], "binds: each source is an absolute path"),
    (None, [], [{"source": "/a", "target": "/x"}, {"source": "/b", "target": "/x"}], "binds: two mounts share"),
    (None, [], [{"source": "/a", "target": "/proc"}], "binds: two mounts share"),
])
def test_refusals_name_the_parameter(device: str | None, subvolumes: list, binds: list, message: str) -> None:
    with pytest.raises(ParameterError) as error:
        plan_mounts(device, "/snapshots/N/@" if device else None, True, subvolumes, binds)
    assert error.value.msg.startswith(message), error.value.msg
