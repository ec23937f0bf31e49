# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Power cuts at every step of the switch of `current` (crash images, see support/powercut.py).

In both views of every crash image (the normal mount, and the no-log-replay view of a boot loader) `current`
resolves to the old or the new generation, complete, never torn; once the module would report the change,
both views show the new one. A naive switch without fsync and syncfs is seen to lose its switch, so the
harness is not blind.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import TRACE_ENV

from support.btrfs import Disk, Pool, ok, shared_pool
from support.modules import direct_module
from support.powercut import SYSCTL, VIEWS, WRITEBACK_OFF, PowerCut, module_argv, naive_argv, writeback_off
from support.wait import wait_for

OLD, NEW = ("old",) * 4, ("new", "old", "old", "old")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[PowerCut]:
    """A small layout: old current in all slots, new created but not current; writeback off meanwhile."""
    pool: Pool = shared_pool()
    golden = Disk.create(pool, "1G", "powercut-golden")
    top = golden.mount()
    tree = tmp_path_factory.mktemp("tree")
    (tree / "etc").mkdir()
    (tree / "etc/os-release").write_text("ID=debian\n")
    (tree / "usr").mkdir()
    for number in range(200):
        (tree / "usr" / ("file-%d" % number)).write_bytes(b"x" * 4096 * (number % 7))
    ok({"top": top, "state": "initialized", "name": "old", "source": str(tree), "commons": ["@home"]})
    ok({"top": top, "state": "present", "name": "new"})
    golden.umount()
    with writeback_off() as saved:
        yield PowerCut(golden)
    assert {name: (SYSCTL / name).read_text().strip() for name in WRITEBACK_OFF} == saved, "sysctls restored"
    golden.discard()


def switch_steps(harness: PowerCut, tmp_path: pathlib.Path) -> list[str]:
    """The boundaries of `state: current`, from a traced run on a throwaway copy."""
    disk = harness.golden.clone("trace")
    top = disk.mount()
    trace = tmp_path / "trace"
    try:
        rc, result, stderr = direct_module(None, "btrfs_generation", {"top": top, "state": "current", "name": "new"},
                                           env={TRACE_ENV: str(trace)})
        assert rc == 0 and result is not None and result["changed"], stderr
    finally:
        disk.discard()
    return [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]


REPEATS = 3  # a crash point costs about 0.25 s on this small image


def test_power_cut_at_every_step_of_the_switch(harness: PowerCut, tmp_path: pathlib.Path) -> None:
    steps = switch_steps(harness, tmp_path)
    assert steps == ["btrfs_generation.write_links", "btrfs_generation.switch.committed",
                     "btrfs_generation.switch.staged", "btrfs_generation.switch.renamed",
                     "btrfs_generation.switch.directories_synced", "btrfs_generation.switch_current"]
    argv = module_argv({"state": "current", "name": "new"}, tmp_path)
    seen: dict[str, set] = {}
    # One more than the steps: the cut after the module has returned (and reported the change).
    for number, step in enumerate(steps + ["returned"], start=1):
        for _repeat in range(REPEATS):
            reached, views = harness.cut(argv, number)
            assert reached == (step != "returned"), "the module did not stop at %s" % step
            for view in VIEWS:
                assert views[view].error is None, "torn at %s (%s view): %s" % (step, view, views[view].error)
                assert views[view].slots in (OLD, NEW), (step, view, views[view])
            seen.setdefault(step, set()).add((views["nologreplay"].current, views["normal"].current))
    assert all(seen[step] == {("old", "old")} for step in steps[:3]), "nothing refers to the new links yet: %s" % seen
    # `changed` is reported after the last step: from there on even a boot loader sees the new generation.
    assert seen["btrfs_generation.switch_current"] == seen["returned"] == {("new", "new")}, seen


def test_the_harness_sees_a_naive_switch_lose_its_change(harness: PowerCut) -> None:
    """rename without fsync and syncfs: already "done" when the power goes, old again afterwards."""
    lost = []
    for attempt in range(REPEATS):
        reached, views = harness.cut(naive_argv("naive%d" % attempt, "new"), 0)
        assert reached and all(views[view].error is None for view in VIEWS), views
        lost.append(views["nologreplay"].current == "old")
    assert any(lost), "the harness did not detect a non-durable switch: it would be blind"


KILLED_INSIDE_WRITEBACK_OFF = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from support.powercut import SYSCTL, WRITEBACK_OFF, writeback_off
with writeback_off():
    print({name: (SYSCTL / name).read_text().strip() for name in WRITEBACK_OFF} == WRITEBACK_OFF, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_run_still_gets_writeback_back() -> None:
    """Regression: the sysctls were restored in a finally, which SIGKILL skips, leaving writeback off host-wide."""
    before = {name: (SYSCTL / name).read_text().strip() for name in WRITEBACK_OFF}
    child = subprocess.run([sys.executable, "-c", KILLED_INSIDE_WRITEBACK_OFF, str(pathlib.Path(__file__).parents[1])],
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL and child.stdout.strip() == "True", child.stderr
    wait_for(lambda: {name: (SYSCTL / name).read_text().strip() for name in WRITEBACK_OFF} == before,
             "the guard to restore the writeback sysctls", timeout=30)
