# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tentative-upgrade boot steps of alpine_atomic_root (files/immutable-root-trial) as a state machine on a
directory standing in for the btrfs top level: trial, bless, fail, a trial that never reached its checks."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import pathlib
import types
import typing as t

import pytest

HELPER = pathlib.Path(__file__).resolve().parents[3] / "roles/alpine_atomic_root/files/immutable-root-trial"


@pytest.fixture
def trial(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("immutable_root_trial", str(HELPER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    top = tmp_path / "top"
    for directory in ("links/OLD", "links/NEW", "next", "snapshots"):
        (top / directory).mkdir(parents=True)
    os.symlink("./links/NEW", top / "current")
    (top / "tentative").write_text(json.dumps({"name": "B", "previous": "OLD", "next": "NEW"}))
    monkeypatch.setattr(module, "TOP", str(top))
    monkeypatch.setattr(module, "CHECKS", str(tmp_path / "checks.json"))
    monkeypatch.setattr(module, "log", lambda message: None)
    return module


def state(module: types.ModuleType) -> dict[str, t.Any]:
    top = pathlib.Path(module.TOP)
    files = {path.name: json.loads(path.read_text()) for path in top.iterdir() if path.is_file()}
    return dict(files, current=os.readlink(top / "current"))


def test_a_trial_boot_points_current_back_first(trial: types.ModuleType) -> None:
    assert trial.start("B") == 0
    after = state(trial)
    assert after["current"] == "./links/OLD" and after["trial"]["name"] == "B"
    assert trial.start("B") == 0 and state(trial)["current"] == "./links/OLD", "a second start changes nothing"
    assert not os.listdir(os.path.join(trial.TOP, "next")), "the staged link was renamed, not left behind"


def test_healthy_checks_point_current_forward_and_bless(trial: types.ModuleType, tmp_path: pathlib.Path) -> None:
    (tmp_path / "checks.json").write_text(json.dumps(["true", "test -d /"]))
    trial.start("B")
    assert trial.bless("B") == 0
    after = state(trial)
    assert after["current"] == "./links/NEW" and after["blessed"]["name"] == "B"
    assert "trial" not in after and "tentative" not in after and "failed" not in after


def test_a_failing_check_records_why_and_reboots(trial: types.ModuleType, tmp_path: pathlib.Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "checks.json").write_text(json.dumps(["true", "echo broken; exit 4"]))
    reboots: list[list[str]] = []
    real_run = trial.subprocess.run

    def run(argv: list[str], **kwargs: t.Any) -> t.Any:
        if "reboot" in argv:
            reboots.append(argv)
            return None
        return real_run(argv, **kwargs)

    monkeypatch.setattr(trial.subprocess, "run", run)
    trial.start("B")
    assert trial.bless("B") == 1
    after = state(trial)
    assert after["current"] == "./links/OLD", "the next boot is the previous generation"
    assert after["failed"]["name"] == "B" and after["failed"]["reason"] == "health check 'echo broken; exit 4' exited 4: broken"
    assert "trial" not in after and "tentative" not in after and reboots


def test_a_trial_that_never_reached_its_checks_is_recorded_at_the_next_boot(trial: types.ModuleType) -> None:
    trial.start("B")
    assert trial.start("A") == 0  # reset during B's boot: current pointed back, A boots
    after = state(trial)
    assert after["failed"]["name"] == "B" and "did not reach the health checks" in after["failed"]["reason"]
    assert after["current"] == "./links/OLD" and "tentative" not in after and "trial" not in after


def test_a_switch_that_never_happened_leaves_no_tentative(trial: types.ModuleType) -> None:
    os.unlink(os.path.join(trial.TOP, "current"))
    os.symlink("./links/OLD", os.path.join(trial.TOP, "current"))  # power cut before the rename
    assert trial.start("A") == 0
    assert "tentative" not in state(trial) and "failed" not in state(trial)


def test_nothing_tentative_is_a_no_op(trial: types.ModuleType) -> None:
    os.unlink(os.path.join(trial.TOP, "tentative"))
    assert trial.start("B") == 0 and trial.bless("B") == 0
    assert state(trial) == {"current": "./links/NEW"}


def test_booted_generation_from_the_subvolume_path(trial: types.ModuleType) -> None:
    assert trial.booted_generation("/snapshots/B/@") == "B"
    assert trial.booted_generation("/@") is None and trial.booted_generation("/commons/@home") is None
