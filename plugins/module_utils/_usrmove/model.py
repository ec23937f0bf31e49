# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check: the typed facts the preflight decides on, and its findings (pure)."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError

STAGES = ("preflight", "snapshot", "record", "verify")
# The old top-level directories of a split root, as usrmerge_symlinks knows them.
OLD_DIRECTORIES = ("bin", "sbin", "lib", "lib32", "lib64", "libo32", "libx32")
GENERATORS = ("dracut", "genkernel", "initramfs-tools", "mkinitcpio")


class UsrMoveError(ImmutableRootError):
    """A preflight refusal or a failed verification."""


@dataclass(frozen=True)
class Initramfs:
    """What the initramfs check found: which generator, which image or configuration, and the verdict."""

    generator: str | None  # one of GENERATORS, None when none is installed
    inspected: str | None  # the image or configuration file that was read
    mounts_usr: bool
    missing: str | None  # what is missing, when mounts_usr is false

    def as_dict(self) -> dict[str, t.Any]:
        return dict(generator=self.generator, inspected=self.inspected, mounts_usr=self.mounts_usr,
                    missing=self.missing)


@dataclass(frozen=True)
class PreflightFacts:
    """Everything the preflight decides on, read beforehand."""

    root_read_only: bool
    root_fstype: str
    usr_separate: bool
    usr_source: str | None
    initramfs: Initramfs | None  # None when /usr is not separate (nothing to mount early)
    needed_bytes: int
    available_bytes: int  # -1: unknown
    package_managers: tuple[str, ...]  # "dpkg: /var/lib/dpkg/lock-frontend is locked by pid 42", ...
    merged: bool


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, t.Any]:
        return dict(name=self.name, passed=self.passed, reason=self.reason)


@dataclass(frozen=True)
class Verification:
    """The result of comparing the old paths with the manifest and checking the booted system."""

    checked_paths: int
    differing: tuple[str, ...]
    checked_binaries: int
    broken_interpreters: tuple[str, ...]
    init_system: str
    system_state: str | None
    failed_units: tuple[str, ...] = field(default=())
    missing_links: tuple[str, ...] = field(default=())

    @property
    def problems(self) -> list[str]:
        found = []
        if self.differing:
            found.append("%d old paths no longer resolve to the recorded bytes: %s" % (
                len(self.differing), "; ".join(self.differing[:20])))
        if self.broken_interpreters:
            found.append("%d binaries in /usr/bin have an ELF interpreter that does not resolve: %s" % (
                len(self.broken_interpreters), "; ".join(self.broken_interpreters[:20])))
        if self.missing_links:
            found.append("compatibility paths that do not resolve although their /usr counterpart does: %s" % ", ".join(
                self.missing_links))
        if self.failed_units:
            found.append("%s reports failed units: %s" % (self.init_system, ", ".join(self.failed_units)))
        return found
