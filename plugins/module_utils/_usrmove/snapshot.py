# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check stage=snapshot: a read-only btrfs snapshot of the root before the /usr move, so it can be undone.

plan_snapshot is pure; take_snapshot is the one runner. A snapshot is one ioctl: killed at any instant, the
snapshot either exists whole or not at all, and a rerun on a root that is still split takes one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.btrfs_ioctl import SUBVOLUME_ROOT_INODE
from ansible_collections.immutable.root.plugins.module_utils._usrmove.model import UsrMoveError

SNAPSHOT_PREFIX = "usr-move-"


@dataclass(frozen=True)
class SnapshotFacts:
    """What the decision needs, read beforehand."""

    merged: bool
    root_fstype: str
    root_is_subvolume: bool
    same_filesystem: bool  # the nearest existing directory of snapshot_dir is on root's btrfs filesystem


def plan_snapshot(root: str, snapshot_dir: str, name: str, facts: SnapshotFacts) -> str | None:
    """The snapshot's path, or None when the root is merged already; raise when it cannot be taken."""
    if facts.merged:
        return None
    if facts.root_fstype != "btrfs":
        raise UsrMoveError("stage=snapshot needs a btrfs root: %s is %s" % (root, facts.root_fstype or "unknown"))
    if not facts.root_is_subvolume:
        raise UsrMoveError("stage=snapshot: %s is a directory on btrfs, not a subvolume, and cannot be snapshotted"
                           % root)
    if not facts.same_filesystem:
        raise ParameterError("snapshot_dir", "%s is not on the btrfs filesystem of %s; a snapshot stays on its "
                             "filesystem" % (snapshot_dir, root))
    return os.path.join(snapshot_dir, name)


def snapshot_name(stamp: str) -> str:
    return SNAPSHOT_PREFIX + stamp


def nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def is_subvolume_root(path: str) -> bool:
    """Whether path is the top directory of a btrfs subvolume (the caller knows the filesystem is btrfs)."""
    return os.path.isdir(path) and os.stat(path).st_ino == SUBVOLUME_ROOT_INODE


def take_snapshot(runner: Runner, root: str, snapshot_dir: str, target: str) -> None:
    """Create target as a read-only snapshot of root, then check that it is one."""
    os.makedirs(snapshot_dir, mode=0o700, exist_ok=True)
    runner.run(["btrfs", "subvolume", "snapshot", "-r", root, target])
    verify_snapshot(runner, target)


def verify_snapshot(runner: Runner, target: str) -> None:
    if not is_subvolume_root(target):
        raise UsrMoveError("stage=snapshot: btrfs reported success but %s is not a subvolume" % target)
    readonly = runner.run(["btrfs", "property", "get", "-ts", target, "ro"]).stdout.strip()
    if readonly != "ro=true":
        raise UsrMoveError("stage=snapshot: %s is not read-only (btrfs property ro: %r)" % (target, readonly))
