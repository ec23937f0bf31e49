# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection as users get it: the release tarball, built once per run and installed into an empty path."""

from __future__ import annotations

import pathlib
import shutil
import tarfile

import pytest

from support.ecosystem import OUTPUT, REPO, isolated_env, run, source_files, tool


@pytest.fixture(scope="session")
def output_dir() -> pathlib.Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="session")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """`ansible-galaxy collection build` of a clean copy of the repository, as `make release` builds it."""
    src = tmp_path_factory.mktemp("source")
    for name in source_files():
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest, follow_symlinks=False)
    out = tmp_path_factory.mktemp("dist")
    run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(out)], cwd=src, env=isolated_env(None))
    built = sorted(out.glob("immutable-root-*.tar.gz"))
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="session")
def tarball_members(tarball: pathlib.Path) -> list[str]:
    with tarfile.open(tarball) as tar:
        return [member.name for member in tar.getmembers() if not member.isdir()]


@pytest.fixture(scope="session")
def installed(tarball: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tarball installed into an empty collections path; returns that path."""
    path = tmp_path_factory.mktemp("collections")
    run([tool("ansible-galaxy"), "collection", "install", "--offline", "-p", str(path), str(tarball)], env=isolated_env(path))
    assert (path / "ansible_collections" / "immutable" / "root" / "MANIFEST.json").is_file()
    return path
