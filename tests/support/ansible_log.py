# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading ansible-playbook's default output."""

from __future__ import annotations

DIGEST_LINES = 3
DIGEST_WIDTH = 700


def failure_digest(stdout: str) -> str:
    """The last failed tasks of an ansible-playbook log, each with its TASK header, cut to fit a CI tail.

    Failures a rescue or ignore_errors absorbed are also `fatal:` lines, so the unrescued one is among the last."""
    task = ""
    found: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line.rstrip(" *")
        elif line.startswith(("fatal: [", "failed: [")):
            found.append("%s\n  %s" % (task, line[:DIGEST_WIDTH]))
        elif line.strip() == "...ignoring" and found:
            found.pop()
    return "\n".join(found[-DIGEST_LINES:])
