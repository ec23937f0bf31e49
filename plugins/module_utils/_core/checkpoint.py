# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Step boundaries of operations that change the system, for crash-safety tests.

Each variable names a boundary by its number in this process (1, 2, ...), by its name
("btrfs_generation.switch.renamed"; the first boundary of that name) or by its name and what it acted on
("ro_bind.write_unit /etc/systemd/system/var-lib-pacman.mount"), which tells apart modules a role runs in turn: KILL_AT kills the process, STOP_AT stops it,
and RESET_AT resets the whole machine there (sysrq b: no sync, no unmount - what a power cut leaves). RESET_AT is
for lab VMs only.
"""

from __future__ import annotations

import os
import signal

TRACE_ENV = "IMMUTABLE_ROOT_STEP_TRACE"
KILL_AT_ENV = "IMMUTABLE_ROOT_KILL_AT"
STOP_AT_ENV = "IMMUTABLE_ROOT_STOP_AT"
RESET_AT_ENV = "IMMUTABLE_ROOT_RESET_AT"
SYSRQ_TRIGGER = "/proc/sysrq-trigger"

_passed = 0


def step_boundary(name: str, where: str = "") -> None:
    global _passed
    _passed += 1
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write("%d %s\n" % (_passed, name))
    here = (str(_passed), name, "%s %s" % (name, where))
    if os.environ.get(KILL_AT_ENV) in here:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_AT_ENV) in here:
        os.kill(os.getpid(), signal.SIGSTOP)
    if os.environ.get(RESET_AT_ENV) in here:
        reset_machine()


def reset_machine() -> None:
    """Reset at once, without writing back the page cache; the process stops so nothing after the boundary runs."""
    with open(SYSRQ_TRIGGER, "w", encoding="ascii") as trigger:
        trigger.write("b")
    os.kill(os.getpid(), signal.SIGSTOP)
