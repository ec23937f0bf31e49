# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks against Debian's convert-usrmerge on the same split bookworm tree.

Every run works on its own btrfs snapshot of the tree inside a private mount namespace, and the filesystem
is synced before it. The baseline is convert-usrmerge, run as a process in a chroot of the tree (perl start
included). The module is measured twice: its conversion alone (main() called in a Python that has already
imported Ansible, as a persistent worker would), and as a whole process (interpreter start and Ansible's
imports included, about 0.15-0.2 s on this machine, the same for every module).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _bench import REPO, import_collection, in_process_timings, print_table

ROUNDS = 3
MODULE = "ansible_collections.immutable.root.plugins.modules.usrmerge_symlinks"


def main() -> None:
    collections = import_collection()
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "molecule" / "lab")]
    from support.usrmerge import CONVERT, BtrfsPool, split_usr_tarball, usrmerge_deb

    tarball, deb = split_usr_tarball(), usrmerge_deb()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="usrmerge-bench-"))
    pool = BtrfsPool(workdir)
    env = dict(os.environ, PYTHONPATH=collections)

    def args_file(root: str) -> str:
        path = workdir / ("%s.json" % os.path.basename(root))
        path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"root": root}}))
        return str(path)

    def process(argv: list[str]) -> float:
        pool.sync()
        started = time.perf_counter()
        completed = subprocess.run(pool.ns.prefix() + argv, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit("%s failed: %s %s" % (argv, completed.stdout[-2000:], completed.stderr[-2000:]))
        return elapsed

    def in_process(roots: list[str]) -> list[float]:
        return in_process_timings(MODULE, [args_file(root) for root in roots], env, prefix=pool.ns.prefix(),
                                  sync_first=True)

    try:
        pool.from_tarball("pristine", tarball)
        samples: dict[str, list[float]] = {}
        roots = [pool.snapshot("pristine", "inproc-%d" % number) for number in range(ROUNDS)]
        samples["module in-process"] = in_process(roots)
        samples["module in-process again"] = in_process(roots)
        for number in range(ROUNDS):
            root = pool.snapshot("pristine", "module-%d" % number)
            argv = [sys.executable, "-m", MODULE, args_file(root)]
            samples.setdefault("module", []).append(process(argv))
            samples.setdefault("module again", []).append(process(argv))
            root = pool.snapshot("pristine", "convert-%d" % number)
            pool.ns.run(["dpkg-deb", "-x", str(deb), root])
            pool.ns.run(["mount", "-t", "proc", "proc", root + "/proc"])
            samples.setdefault("convert", []).append(process(["chroot", root, "/" + CONVERT]))
            samples.setdefault("convert again", []).append(process(["chroot", root, "/" + CONVERT]))
            pool.ns.run(["umount", root + "/proc"])
        median = {name: statistics.median(values) for name, values in samples.items()}
        print_table("usrmerge: module vs Debian convert-usrmerge (median of %d rounds each)" % ROUNDS, [
            ("split tree -> merged: conversion (module in-process)", median["module in-process"], median["convert"]),
            ("split tree -> merged: whole processes", median["module"], median["convert"]),
            ("rerun on the merged tree (in-process)", median["module in-process again"], median["convert again"]),
            ("rerun on the merged tree (whole processes)", median["module again"], median["convert again"]),
        ])
    finally:
        pool.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
