# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile-input regression tests (issue 17): the fixtures of tests/host, which these tests share."""

from __future__ import annotations

import os
import typing as t

import pytest

# Fixtures shared with tests/host.
from support.fixtures import module_ns, module_sxns, ns, root, sxns  # noqa: F401  pylint: disable=unused-import


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Most cases mount, chroot or chown; without root they are skipped (a module with NEEDS_ROOT = False runs).
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="hostile-input tests need root (mount namespaces, chown, loop devices)")
        for item in items:
            if "tests/hostile/" in str(item.fspath) and getattr(item.module, "NEEDS_ROOT", True):
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    # The campaign's table (tests/hostile/outcomes.py): one row per module, its runs by verdict.
    from outcomes import TALLY, table  # pylint: disable=import-outside-toplevel
    if TALLY:
        terminalreporter.write_sep("=", "hostile-input campaign: generated module runs by verdict")
        terminalreporter.write_line(table())
