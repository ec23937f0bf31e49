# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM lab tests: pure checks of the lab's logic, and real builds and boots (marked `vm`, need root and QEMU)."""

from __future__ import annotations

import os
import pathlib
import sys
import typing as t

import pytest

LAB = pathlib.Path(__file__).resolve().parents[2] / "molecule" / "lab"
if str(LAB) not in sys.path:
    sys.path.insert(0, str(LAB))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: builds cached images or boots QEMU VMs (root, minutes under TCG)")
    config.addinivalue_line("markers", "long: runs in `make test-long` only (beyond make test's 60-minute budget)")
    config.addinivalue_line("markers", "powercut: power cuts inside VMs at every step boundary (`make powercut` only)")
    config.addinivalue_line("markers", "checks_lane: a VM test that `make test` runs in its checks lane, after the checks")


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("VM lab tests need root (mmdebstrap --mode=root, loop devices, mount namespaces)")


@pytest.fixture
def state_root(tmp_path: pathlib.Path, needs_root: None) -> t.Iterator[pathlib.Path]:
    """A private instance state directory; whatever a test leaves running in it is torn down afterwards."""
    from vmlab import instance

    root = tmp_path / "instances"
    root.mkdir()
    try:
        yield root
    finally:
        for directory in list(root.iterdir()):
            if directory.is_dir() and not directory.name.startswith("."):
                instance.teardown(directory)
