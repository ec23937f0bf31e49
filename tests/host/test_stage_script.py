# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/stage.sh: the staging copy ansible-test and the host tests run from."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def stage(tmp_path: pathlib.Path) -> pathlib.Path:
    result = subprocess.run([str(REPO / "scripts/stage.sh")], cwd=REPO, env=dict(os.environ, TMPDIR=str(tmp_path)),
                            check=True, capture_output=True, text=True)
    return pathlib.Path(result.stdout.strip())


def test_stage_is_a_fresh_private_directory_and_removes_nothing_it_did_not_make(tmp_path: pathlib.Path) -> None:
    """Regression: the stage was a predictable /tmp path emptied with rm -rf, so a symlink planted there by
    anyone first decided what was removed."""
    victim = tmp_path / "victim"
    (victim / "ansible_collections/immutable/root").mkdir(parents=True)
    (victim / "ansible_collections/immutable/root/keep").write_text("mine")
    # The name the old script would have used (cksum of the repository path), planted as a symlink.
    crc = subprocess.run(["cksum"], input=str(REPO), capture_output=True, text=True, check=True).stdout.split()[0]
    planted = tmp_path / ("immutable-root-stage-" + crc)
    planted.symlink_to(victim)
    first, second = stage(tmp_path), stage(tmp_path)
    try:
        assert first != second and first.parent == tmp_path and not first.is_symlink()
        assert stat.S_IMODE(first.stat().st_mode) == 0o700
        assert (first / "ansible_collections/immutable/root/galaxy.yml").is_file()
        assert (victim / "ansible_collections/immutable/root/keep").read_text() == "mine"
    finally:
        shutil.rmtree(first)
        shutil.rmtree(second)
