# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""chroot_command: the mounts that prepare a chroot, as a pure, ordered plan."""

from __future__ import annotations

import posixpath
import typing as t
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError

# The seed's chroot: /dev bound, proc mounted, /sys bound (recursively, so /dev/pts and /sys/fs/* come along).
API_FILESYSTEMS = (("rbind", "/dev", "/dev"), ("proc", "proc", "/proc"), ("rbind", "/sys", "/sys"))


@dataclass(frozen=True)
class Mount:
    """One mount made inside the chroot: kind is root (subvol= of device), subvolume, rbind or proc."""

    kind: str
    source: str
    target: str  # inside the chroot, absolute
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "source": self.source, "target": self.target}


def _inside(param: str, target: t.Any) -> str:
    if not isinstance(target, str) or not target.startswith("/") or ".." in target.split("/") \
            or posixpath.normpath(target) != target or target == "/":
        raise ParameterError(param, "each target must be an absolute, normalised path below / of the chroot, "
                             "without '..', got %r" % (target,))
    return target


def plan_mounts(device: str | None, subvolume: str | None, api_filesystems: bool,
                subvolumes: t.Sequence[t.Mapping[str, str]], binds: t.Sequence[t.Mapping[str, str]]) -> list[Mount]:
    """Mounts in the order they are made (parents before children; unmounting is the reverse)."""
    mounts = []
    if device is not None:
        mounts.append(Mount("root", device, "/", "subvol=%s" % subvolume))
    if api_filesystems:
        mounts += [Mount(kind, source, target) for kind, source, target in API_FILESYSTEMS]
    for entry in subvolumes:
        if device is None:
            raise ParameterError("subvolumes", "needs device: they are subvolumes of the same btrfs filesystem")
        name = entry.get("subvolume")
        if not isinstance(name, str) or not name.startswith("/") or ".." in name.split("/"):
            raise ParameterError("subvolumes", "each subvolume is an absolute path inside the filesystem, such "
                                 "as /commons/@var@log, got %r" % (name,))
        mounts.append(Mount("subvolume", device, _inside("subvolumes", entry.get("target")), "subvol=%s" % name))
    for entry in binds:
        source = entry.get("source")
        if not isinstance(source, str) or not source.startswith("/"):
            raise ParameterError("binds", "each source is an absolute path, got %r" % (source,))
        mounts.append(Mount("rbind", source, _inside("binds", entry.get("target"))))
    targets = [mount.target for mount in mounts]
    if len(set(targets)) != len(targets):
        raise ParameterError("binds", "two mounts share a target: %s" % ", ".join(targets))
    # Shorter targets first, so /var is in place before /var/log; the order among siblings is kept.
    return sorted(mounts, key=lambda mount: (0 if mount.target == "/" else mount.target.count("/")))
