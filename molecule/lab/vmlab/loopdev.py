# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Loop devices: find the ones backed by a file of ours and make sure none outlives the build that made it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from vmlab.errors import CommandFailed
from vmlab.run import run

SYS_BLOCK = Path("/sys/block")


def loops_backed_by(image: Path, sys_block: Path = SYS_BLOCK) -> list[str]:
    """/dev/loopN devices whose backing file is `image` (the kernel appends " (deleted)" once it is unlinked)."""
    wanted = os.path.realpath(image)
    found = []
    for backing in sorted(sys_block.glob("loop*/loop/backing_file")):
        try:
            name = backing.read_text().strip()
        except OSError:
            continue  # detached while we looked
        if name.removesuffix(" (deleted)") == wanted:
            found.append("/dev/" + backing.parent.parent.name)
    return found


def release_loops(image: Path, timeout: float = 30.0) -> None:
    """Wait for auto-clearing loops on `image` to go away, detaching any that stay; fail if one survives.

    `mount -o loop` sets LO_FLAGS_AUTOCLEAR, so a loop goes when its filesystem is unmounted, which for a
    mount in a dead namespace happens shortly after, not at once.
    """
    deadline = time.monotonic() + timeout
    detached_once: set[str] = set()
    while True:
        remaining = loops_backed_by(image)
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise OSError(f"loop devices still attached to {image} after {timeout:.0f} s: {remaining}")
        for device in remaining:
            if device not in detached_once and time.monotonic() > deadline - timeout / 2:
                detached_once.add(device)
                try:
                    run(["losetup", "--detach", device], timeout=30, what=f"detaching {device}")
                except CommandFailed:
                    pass  # auto-clear may have won the race; the next look decides
        time.sleep(0.5)
