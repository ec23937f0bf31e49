# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext: what an --image-policy allows, from systemd's own reading of it (`systemd-analyze image-policy`).

The policy language has defaults that are easy to get wrong by hand (an unlisted partition is "unused+absent", an
empty flag list is "open"), so the module lets systemd parse it and reads the resolved table (pure).

Measured on systemd 257: a raw image holding a bare file system (what sysext_build makes) is dissected as the root
partition, unprotected; systemd-sysext refuses it unless the policy lets root be unprotected, and then the whole
merge fails, --force or not, before release data is looked at. Directory images are not subject to the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN = frozenset({"verity", "signed", "encrypted", "unprotected", "unused", "absent"})
SHORTHANDS = {"open": OPEN, "ignore": frozenset({"unused", "absent"}), "-": frozenset()}


class PolicyTableError(ValueError):
    """systemd-analyze printed something this parser does not understand."""


@dataclass(frozen=True)
class ImagePolicy:
    text: str
    root: frozenset[str]  # the protections the root partition may have

    @property
    def allows_plain_file_system(self) -> bool:
        return "unprotected" in self.root

    def describe_root(self) -> str:
        if not self.root & {"verity", "signed", "encrypted", "unprotected"}:
            return "unused or absent"
        return "+".join(sorted(self.root - {"unused", "absent"}))


def _modes(field: str) -> frozenset[str]:
    if field in SHORTHANDS:
        return SHORTHANDS[field]
    modes = frozenset(field.split("+"))
    unknown = modes - OPEN
    if unknown:
        raise PolicyTableError("unknown partition mode %s" % "+".join(sorted(unknown)))
    return modes


def parse_analysis(policy: str, output: str) -> ImagePolicy:
    """The policy from `systemd-analyze image-policy POLICY` output (its PARTITION MODE READ-ONLY GROWFS table)."""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "root":
            return ImagePolicy(policy, _modes(fields[1]))
    raise PolicyTableError("no row for the root partition")
