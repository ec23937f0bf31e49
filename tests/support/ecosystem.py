# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the ecosystem tests: the repository, the controller and tools venvs, isolated Ansible environments."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import typing as t

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output" / "ecosystem"
# The controller venv's tools (ansible-galaxy, ansible-doc, antsibull-docs) sit next to pytest's Python.
VENV_BIN = pathlib.Path(sys.executable).parent
# galaxy-importer and ansible-builder live in a venv of their own (requirements-tools.txt, scripts/setup.sh).
TOOLS_BIN = REPO / ".cache" / "tools-venv" / "bin"


def tool(name: str, bin_dir: pathlib.Path = VENV_BIN) -> str:
    path = bin_dir / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup`")
    return str(path)


def isolated_env(collections_path: pathlib.Path | None, bin_dir: pathlib.Path = VENV_BIN) -> dict[str, str]:
    """An environment in which only `collections_path` provides collections (no staging copy, no ~/.ansible)."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "false"
    env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    env.pop("ANSIBLE_CONFIG", None)
    if collections_path is None:
        env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    else:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_path)
    return env


def run(argv: list[str], **kwargs: t.Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its output."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def source_files() -> list[str]:
    """What a clone of the repository holds: tracked files plus untracked ones that are not ignored."""
    out = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout
    return [name for name in out.split("\0") if name and (REPO / name).exists()]
