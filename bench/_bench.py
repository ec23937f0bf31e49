# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared bits of the benchmarks: import path for the collection, timing, and the ratio table."""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time
import typing as t

REPO = pathlib.Path(__file__).resolve().parents[1]


def import_collection() -> str:
    """Make `ansible_collections.immutable.root` importable and return the collections path."""
    root = REPO / ".cache" / "collections"
    link = root / "ansible_collections" / "immutable" / "root"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(REPO, link)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return str(root)


def timed(function: t.Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of `repeat` calls, in seconds."""
    samples = []
    for _round in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def print_table(title: str, rows: t.Sequence[tuple[str, float, float]]) -> None:
    """rows: (what, seconds, baseline seconds). Ratios are the figures; seconds are context only."""
    print(title)
    print("%-58s %10s %10s %8s" % ("measurement", "seconds", "baseline", "ratio"))
    for what, seconds, baseline in rows:
        print("%-58s %10.3f %10.3f %8.2f" % (what, seconds, baseline, seconds / baseline if baseline else float("nan")))
