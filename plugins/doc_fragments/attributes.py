# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The attribute descriptions every module of this collection shares; modules state their support.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return a prediction of the changes, without modifying the target.
  diff_mode:
    description: Returns a structured before/after of the managed state when run in diff mode.
  idempotent:
    description:
      - When run twice in a row with the same options, the second run reports no change.
      - Also applies in check mode, where the prediction of a second run after a real first run is no change.
  platform:
    description: Target operating systems this module can act on.
    support: full
    platforms: posix
"""
