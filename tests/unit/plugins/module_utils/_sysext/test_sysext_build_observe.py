# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import pathlib
import struct

from ansible_collections.immutable.root.plugins.module_utils._sysext.build_observe import root_architecture
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_observe import running_architecture

ARM64_SH = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", 2, 183) + bytes(100)


def test_the_target_roots_binaries_decide_the_architecture(tmp_path: pathlib.Path) -> None:
    """Regression: the build wrote the controller's uname architecture into a root built for another one."""
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/sh").write_bytes(ARM64_SH)
    assert root_architecture(str(tmp_path)) == "arm64"


def test_a_usrmerged_roots_absolute_bin_link_stays_inside_the_root(tmp_path: pathlib.Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/dash").write_bytes(ARM64_SH)
    os.symlink("/usr/bin/dash", tmp_path / "usr/bin/sh")  # absolute: resolved inside the root, never the host's
    assert root_architecture(str(tmp_path)) == "arm64"


def test_a_root_without_binaries_falls_back_to_this_machine(tmp_path: pathlib.Path) -> None:
    assert root_architecture(str(tmp_path)) == running_architecture()
