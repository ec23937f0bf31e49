# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host integration fixtures: root, private mount namespaces, real pacman trees."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import typing as t

import pytest

# Fixtures shared with tests/hostile.
from support.fixtures import ns, root, sxns  # noqa: F401  pylint: disable=unused-import
from support.namespace import MountNamespace
from support.pacman import build_package, pacman_argv, prepare_root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Host tests mount and chroot; without root they are skipped, and the summary says so.
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="host integration tests need root (mount namespaces, loop devices)")
        for item in items:
            if "tests/host/" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def packages() -> t.Iterator[dict[str, pathlib.Path]]:
    """Two real packages built by makepkg as nobody."""
    if not shutil.which("makepkg"):
        pytest.fail("makepkg is missing: run `make setup`")
    # pytest's own temporary directories are private to root; makepkg runs as nobody.
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="immutable-root-pkgbuild-"))
    os.chmod(workdir, 0o755)
    yield {
        "hello": build_package(workdir, "hello-immutable", {
            "usr/bin/hello-immutable": b"#!/bin/sh\necho hello from an arch package\n",
            "usr/share/hello-immutable/README": b"built by makepkg as nobody\n",
        }),
        "second": build_package(workdir, "second-immutable", {"usr/share/second-immutable/data": b"x" * 4096}),
    }
    shutil.rmtree(workdir)


@pytest.fixture
def pacman_tree(tmp_path: pathlib.Path, packages: dict[str, pathlib.Path], ns: MountNamespace) -> pathlib.Path:
    """A tree whose var/lib/pacman holds a real database with one installed package."""
    root = tmp_path / "root"
    prepare_root(root)
    ns.run(pacman_argv(root, "-U", str(packages["hello"])))
    return root
