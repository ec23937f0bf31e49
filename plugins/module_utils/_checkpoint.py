# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Step boundaries of operations that change the system, for crash-safety tests.

Executors call step_boundary() between steps. Unless the test-only environment variables below
are set this does nothing. With IMMUTABLE_ROOT_STEP_TRACE=FILE each boundary appends its name to
FILE, so a test can list every boundary; with IMMUTABLE_ROOT_KILL_AT=N the process kills itself
with SIGKILL at the N-th boundary (1-based), exactly as a crash or an OOM kill would; with
IMMUTABLE_ROOT_STOP_AT=N it stops itself (SIGSTOP) there instead, so a test can change the system
under a paused run (a planted symlink, a racing writer) and then let it continue with SIGCONT.
"""

from __future__ import annotations

import os
import signal

TRACE_ENV = "IMMUTABLE_ROOT_STEP_TRACE"
KILL_AT_ENV = "IMMUTABLE_ROOT_KILL_AT"
STOP_AT_ENV = "IMMUTABLE_ROOT_STOP_AT"

_passed = 0


def step_boundary(name: str) -> None:
    global _passed
    _passed += 1
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write("%d %s\n" % (_passed, name))
    if os.environ.get(KILL_AT_ENV) == str(_passed):
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_AT_ENV) == str(_passed):
        os.kill(os.getpid(), signal.SIGSTOP)
