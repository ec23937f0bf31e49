# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile-input regression tests (issue 17): the fixtures of tests/host, which these tests share."""

from __future__ import annotations

import os
import pathlib
import typing as t

import pytest

from support.namespace import MountNamespace
from support.sysext import make_root, sysext_namespace


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Most cases mount, chroot or chown; without root they are skipped (a module with NEEDS_ROOT = False runs).
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="hostile-input tests need root (mount namespaces, chown, loop devices)")
        for item in items:
            if "tests/hostile/" in str(item.fspath) and getattr(item.module, "NEEDS_ROOT", True):
                item.add_marker(skip)


@pytest.fixture
def ns() -> t.Iterator[MountNamespace]:
    namespace = MountNamespace()
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def sxns() -> t.Iterator[MountNamespace]:
    namespace = sysext_namespace()
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_root(tmp_path / "root")
