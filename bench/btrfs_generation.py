# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation against the raw shell sequence it replaces, on btrfs loop images in a private namespace.

- Create + switch: the module (`present`, then `current`; two processes, interpreter and Ansible imports
  included, and the same two calls in one Python that has already imported Ansible) against one `sh -c` doing
  the seed's steps: snapshot, sed of the fstab, mkdir + ln -s of the slots, ln -s + mv -T, sync.
- The same with a root ten times larger (ten reflinked copies of the tree in one root: ten times the metadata).
- 1,000 generations: `state: pruned` (keep 4, one delete call, commit, wait for the cleaner) against the same
  deletions done by hand; and listing (check mode, nothing to delete) against `btrfs subvolume list`.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import typing as t

from _bench import REPO, import_collection, in_process_timings, print_table, timed

ROUNDS = 5
GENERATIONS = 1000
MODULE = "ansible_collections.immutable.root.plugins.modules.btrfs_generation"
RAW_SWITCH = r"""
set -e
top=$1 name=$2 links=$3
cur=$(readlink "$top/current"); cur=${cur#./links/}
old=$(basename "$(readlink "$top/links/$cur/0")")
mkdir "$top/snapshots/$name"
btrfs -q subvolume snapshot "$top/snapshots/$old/@" "$top/snapshots/$name/@"
sed "s#CURRENT_SNAPSHOTS_PATH#/snapshots/$name#g" "$top/fstab" > "$top/snapshots/$name/@/etc/fstab"
mkdir "$top/links/$links"
ln -s "../../snapshots/$name" "$top/links/$links/0"
for slot in 1 2 3; do ln -s "$(readlink "$top/links/$cur/$((slot - 1))")" "$top/links/$links/$slot"; done
ln -s "./links/$links" "$top/next/current"
mv -T "$top/next/current" "$top/current"
sync
"""


class Bench:
    def __init__(self, collections: str) -> None:
        self.env = dict(os.environ, PYTHONPATH=collections)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="btrfs-generation-bench-"))
        self.counter = 0

    def args(self, **args: t.Any) -> str:
        self.counter += 1
        path = self.workdir / ("args-%d.json" % self.counter)
        path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        return str(path)

    def module(self, **args: t.Any) -> dict:
        completed = subprocess.run([sys.executable, "-m", MODULE, self.args(**args)], env=self.env, text=True,
                                   capture_output=True, check=False)
        result = json.loads(completed.stdout)
        if completed.returncode or result.get("failed"):
            raise RuntimeError("btrfs_generation failed: %s" % result.get("msg"))
        return result

    def in_process(self, arg_files: list[str]) -> list[float]:
        return in_process_timings(MODULE, arg_files, self.env)

    def name(self, stem: str) -> str:
        self.counter += 1
        return "%s%05d" % (stem, self.counter)


def create_and_switch(bench: Bench, top: str, label: str) -> list[tuple[str, float, float]]:
    def module_processes() -> None:
        name = bench.name("m")
        bench.module(top=top, state="present", name=name)
        bench.module(top=top, state="current", name=name)

    def raw() -> None:
        subprocess.run(["sh", "-c", RAW_SWITCH, "sh", top, bench.name("r"), bench.name("l")], check=True)

    def module_in_process() -> float:
        name = bench.name("p")
        return sum(bench.in_process([bench.args(top=top, state="present", name=name),
                                     bench.args(top=top, state="current", name=name)]))

    baseline = timed(raw, ROUNDS)
    processes = timed(module_processes, ROUNDS)
    in_process = sorted(module_in_process() for _round in range(ROUNDS))[ROUNDS // 2]
    return [("%s: module, 2 processes (present + current)" % label, processes, baseline),
            ("%s: module in one Python, imports paid" % label, in_process, baseline)]


def thousand_generations(bench: Bench, golden: t.Any) -> list[tuple[str, float, float]]:
    many = golden.clone("many")
    top = many.mount()
    started = time.perf_counter()
    for number in range(GENERATIONS - len(os.listdir(top + "/snapshots"))):
        # Empty subvolumes: a snapshot commits a transaction each (~50 ms), a new subvolume does not, and
        # listing and pruning do not look inside.
        name = "g%04d" % number
        os.mkdir("%s/snapshots/%s" % (top, name))
        subprocess.run(["btrfs", "-q", "subvolume", "create", "%s/snapshots/%s/@" % (top, name)], check=True)
    subprocess.run(["btrfs", "filesystem", "sync", top], check=True)
    print("(made %d generations by hand in %.1f s)" % (GENERATIONS, time.perf_counter() - started))
    listing = dict(top=top, state="pruned", keep=GENERATIONS * 2, _ansible_check_mode=True)
    listing_module = timed(lambda: bench.module(**listing), 3)
    listing_in_process = sorted(bench.in_process([bench.args(**listing)] * 3))[1]
    listing_raw = timed(lambda: subprocess.run(["btrfs", "subvolume", "list", top], check=True,
                                               capture_output=True), 3)
    # The same victims by hand: everything the module's prediction would delete.
    predicted = bench.module(top=top, state="pruned", keep=4, _ansible_check_mode=True)
    victims = [action["target"] for action in predicted["actions"] if action["action"] == "delete_generation"]
    many.umount()

    by_hand = many.clone("many-raw")
    raw_top = by_hand.mount()

    def raw_prune() -> None:
        subprocess.run(["btrfs", "-q", "subvolume", "delete"] + ["%s/%s" % (raw_top, victim) for victim in victims],
                       check=True)
        for victim in victims:
            os.rmdir("%s/%s" % (raw_top, os.path.dirname(victim)))
        subprocess.run(["btrfs", "filesystem", "sync", raw_top], check=True, capture_output=True)
        subprocess.run(["btrfs", "subvolume", "sync", raw_top], check=True, capture_output=True)

    prune_raw = timed(raw_prune, 1)
    by_hand.discard()
    top = many.mount()
    prune_module = timed(lambda: bench.module(top=top, state="pruned", keep=4), 1)
    many.discard()
    return [("%d generations: pruned (%d deleted) vs delete + syncs" % (GENERATIONS, len(victims)), prune_module,
             prune_raw),
            ("%d generations: listing (check mode) vs subvolume list" % GENERATIONS, listing_module, listing_raw),
            ("%d generations: listing in one Python, imports paid" % GENERATIONS, listing_in_process, listing_raw)]


def main() -> None:
    collections = import_collection()
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "molecule" / "lab")]
    from support.btrfs import Disk, minbase_tree, shared_pool

    pool = shared_pool()
    bench = Bench(collections)
    tree = minbase_tree(pool)
    rows = []
    golden = Disk.create(pool, "4G", "bench")
    top = golden.mount()
    bench.module(top=top, state="initialized", name="first", source=str(tree))
    rows += create_and_switch(bench, top, "root 1x")
    golden.umount()

    large = Disk.create(pool, "4G", "bench-large")
    top = large.mount()
    subprocess.run(["btrfs", "-q", "subvolume", "create", top + "/@"], check=True)
    subprocess.run(["cp", "-a", str(tree), top + "/@/copy0"], check=True)
    for copy in range(1, 10):
        # Reflinks inside one filesystem: ten times the files and metadata, not ten times the data to write.
        subprocess.run(["cp", "-a", "--reflink=always", top + "/@/copy0", "%s/@/copy%d" % (top, copy)], check=True)
    subprocess.run(["cp", "-a", "--reflink=always", "%s/@/copy0/etc" % top, top + "/@/etc"], check=True)
    bench.module(top=top, state="initialized", name="first", source=top + "/@")
    rows += create_and_switch(bench, top, "root 10x")
    large.discard()

    rows += thousand_generations(bench, golden)
    golden.discard()
    print_table("btrfs_generation (medians of %d rounds; one run of each prune)" % ROUNDS, rows)


if __name__ == "__main__":
    main()
