# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check stage=snapshot: the decision, as a truth table."""

from __future__ import annotations

import re

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._usrmove.model import UsrMoveError
from ansible_collections.immutable.root.plugins.module_utils._usrmove.snapshot import (
    SnapshotFacts, plan_snapshot, snapshot_name,
)

NAME = snapshot_name("20261203T071500Z")


@pytest.mark.parametrize("merged, fstype, subvolume, same_fs, expected", [
    # merged: nothing to undo, whatever the filesystem
    (True, "ext4", False, False, None),
    (True, "btrfs", True, True, None),
    # split on btrfs, a subvolume, the directory on its filesystem: the snapshot
    (False, "btrfs", True, True, "/.snapshots/usr-move-20261203T071500Z"),
    # split, but the snapshot cannot be taken: each refusal names its reason
    (False, "ext4", False, False, (UsrMoveError, "needs a btrfs root: / is ext4")),
    (False, "", False, False, (UsrMoveError, "/ is unknown")),
    (False, "btrfs", False, True, (UsrMoveError, "not a subvolume")),
    (False, "btrfs", True, False, (ParameterError, "snapshot_dir: /.snapshots is not on the btrfs filesystem of /")),
])
def test_plan_snapshot(merged: bool, fstype: str, subvolume: bool, same_fs: bool, expected: object) -> None:
    facts = SnapshotFacts(merged=merged, root_fstype=fstype, root_is_subvolume=subvolume, same_filesystem=same_fs)
    if isinstance(expected, tuple):
        error, fragment = expected
        with pytest.raises(error, match=re.escape(fragment)):
            plan_snapshot("/", "/.snapshots", NAME, facts)
    else:
        assert plan_snapshot("/", "/.snapshots", NAME, facts) == expected
