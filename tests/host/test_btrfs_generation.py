# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation on real btrfs loop images (reflink clones in a pool), in this test process's private mount
namespace: the seed's rotation, the durable switch's system calls, protection of booted and mounted
generations, kill -9 at every step boundary, ENOSPC, check mode and bad input."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs import observe
from ansible_collections.immutable.root.plugins.module_utils._linux import btrfs_ioctl
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import KILL_AT_ENV, TRACE_ENV

from support.btrfs import (
    Disk, Pool, check_layout, dump, listing, minbase_tree, module, mountinfo, ok, run, shared_pool, slots_of,
    subvolumes,
)
from support.modules import ansible_module, collections_path, four_step

M = "btrfs_generation"


@pytest.fixture(scope="session")
def pool() -> Pool:
    return shared_pool()


@pytest.fixture(scope="session")
def golden(pool: Pool) -> Disk:
    """The layout initialized from the mmdebstrap minbase root: gen-a fills all four slots."""
    disk = Disk.create(pool, "2G", "golden")
    top = disk.mount()
    ok({"top": top, "state": "initialized", "name": "gen-a", "source": str(minbase_tree(pool))})
    disk.umount()
    return disk


@pytest.fixture
def disk(golden: Disk) -> t.Iterator[Disk]:
    clone = golden.clone()
    clone.mount()
    yield clone
    clone.discard()


def upgrade(top: str, name: str) -> dict[str, t.Any]:
    """present + a marker written "inside" the new generation (the package upgrade) + current."""
    ok({"top": top, "state": "present", "name": name})
    pathlib.Path(top, "snapshots", name, "@", "etc", "marker").write_text(name)
    return ok({"top": top, "state": "current", "name": name})


def mounted_generation(top: str, subvol: str, target: pathlib.Path) -> tuple[str, str, str]:
    """Mount subvol= (through the symlinks, as the kernel does at boot): (mountinfo root, fstab, marker)."""
    target.mkdir(exist_ok=True)
    device = [line.split()[-2] for line in mountinfo().splitlines() if " %s " % top in line][0]
    run(["mount", "-o", "ro,subvol=" + subvol, device, str(target)])
    try:
        root = [line.split()[3] for line in mountinfo().splitlines() if line.split()[4] == str(target)][-1]
        marker = target / "etc/marker"
        return root, (target / "etc/fstab").read_text(), marker.read_text() if marker.exists() else "gen-a"
    finally:
        run(["umount", str(target)])


def manifest(root: str) -> set[str]:
    return set(run(["find", root, "-mindepth", "1", "-printf", "%P %y %m %U %G %s %l\\n"]).stdout.splitlines())


def test_initialize_from_mmdebstrap_minbase_root(pool: Pool) -> None:
    tree = minbase_tree(pool)
    disk = Disk.create(pool, "2G", "init")
    try:
        top = disk.mount()
        args = {"top": top, "state": "initialized", "source": str(tree), "name": "first"}
        check, apply = four_step(None, M, args)[:2]
        assert [action["action"] for action in check["actions"]] == (
            ["create_directory"] * 4 + ["create_common"] * 4 + ["write_fstab_template", "create_generation",
                                                                "inject_fstab", "write_links", "switch_current"])
        assert check["actions"][9]["detail"] == "copy of directory %s" % tree
        assert check["diff"]["before"]["generations"] == [] and check["diff"]["after"]["slots"] == ["first"] * 4
        assert [action["action"] for action in apply["actions"]] == [a["action"] for a in check["actions"]]
        assert apply["current"] == "first" and apply["slots"] == ["first"] * 4 == slots_of(top)
        generation = apply["generations"][0]
        assert generation["path"] == "/snapshots/first/@" and generation["slots"] == [0, 1, 2, 3]
        assert generation["subvolid"] > 256 and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", generation["created"])
        assert set(subvolumes(top)) == {"commons/@home", "commons/@var@log", "commons/@var@tmp", "commons/@var@cache",
                                        "snapshots/first/@"}
        # The whole tree was copied (types, modes, owners, sizes, link targets), only etc/fstab differs.
        copied, original = manifest(top + "/snapshots/first/@"), manifest(str(tree))
        assert len(copied) == len(original) > 5000
        assert [line for line in copied.symmetric_difference(original) if not line.startswith("etc/fstab ")] == []
        assert pathlib.Path(top, "snapshots/first/@/etc/os-release").read_bytes() == (tree / "etc/os-release").read_bytes()
        uuid = re.search(r"uuid: (\S+)", run(["btrfs", "filesystem", "show", top]).stdout).group(1)  # type: ignore
        fstab = pathlib.Path(top, "snapshots/first/@/etc/fstab").read_text().splitlines()
        assert fstab[1:3] == ["UUID=%s / btrfs subvol=/snapshots/first/@,ro,noatime 0 0" % uuid,
                              "UUID=%s /home btrfs subvol=/commons/@home,rw,noatime 0 0" % uuid]
        check_layout(top)
    finally:
        disk.discard()


def test_fill_commons_carries_the_running_systems_data_into_the_commons(pool: Pool, tmp_path: pathlib.Path) -> None:
    """Converting a running system loses nothing: each new common starts with what the source has there."""
    disk = Disk.create(pool, "1G", "fill")
    try:
        top = disk.mount()
        run(["btrfs", "subvolume", "create", top + "/@"])
        root = pathlib.Path(top, "@")
        (root / "etc").mkdir()
        (root / "home/user").mkdir(parents=True)
        (root / "home/user/notes").write_text("kept\n")
        os.chown(root / "home/user/notes", 1000, 1000)
        os.chmod(root / "home/user", 0o700)
        (root / "var/log/apt").mkdir(parents=True)
        (root / "var/log/apt/history.log").write_text("Start-Date: 2026\n")
        args = {"top": top, "state": "initialized", "source": str(root), "name": "first", "fill_commons": True,
                "commons": ["@home", "@var@log", "@srv"]}
        steps = four_step(None, M, args)
        details = {action["target"]: action["detail"] for action in steps.apply["actions"]
                   if action["action"] == "create_common"}
        assert details == {"commons/@home": "subvolume filled from %s/home" % root,
                           "commons/@var@log": "subvolume filled from %s/var/log" % root,
                           "commons/@srv": "subvolume"}
        assert [a["detail"] for a in steps.check["actions"] if a["action"] == "create_common"] == list(details.values())
        assert (pathlib.Path(top, "commons/@home/user/notes").read_text() == "kept\n")
        notes = os.lstat(pathlib.Path(top, "commons/@home/user/notes"))
        assert (notes.st_uid, notes.st_gid) == (1000, 1000)
        assert os.lstat(pathlib.Path(top, "commons/@home/user")).st_mode & 0o777 == 0o700
        assert pathlib.Path(top, "commons/@var@log/apt/history.log").read_text() == "Start-Date: 2026\n"
        assert os.listdir(pathlib.Path(top, "commons/@srv")) == []
        assert not [name for name in os.listdir(top + "/commons") if name.startswith(".partial-")]
        assert set(subvolumes(top)) >= {"commons/@home", "commons/@var@log", "commons/@srv"}
        # A common that exists is never refilled or touched, even when the source changed since.
        (root / "home/user/later").write_text("x")
        assert not ok(args)["changed"] and not pathlib.Path(top, "commons/@home/user/later").exists()
    finally:
        disk.discard()


def test_fill_commons_replaces_a_staging_copy_left_by_a_killed_run(pool: Pool) -> None:
    disk = Disk.create(pool, "1G", "fill-killed")
    try:
        top = disk.mount()
        run(["btrfs", "subvolume", "create", top + "/@"])
        pathlib.Path(top, "@/home").mkdir()
        pathlib.Path(top, "@/home/file").write_text("whole\n")
        os.mkdir(top + "/commons")
        run(["btrfs", "subvolume", "create", top + "/commons/.partial-@home"])
        pathlib.Path(top, "commons/.partial-@home/half").write_text("")
        ok({"top": top, "state": "initialized", "source": top + "/@", "fill_commons": True, "commons": ["@home"]})
        assert sorted(os.listdir(top + "/commons/@home")) == ["file"]
        assert os.listdir(top + "/commons") == ["@home"]
    finally:
        disk.discard()


def test_a_subvolume_source_is_snapshotted(pool: Pool, tmp_path: pathlib.Path) -> None:
    """Converting an installed system: its root subvolume @ is snapshotted, not copied."""
    disk = Disk.create(pool, "1G", "convert")
    try:
        top = disk.mount()
        run(["btrfs", "subvolume", "create", top + "/@"])
        pathlib.Path(top, "@/etc").mkdir()
        pathlib.Path(top, "@/etc/os-release").write_text("ID=debian\n")
        result = ok({"top": top, "state": "initialized", "source": top + "/@", "commons": ["@home"]})
        name = result["name"]
        assert re.match(r"^\d{14}[A-Za-z]{8}$", name), "a stamp as the seed makes it"
        create = [action for action in result["actions"] if action["action"] == "create_generation"]
        assert create[0]["detail"] == "snapshot of subvolume %s/@" % top
        show = run(["btrfs", "subvolume", "show", "%s/snapshots/%s/@" % (top, name)]).stdout
        parent = run(["btrfs", "subvolume", "show", top + "/@"]).stdout
        assert re.search(r"Parent UUID:\s+(\S+)", show).group(1) == re.search(r"\bUUID:\s+(\S+)", parent).group(1)  # type: ignore
        check_layout(top)
    finally:
        disk.discard()


def test_three_upgrades_rollback_and_prune_rotate_the_slots_as_the_seed(disk: Disk, tmp_path: pathlib.Path) -> None:
    top = str(disk.top)
    present = four_step(None, M, {"top": top, "state": "present", "name": "u1"})
    assert present.apply["actions"][0]["detail"] == "snapshot of generation gen-a"
    assert present.apply["current"] == "gen-a", "present does not switch"
    pathlib.Path(top, "snapshots/u1/@/etc/marker").write_text("u1")
    switch = four_step(None, M, {"top": top, "state": "current", "name": "u1"})
    assert [action["action"] for action in switch.apply["actions"]] == ["write_links", "switch_current"]
    assert switch.check["diff"] == {"before": {"generations": ["gen-a", "u1"], "slots": ["gen-a"] * 4,
                                               "current": "gen-a", "links": switch.check["diff"]["before"]["links"]},
                                    "after": switch.check["diff"]["after"]}
    assert switch.check["diff"]["after"]["slots"] == ["u1", "gen-a", "gen-a", "gen-a"]
    assert slots_of(top) == ["u1", "gen-a", "gen-a", "gen-a"] == switch.apply["slots"]

    assert upgrade(top, "u2")["slots"] == ["u2", "u1", "gen-a", "gen-a"] == slots_of(top)
    assert upgrade(top, "u3")["slots"] == ["u3", "u2", "u1", "gen-a"] == slots_of(top)
    check_layout(top)
    for slot, expected in enumerate(["u3", "u2", "u1", "gen-a"]):
        root, fstab, marker = mounted_generation(top, "/current/%d/@" % slot, tmp_path / "boot")
        assert root == "/snapshots/%s/@" % expected and marker == expected
        assert "subvol=/snapshots/%s/@,ro,noatime" % expected in fstab

    rollback = ansible_module(None, M, {"top": top, "state": "current", "name": "u2"})
    assert rollback["changed"] and rollback["slots"] == ["u2", "u3", "u1", "gen-a"] == slots_of(top)
    assert mounted_generation(top, "/current/0/@", tmp_path / "boot")[2] == "u2"

    after_rollback = upgrade(top, "u4")
    assert after_rollback["slots"] == ["u4", "u2", "u3", "u1"] == slots_of(top)
    assert pathlib.Path(top, "snapshots/u4/@/etc/marker").read_text() == "u4"
    assert len(os.listdir(top + "/links")) == 6, "one link directory per switch"

    pruned = four_step(None, M, {"top": top, "state": "pruned", "keep": 2}).apply
    deleted = [action["target"] for action in pruned["actions"] if action["action"] == "delete_generation"]
    assert deleted == ["snapshots/gen-a/@"], "everything reachable from current is kept, whatever keep says"
    assert [generation["name"] for generation in pruned["generations"]] == ["u1", "u2", "u3", "u4"]
    assert os.listdir(top + "/links") == [pruned["links"]] and "gen-a" not in os.listdir(top + "/snapshots")
    assert "snapshots/gen-a/@" not in subvolumes(top) and check_layout(top) == ["u4", "u2", "u3", "u1"]
    assert run(["btrfs", "subvolume", "list", "-d", top]).stdout == "", "the cleaner is done when the module returns"


def test_the_switch_makes_its_system_calls_in_the_durable_order(disk: Disk, tmp_path: pathlib.Path) -> None:
    top = str(disk.top)
    ok({"top": top, "state": "present", "name": "next-one"})
    arguments = tmp_path / "args.json"
    arguments.write_text('{"ANSIBLE_MODULE_ARGS": {"top": "%s", "state": "current", "name": "next-one"}}' % top)
    trace = tmp_path / "strace"
    run(["strace", "-f", "-y", "-qq", "-o", str(trace), "-e",
         "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,symlink,symlinkat",
         sys.executable, "-m", "ansible_collections.immutable.root.plugins.modules." + M, str(arguments)],
        env=dict(os.environ, PYTHONPATH=collections_path()))
    calls = [call for call in (re.sub(r"^\d+\s+", "", line) for line in trace.read_text().splitlines())
             if not call.startswith(("---", "+++"))]
    links = os.readlink(top + "/current").split("/")[-1]
    first = [index for index, call in enumerate(calls) if call.startswith("fsync(") and links + ">" in call][0]

    def kind(call: str) -> str:
        name = call.split("(", 1)[0]
        fd_path = re.search(r"<([^>]*)>", call)
        where = fd_path.group(1) if fd_path else ""
        if name in ("rename", "renameat", "renameat2"):
            assert "/next/.current." in call and call.rstrip().endswith("= 0"), call
            return "rename next/.current.* -> current" if '"%s/current"' % top in call else call
        if name in ("symlink", "symlinkat"):
            return "symlink next/.current.*" if "/next/.current." in call else call
        return "%s %s" % (name, os.path.relpath(where, top) if where.startswith(top) else where)

    assert [kind(call) for call in calls[first:]] == [
        "fsync links/%s" % links, "fsync links", "syncfs .",
        "symlink next/.current.*", "fsync next",
        "rename next/.current.* -> current",
        "fsync next", "fsync .", "syncfs .",
    ]


def test_booted_mounted_and_reachable_generations_are_never_deleted(disk: Disk, tmp_path: pathlib.Path) -> None:
    top = str(disk.top)
    for name in ("b", "c", "d", "e"):
        upgrade(top, name)
    assert slots_of(top) == ["e", "d", "c", "b"]
    booted = tmp_path / "root"
    booted.mkdir()
    device = disk.loop_device()
    run(["mount", "-o", "ro,subvol=/snapshots/gen-a/@", device, str(booted)])
    try:
        for args, reason in (({"root": str(booted)}, "it is the booted generation"), ({}, "it is mounted")):
            rc, result = module(dict(args, top=top, state="absent", name="gen-a"))[:2]
            assert rc == 1 and result is not None and result["msg"].startswith(
                "name: refusing to delete generation gen-a: " + reason), dump(result or {})
        result = ok({"top": top, "state": "pruned", "keep": 1, "root": str(booted)})
        assert [a["action"] for a in result["actions"]] == ["remove_links"] * 4, "gen-a is kept"
        assert [g["name"] for g in result["generations"] if g["booted"]] == ["gen-a"] == [result["booted"]]
        assert (booted / "etc/os-release").is_file(), "the booted tree was not emptied"
    finally:
        run(["umount", str(booted)])
    for name, slot in (("e", "0"), ("b", "3")):
        rc, result = module({"top": top, "state": "absent", "name": name})[:2]
        assert rc == 1 and "reachable from current (slot %s)" % slot in result["msg"]  # type: ignore[index]
    result = ansible_module(None, M, {"top": top, "state": "absent", "name": "gen-a"}, diff=True)
    assert result["changed"] and "gen-a" not in result["diff"]["after"]["generations"]
    # The prune above already removed the link directories that pointed at gen-a.
    assert [action["action"] for action in result["actions"]] == ["delete_generation", "sync_deletions"]
    assert check_layout(top) == ["e", "d", "c", "b"] and "gen-a" not in os.listdir(top + "/snapshots")


def test_device_mode_mounts_privately_and_always_unmounts(golden: Disk) -> None:
    disk = golden.clone("device")
    device = run(["losetup", "--find", "--show", str(disk.image)]).stdout.strip()
    try:
        check = ansible_module(None, M, {"device": device, "state": "present", "name": "b"}, check=True)
        assert check["changed"] and check["top"] is None and check["current"] == "gen-a"
        for state in ("present", "current"):
            result = ansible_module(None, M, {"device": device, "state": state, "name": "b"})
            assert result["changed"] and not result.get("failed"), result.get("msg")
        assert device not in mountinfo() and not list(pathlib.Path(tempfile.gettempdir()).glob(
            "immutable-root-btrfs-top-*")), "the private mount and its directory are gone"
        assert not ansible_module(None, M, {"device": device, "state": "current", "name": "b"})["changed"]
        top = disk.mount()
        assert check_layout(top) == ["b", "gen-a", "gen-a", "gen-a"]
    finally:
        disk.umount()
        run(["losetup", "-d", device], check=False)
        disk.discard()


class LocalModule:
    """The two AnsibleModule methods the Runner uses, for calling module_utils from the test process."""

    def get_bin_path(self, arg: str, required: bool = False) -> str | None:
        return shutil.which(arg)

    def run_command(self, args: list[str], check_rc: bool = False, environ_update: dict[str, str] | None = None,
                    data: str | None = None, binary_data: bool = False) -> tuple[int, str, str]:
        completed = subprocess.run(args, env=dict(os.environ, **(environ_update or {})), text=True,
                                   capture_output=True, check=False)
        return completed.returncode, completed.stdout, completed.stderr


def test_observation_reads_ids_flags_and_times_as_btrfs_lists_them(disk: Disk, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """The ioctl path and its `btrfs subvolume show` fallback agree with each other and with `subvolume list`."""
    top = str(disk.top)
    upgrade(top, "b")
    ok({"top": top, "state": "present", "name": "c"})
    run(["btrfs", "property", "set", "-ts", top + "/snapshots/b/@", "ro", "true"])
    runner = Runner(LocalModule(), environ={"TZ": "UTC"})
    with_ioctl = observe.observe_generations(runner, top)
    monkeypatch.setattr(btrfs_ioctl, "GET_SUBVOL_INFO", 0x4008941F)  # a number btrfs does not know: ENOTTY
    assert observe.observe_generations(runner, top) == with_ioctl
    listed = {line.split(" path ")[1]: line for line in
              run(["btrfs", "subvolume", "list", "-s", top], env=dict(os.environ, TZ="UTC")).stdout.splitlines()}
    read_only = run(["btrfs", "subvolume", "list", "-r", top]).stdout
    for generation in with_ioctl[0]:
        line = listed.get("snapshots/%s/@" % generation.name)
        if line:  # gen-a was copied into a plain subvolume: no snapshot, no line
            assert line.startswith("ID %d " % generation.subvolid)
            assert generation.created == re.search(r"otime (\S+ \S+)", line).group(1).replace(" ", "T") + "Z"  # type: ignore
        assert generation.read_only == ("path snapshots/%s/@" % generation.name in read_only)
    assert [g.name for g in with_ioctl[0]] == ["gen-a", "b", "c"] and with_ioctl[0][1].read_only


# --- kill -9 at every step boundary --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kill_golden(golden: Disk) -> Disk:
    """gen-a .. e upgraded in turn (e current, gen-a unreachable, four old link directories point at it), a spare
    generation, and two leftovers of interrupted runs."""
    disk = golden.clone("kill-golden")
    top = disk.mount()
    for name in ("b", "c", "d", "e"):
        upgrade(top, name)
    ok({"top": top, "state": "present", "name": "spare"})
    os.symlink("./links/none", top + "/next/.current.999.stale")
    os.mkdir(top + "/snapshots/interrupted")
    disk.umount()
    return disk


KILL_CASES = {
    "present": {"state": "present", "name": "new"},
    "building": {"state": "present", "name": "new", "building": True},
    "current": {"state": "current", "name": "spare"},
    "absent": {"state": "absent", "name": "gen-a"},
    "pruned": {"state": "pruned", "keep": 1},
}


@pytest.mark.parametrize("case", sorted(KILL_CASES))
def test_kill_at_every_step_boundary_then_one_rerun_converges(
        kill_golden: Disk, case: str, tmp_path: pathlib.Path) -> None:
    reference = kill_golden.clone("reference")
    top = reference.mount()
    args = dict(KILL_CASES[case], top=top)
    trace = tmp_path / "trace"
    rc, result, stderr = module(args, env={TRACE_ENV: str(trace)})
    assert rc == 0 and result is not None and result["changed"], stderr
    expected = ([g["name"] for g in result["generations"]], result["slots"])
    steps = [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]
    reference.discard()
    assert len(steps) >= {"present": 3, "building": 4, "current": 6, "absent": 7, "pruned": 9}[case], steps

    for number, step in enumerate(steps, start=1):
        clone = kill_golden.clone("kill")
        top = clone.mount()
        try:
            args["top"] = top
            rc, result = module(args, env={KILL_AT_ENV: str(number)})[:2]
            assert rc == -9 and result is None, "not killed at %s" % step
            before = check_layout(top)
            assert before in (["e", "d", "c", "b"], ["spare", "e", "d", "c"]), "killed at %s: %s" % (step, before)
            rc, result, stderr = module(args)
            assert rc == 0 and result is not None, "rerun after %s: %s" % (step, stderr)
            assert ([g["name"] for g in result["generations"]], result["slots"]) == expected, "after %s" % step
            check_layout(top)
            again = module(args)[1]
            assert again is not None and not again["changed"] and again["actions"] == [], "after %s" % step
        finally:
            clone.discard()


def test_kill_while_initializing_from_a_copy_then_one_rerun_converges(pool: Pool, tmp_path: pathlib.Path) -> None:
    """Before the first switch there is no current at all, never a current that points at a partial copy."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\n")
    (tree / "usr/lib").mkdir(parents=True)
    for number in range(50):
        (tree / "usr/lib" / ("lib%d.so" % number)).write_bytes(b"\x7fELF" * 1024)
    empty = Disk.create(pool, "512M", "init-kill")
    empty.mount()
    empty.umount()
    args: dict[str, t.Any] = {"state": "initialized", "name": "first", "source": str(tree), "commons": ["@home"]}
    trace = tmp_path / "trace"
    probe = empty.clone("init-trace")
    try:
        rc, result, stderr = module(dict(args, top=probe.mount()), env={TRACE_ENV: str(trace)})
        assert rc == 0 and result is not None, stderr
    finally:
        probe.discard()
    steps = [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]
    assert "btrfs_generation.staging_created" in steps and "btrfs_generation.copied" in steps
    for number, step in enumerate(steps, start=1):
        clone = empty.clone("init-kill")
        top = clone.mount()
        try:
            assert module(dict(args, top=top), env={KILL_AT_ENV: str(number)})[0] == -9, step
            if os.path.lexists(top + "/current"):
                assert check_layout(top) == ["first"] * 4, step
            assert not os.path.exists(top + "/snapshots/first/@") or (
                pathlib.Path(top, "snapshots/first/@/usr/lib/lib49.so").stat().st_size == 4096), \
                "a generation appears only complete (%s)" % step
            rerun = ok(dict(args, top=top))
            assert rerun["slots"] == ["first"] * 4 and check_layout(top) == ["first"] * 4, step
            assert not ok(dict(args, top=top))["changed"]
            assert ok({"top": top, "state": "pruned"})["generations"][0]["name"] == "first"
            assert sorted(os.listdir(top + "/snapshots")) == ["first"], "the prune cleans what the kill left"
        finally:
            clone.discard()
    empty.discard()


# --- ENOSPC, check mode, bad input ------------------------------------------------------------------------------

def fill(top: str, leave: int = 0) -> None:
    """Allocate data until (about) `leave` bytes can still be written."""
    reserve = "%s/reserve" % top
    if leave:
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT, 0o600)
        os.posix_fallocate(fd, 0, leave)
        os.close(fd)
    size, number = 1 << 34, 0
    while size >= 4096:
        fd = os.open("%s/filler-%d" % (top, number), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            number += 1
        except OSError:
            os.unlink("%s/filler-%d" % (top, number))
            size //= 2
        finally:
            os.close(fd)
    if leave:
        os.unlink(reserve)
    run(["btrfs", "filesystem", "sync", top])


def test_enospc_while_creating_a_generation_leaves_current_untouched(disk: Disk, tmp_path: pathlib.Path) -> None:
    top = str(disk.top)
    upgrade(top, "b")
    fill(top)
    rc, result = module({"top": top, "state": "present", "name": "full"})[:2]
    assert rc == 1 and result is not None and "No space left on device" in result["msg"], dump(result or {})
    assert check_layout(top) == ["b", "gen-a", "gen-a", "gen-a"]
    rc, result = module({"top": top, "state": "current", "name": "full"})[:2]
    assert rc == 1 and check_layout(top) == ["b", "gen-a", "gen-a", "gen-a"], "no switch to an incomplete generation"

    # A copy that does not fit: the partial copy is deleted, no generation appears. (A small tree: cp goes on
    # after ENOSPC, and every further failing write waits for btrfs to flush.)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\n")
    with open(tree / "big", "wb") as handle:
        handle.write(os.urandom(1 << 20) * 64)
    for filler in pathlib.Path(top).glob("filler-*"):
        filler.unlink()
    fill(top, leave=16 << 20)
    rc, result = module({"top": top, "state": "present", "name": "copied", "source": str(tree)})[:2]
    assert rc == 1 and result is not None and "partial copy was deleted" in result["msg"], dump(result or {})
    assert not [path for path in subvolumes(top) if "copied" in path] and "copied" not in os.listdir(top + "/snapshots")
    assert check_layout(top) == ["b", "gen-a", "gen-a", "gen-a"]

    for filler in pathlib.Path(top).glob("filler-*"):
        filler.unlink()
    run(["btrfs", "filesystem", "sync", top])
    result = ok({"top": top, "state": "present", "name": "full"})
    assert [action["action"] for action in result["actions"]] == ["inject_fstab"], "the rerun completes it"
    assert ok({"top": top, "state": "current", "name": "full"})["slots"] == ["full", "b", "gen-a", "gen-a"]
    check_layout(top)


CHECK_CASES = [
    ({"state": "present", "name": "new"}, ["create_generation", "inject_fstab"]),
    ({"state": "present", "name": "new", "source": "MINBASE"}, ["create_generation", "inject_fstab"]),
    ({"state": "current", "name": "b"}, ["write_links", "switch_current"]),
    ({"state": "absent", "name": "gen-a"}, ["remove_links", "delete_generation", "sync_deletions"]),
    ({"state": "pruned", "keep": 1}, ["remove_links", "delete_generation", "sync_deletions"]),
    ({"state": "initialized", "commons": ["@home", "@srv"]}, ["create_common"]),
]


def test_check_mode_predicts_and_changes_nothing(disk: Disk, pool: Pool) -> None:
    top = str(disk.top)
    for name in ("b", "c", "d", "e"):
        upgrade(top, name)
    ok({"top": top, "state": "present", "name": "b2", "from": "b"})
    for args, expected in CHECK_CASES:
        args = {key: str(minbase_tree(pool)) if value == "MINBASE" else value for key, value in args.items()}
        name = args.get("name")
        if args["state"] == "current":
            args["name"] = name = "b2"
        before = (listing(top), subvolumes(top))
        result = ok(dict(args, top=top), check=True)
        assert (listing(top), subvolumes(top)) == before, "check mode wrote something: %s" % args
        assert result["changed"] and sorted(set(a["action"] for a in result["actions"])) == sorted(set(expected)), args
        if args["state"] == "present":
            assert name in [g["name"] for g in result["generations"]]
        if args["state"] == "current":
            assert result["slots"][0] == "b2" and result["current"] == "b2"
        if args["state"] in ("absent", "pruned"):
            assert "gen-a" not in [g["name"] for g in result["generations"]]


def bad_input_cases(top: str, inside: str) -> list[tuple[dict, str]]:
    return [
        ({"top": "/tmp", "state": "pruned"}, "top: /tmp is on "),
        ({"top": top + "/snapshots", "state": "pruned"}, "top: %s/snapshots is a directory inside a subvolume" % top),
        ({"top": inside, "state": "pruned"}, "top: %s is subvolume id " % inside),
        ({"top": top, "state": "present", "name": "a/b"}, "name: must be a single name without '/' or '..'"),
        ({"top": top, "state": "present", "name": ".."}, "name: must be a single name without '/' or '..'"),
        ({"top": top, "state": "current", "name": "../../etc"}, "name: must be a single name"),
        ({"top": top, "state": "present", "name": "x", "from": "nope"}, "from: generation nope does not exist"),
        ({"top": top, "state": "present", "from": "../x"}, "from: must be a single name"),
        ({"top": top, "state": "pruned", "keep": 0}, "keep: must be at least 1, got 0"),
        ({"top": top, "state": "current"}, "name: state=current needs the name of a generation"),
        ({"top": top, "state": "current", "name": "nope"}, "name: generation nope does not exist"),
        ({"top": top, "state": "present", "source": "/nonexistent/tree"}, "source: /nonexistent/tree does not exist"),
        ({"top": top, "state": "present", "source": top}, "source: %s is the btrfs top level itself" % top),
        ({"top": top, "state": "initialized", "commons": ["home"]}, "commons: each entry must look like @home"),
        ({"top": top, "state": "current", "name": "gen-a", "slots": 0}, "slots: must be between 1 and 64"),
        ({"top": top, "state": "pruned", "pinned": ["a/b"]}, "pinned: must be a single name"),
        ({"top": top, "state": "current", "name": "gen-a", "building": True}, "building: is only used by state=present"),
        ({"top": top, "state": "pruned", "boot_files": ["/vmlinuz"]}, "boot_files: is only used by state=present"),
        ({"top": top, "state": "current", "name": "gen-a", "boot_files": ["vmlinuz"]},
         "boot_files: each entry must be an absolute path"),
    ]


def test_bad_input_is_refused_and_nothing_is_written(disk: Disk, tmp_path: pathlib.Path) -> None:
    top = str(disk.top)
    inside = tmp_path / "inside"
    inside.mkdir()
    run(["mount", "-o", "subvol=/snapshots/gen-a/@", disk.loop_device(), str(inside)])
    try:
        before = (listing(top), subvolumes(top), mountinfo())
        for args, message in bad_input_cases(top, str(inside)):
            rc, result, stderr = module(args)
            assert rc == 1 and result is not None and result["msg"].startswith(message), (args, result, stderr)
            assert result["actions"] == []
        result = ansible_module(None, M, {"top": top, "state": "pruned", "keep": 0})
        assert result.get("failed") and result["msg"] == "keep: must be at least 1, got 0"
        assert (listing(top), subvolumes(top), mountinfo()) == before
    finally:
        run(["umount", str(inside)])


def test_a_foreign_current_link_is_never_replaced(disk: Disk) -> None:
    top = str(disk.top)
    ok({"top": top, "state": "present", "name": "b"})
    target = os.readlink(top + "/current")
    os.unlink(top + "/current")
    os.symlink("/" + target[2:], top + "/current")  # absolute: resolves differently outside the kernel
    before = listing(top)
    rc, result = module({"top": top, "state": "current", "name": "b"})[:2]
    assert rc == 1 and "refusing to replace a link this module did not make" in result["msg"]  # type: ignore[index]
    assert listing(top) == before


def test_a_build_cut_off_is_deleted_by_the_next_and_never_made_current(disk: Disk) -> None:
    """The upgrade of alpine_atomic_root: present with building, the command inside, present again to finish."""
    top = str(disk.top)
    started = ok({"top": top, "state": "present", "name": "cut", "building": True})
    assert started["building"] == "cut" and (disk.top / "building").read_text() == '{"name": "cut"}\n'
    before = listing(top)
    rc, result = module({"top": top, "state": "current", "name": "cut"})[:2]
    assert rc == 1 and result is not None and result["msg"].startswith("name: generation cut was never finished")
    assert listing(top) == before

    # The next build deletes the one that was cut off (no second run, no prune).
    assert ok({"top": top, "state": "present", "name": "next", "building": True})["building"] == "next"
    assert not (disk.top / "snapshots" / "cut").exists()
    assert "snapshots/cut/@" not in subvolumes(top)

    # Its upgrade lost the kernel: /vmlinuz points at a path this host has, but the generation does not.
    root = disk.top / "snapshots" / "next" / "@"
    (root / "vmlinuz").unlink(missing_ok=True)
    (root / "vmlinuz").symlink_to("/proc/version")
    (root / "boot").mkdir(exist_ok=True)
    (root / "boot" / "initrd.img").write_bytes(b"")
    boot_files = ["/vmlinuz", "/boot/initrd.img"]
    before = listing(top)
    rc, result = module({"top": top, "state": "present", "name": "next", "boot_files": boot_files})[:2]
    assert rc == 1 and result is not None, result
    assert result["msg"] == ("boot_files: generation next lacks what its boot entries load: /vmlinuz (-> /proc/version) "
                             "is missing (No such file or directory); /boot/initrd.img is empty; a boot of it would "
                             "find no kernel"), result["msg"]
    assert listing(top) == before, "the refusal left the record and the generation as they were"

    (root / "vmlinuz").unlink()
    (root / "boot" / "vmlinuz-lab").write_bytes(b"kernel")
    (root / "vmlinuz").symlink_to("boot/vmlinuz-lab")
    (root / "boot" / "initrd.img").write_bytes(b"initrd")
    finished = ok({"top": top, "state": "present", "name": "next", "boot_files": boot_files})
    assert finished["changed"] and finished["building"] is None and not (disk.top / "building").exists()
    assert ok({"top": top, "state": "current", "name": "next", "boot_files": boot_files})["current"] == "next"
    assert slots_of(top)[:2] == ["next", "gen-a"]


def test_prune_deletes_a_build_cut_off_whatever_keep_says(disk: Disk) -> None:
    top = str(disk.top)
    ok({"top": top, "state": "present", "name": "cut", "building": True})
    result = ok({"top": top, "state": "pruned", "keep": 10})
    assert [g["name"] for g in result["generations"]] == ["gen-a"] and result["building"] is None
    assert not (disk.top / "building").exists() and not (disk.top / "snapshots" / "cut").exists()
