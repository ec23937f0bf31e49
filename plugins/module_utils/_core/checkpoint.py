# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Step boundaries of operations that change the system, for crash-safety tests."""

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
