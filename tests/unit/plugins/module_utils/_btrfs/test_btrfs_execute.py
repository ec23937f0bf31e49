# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fstab injection through O_NOFOLLOW descriptors (a plain directory tree stands in for the top level)."""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs.execute import Executor
from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import GenerationError, Step
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner

TEMPLATE = "LABEL=ROOT / btrfs subvol=CURRENT_SNAPSHOTS_PATH/@,ro 0 0\n"


def top_with_generation(tmp_path: pathlib.Path) -> pathlib.Path:
    top = tmp_path / "top"
    (top / "snapshots/g1/@").mkdir(parents=True)
    (top / "fstab").write_text(TEMPLATE)
    return top


def inject(top: pathlib.Path) -> None:
    executor = Executor(Runner(None), str(top))  # type: ignore[arg-type]  # the injection runs no command
    executor.run([Step("inject_fstab", "snapshots/g1/@/etc/fstab", names=("g1",))])


def test_the_fstab_is_written_into_the_generation(tmp_path: pathlib.Path) -> None:
    top = top_with_generation(tmp_path)
    inject(top)
    assert (top / "snapshots/g1/@/etc/fstab").read_text() == "LABEL=ROOT / btrfs subvol=/snapshots/g1/@,ro 0 0\n"


def test_an_etc_symlink_is_refused_and_nothing_is_written_through_it(tmp_path: pathlib.Path) -> None:
    """Regression: etc was checked by name and the file then written by path, so a symlink planted in
    between redirected the write (to the host's /etc, say)."""
    top = top_with_generation(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), top / "snapshots/g1/@/etc")
    with pytest.raises(GenerationError, match="etc is not a directory"):
        inject(top)
    assert os.listdir(outside) == []


def test_an_fstab_symlink_is_replaced_not_followed(tmp_path: pathlib.Path) -> None:
    top = top_with_generation(tmp_path)
    (top / "snapshots/g1/@/etc").mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    os.symlink(str(victim), top / "snapshots/g1/@/etc/fstab")
    inject(top)
    assert victim.read_text() == "keep me\n"
    assert not os.path.islink(top / "snapshots/g1/@/etc/fstab")


def test_a_symlinked_generation_root_is_refused(tmp_path: pathlib.Path) -> None:
    top = top_with_generation(tmp_path)
    os.rename(top / "snapshots/g1/@", tmp_path / "elsewhere")
    os.symlink(str(tmp_path / "elsewhere"), top / "snapshots/g1/@")
    with pytest.raises(OSError):
        inject(top)
    assert not (tmp_path / "elsewhere/etc").exists()
