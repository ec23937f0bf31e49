# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared bits of the benchmarks: import path for the collection, timing, and the ratio table."""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
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


# Runs a module's main() once per argument file inside one Python that has already imported Ansible: the cost a
# persistent worker pays, without interpreter start and imports (about 0.15-0.2 s per process on this machine).
_IN_PROCESS = """
import json, os, sys, time
from ansible.module_utils import basic
from %(module)s import main
timings = []
for args in sys.argv[1:]:
    basic._ANSIBLE_ARGS = None  # AnsibleModule caches the arguments of the first call
    sys.argv = ["module", args]
    if %(sync_first)r:
        os.sync()
    started = time.perf_counter()
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise
    timings.append(time.perf_counter() - started)
sys.stderr.write("TIMINGS " + json.dumps(timings) + "\\n")
"""


def in_process_timings(module: str, arg_files: t.Sequence[str], env: t.Mapping[str, str],
                       prefix: t.Sequence[str] = (), sync_first: bool = False) -> list[float]:
    """Seconds each main() call of `module` (a dotted module path) took, one call per ANSIBLE_MODULE_ARGS file."""
    script = _IN_PROCESS % {"module": module, "sync_first": sync_first}
    completed = subprocess.run(list(prefix) + [sys.executable, "-c", script] + list(arg_files), env=dict(env),
                               text=True, capture_output=True, check=False)
    lines = [line for line in completed.stderr.splitlines() if line.startswith("TIMINGS ")]
    if completed.returncode != 0 or not lines:
        raise SystemExit("in-process runs of %s failed: %s" % (module, completed.stderr[-2000:]))
    return t.cast(list[float], json.loads(lines[0].split(" ", 1)[1]))
