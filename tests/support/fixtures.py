# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures tests/host and tests/hostile share (their conftests import them)."""

from __future__ import annotations

import pathlib
import typing as t

import pytest

from support.namespace import MountNamespace
from support.sysext import make_root, sysext_namespace


def _held(namespace: MountNamespace) -> t.Iterator[MountNamespace]:
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def ns() -> t.Iterator[MountNamespace]:
    yield from _held(MountNamespace())


@pytest.fixture
def sxns() -> t.Iterator[MountNamespace]:
    """A namespace where systemd-sysext --root merges become visible (shared /, shared tmpfs /run)."""
    yield from _held(sysext_namespace())


@pytest.fixture(scope="module")
def module_ns() -> t.Iterator[MountNamespace]:
    """One private mount namespace for all the generated runs of a test module."""
    yield from _held(MountNamespace())


@pytest.fixture(scope="module")
def module_sxns() -> t.Iterator[MountNamespace]:
    """sxns, once for all the generated runs of a test module."""
    yield from _held(sysext_namespace())


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    """A minimal tree with a Debian 12 os-release for systemd-sysext --root."""
    return make_root(tmp_path / "root")
