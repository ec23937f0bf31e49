# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waiting on a condition with a bound, never for a fixed time (machines here are shared and noisy)."""

from __future__ import annotations

import time
import typing as t

POLL_INTERVAL = 0.1


def wait_for(condition: t.Callable[[], bool], what: str, timeout: float) -> None:
    """Return once condition() is true; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(POLL_INTERVAL)
