# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every molecule scenario, run exactly as a role author runs it: `molecule test -s <scenario>`."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from support.ansible_log import failure_digest
from support.modules import collections_path

pytestmark = pytest.mark.vm

REPO = pathlib.Path(__file__).resolve().parents[2]
# Scenarios that do not fit `make test`'s 60-minute budget beside the others run in `make test-long` (marked `long`);
# each role keeps a reboot-verified scenario in `make test`. lab_smoke's proof (the lab end to end with builtins:
# create, converge, idempotence, reboot, verify) is part of every role scenario and of test_lab_vm's lifecycle test.
# alpine_atomic_root_openrc repeats the role on OpenRC (four boots beyond the systemd scenario's).
LONG_SCENARIOS = {"alpine_atomic_root_openrc", "lab_smoke"}
# Under TCG the VMs are CPU-bound. A third lane running fleet from the start (measured 2026-12-03 on 2 cores) slowed
# every scenario about 2x; once the checks are done, the vm lane's single VM leaves the second core mostly idle, so
# `make test` runs these scenarios at the end of its checks lane (scripts/test.sh), beside the vm lane's last ones.
# gentoo_usr_move and sysext_257 boot 1-vCPU VMs; moving them here keeps the vm lane, the longer one, under 60 min.
CHECKS_LANE_SCENARIOS = {"fleet", "gentoo_usr_move", "sysext_257"}


def _marks(name: str) -> list[pytest.MarkDecorator]:
    if name in LONG_SCENARIOS:
        return [pytest.mark.long]
    return [pytest.mark.checks_lane] if name in CHECKS_LANE_SCENARIOS else []


SCENARIOS = [pytest.param(name, marks=_marks(name))
             for name in sorted(path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml"))]
# A scenario boots one to three VMs (about 30-50 s each under TCG, minutes on a loaded machine) and runs a few
# playbooks; a hung boot is ended by labctl's own bounded wait long before this. The longest scenario takes about
# 20 minutes on an idle machine of this kind and over 30 on a loaded one.
SCENARIO_TIMEOUT = 2700
LOG_DIR = REPO / "tests" / "output" / "molecule"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, needs_root: None) -> None:
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path()
    env["PATH"] = "%s:%s" % (pathlib.Path(sys.executable).parent, env.get("PATH", ""))
    env["ANSIBLE_NOCOLOR"] = "1"
    molecule = str(pathlib.Path(sys.executable).parent / "molecule")
    # Its own session, so a timeout ends molecule and its ansible-playbook children together.
    proc = subprocess.Popen([molecule, "test", "-s", scenario], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=SCENARIO_TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        # The VMs are labctl's, not molecule's children: the scenario's destroy stops them.
        destroyed = subprocess.run([molecule, "destroy", "-s", scenario], cwd=REPO, env=env, text=True,
                                   capture_output=True, timeout=600, check=False)
        stderr += "\n--- timeout after %d s; molecule destroy exited %d ---\n%s%s" % (
            SCENARIO_TIMEOUT, destroyed.returncode, destroyed.stdout, destroyed.stderr)
    completed = subprocess.CompletedProcess(proc.args, -1 if timed_out else proc.returncode, stdout, stderr)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / ("%s.log" % scenario)
    log.write_text(completed.stdout + "\n--- stderr ---\n" + completed.stderr)
    if completed.returncode != 0:
        # CI keeps only the last lines of a run: scripts/test.sh prints the digests after both lanes have ended.
        (LOG_DIR / ("%s.digest" % scenario)).write_text(failure_digest(completed.stdout) + "\n")
        tail = (completed.stdout + completed.stderr).splitlines()[-80:]
        verdict = "timed out after %d s" % SCENARIO_TIMEOUT if timed_out else "exited %d" % completed.returncode
        pytest.fail("molecule test -s %s %s (full log: %s)\n%s" % (scenario, verdict, log, "\n".join(tail)),
                    pytrace=False)
