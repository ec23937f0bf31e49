# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every molecule scenario, run exactly as a role author runs it: `molecule test -s <scenario>`."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from support.modules import collections_path

pytestmark = pytest.mark.vm

REPO = pathlib.Path(__file__).resolve().parents[2]
# Scenarios that do not fit `make test`'s 60-minute budget beside the others run in `make test-long` (marked `long`);
# each role keeps a reboot-verified scenario in `make test`.
LONG_SCENARIOS = {"fleet"}
SCENARIOS = [pytest.param(name, marks=[pytest.mark.long] if name in LONG_SCENARIOS else [])
             for name in sorted(path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml"))]
# A scenario boots one or two VMs (about 30-50 s each under TCG) and runs a few playbooks; a hung boot is ended
# by labctl's own bounded wait long before this.
SCENARIO_TIMEOUT = 1800
LOG_DIR = REPO / "tests" / "output" / "molecule"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, needs_root: None) -> None:
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path()
    env["PATH"] = "%s:%s" % (pathlib.Path(sys.executable).parent, env.get("PATH", ""))
    env["ANSIBLE_NOCOLOR"] = "1"
    completed = subprocess.run([str(pathlib.Path(sys.executable).parent / "molecule"), "test", "-s", scenario],
                               cwd=REPO, env=env, text=True, capture_output=True, timeout=SCENARIO_TIMEOUT,
                               check=False)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / ("%s.log" % scenario)
    log.write_text(completed.stdout + "\n--- stderr ---\n" + completed.stderr)
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr).splitlines()[-80:]
        pytest.fail("molecule test -s %s exited %d (full log: %s)\n%s"
                    % (scenario, completed.returncode, log, "\n".join(tail)), pytrace=False)
