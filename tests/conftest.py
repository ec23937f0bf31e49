# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make tests/support importable as `support`, and the VM lab's `vmlab` (cached Debian trees, VMs)."""

from __future__ import annotations

import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parent
for path in (str(TESTS), str(TESTS.parent / "molecule" / "lab")):
    if path not in sys.path:
        sys.path.insert(0, path)
