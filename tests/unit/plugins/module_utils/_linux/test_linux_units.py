# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.units import mount_unit_name

# Expected names captured from `systemd-escape --path --suffix=mount` of systemd 252.
CASES = [
    ("/var/lib/pacman", "var-lib-pacman.mount"),
    ("/srv/my db", "srv-my\\x20db.mount"),
    ("/a-b/c.d", "a\\x2db-c.d.mount"),
    ("/.hidden/x", "\\x2ehidden-x.mount"),
    ("/", "-.mount"),
    ("/\u00fc/x", "\\xc3\\xbc-x.mount"),
    ("/a:b_c", "a:b_c.mount"),
]


@pytest.mark.parametrize("path, name", CASES)
def test_mount_unit_name_matches_systemd_escape(path: str, name: str) -> None:
    assert mount_unit_name(path) == name
