# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation on hostile input (loop images): a generation whose etc/fstab is not injected never becomes
current; oversized or non-regular templates, sources whose etc is no directory, and the space of deleted copies."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import stat
import typing as t

import pytest

from support.btrfs import Disk, dump, module, ok, run, shared_pool, slots_of, subvolumes


def test_current_refuses_a_generation_whose_fstab_is_not_injected() -> None:
    disk = Disk.create(shared_pool(), "1G", "hostile")
    top = disk.mount()
    try:
        ok({"top": top, "state": "initialized", "name": "gen-a"})
        ok({"top": top, "state": "present", "name": "gen-b"})
        ok({"top": top, "state": "present", "name": "gen-c"})
        before = slots_of(top)
        os.unlink(os.path.join(top, "fstab"))
        for check in (True, False):
            rc, result, stderr = module({"top": top, "state": "current", "name": "gen-b"}, check=check)
            assert result is not None and "Traceback" not in stderr, stderr
            assert result.get("failed") and "refusing to make generation gen-b current" in result["msg"], result
            assert "fstab template, is missing" in result["msg"] and not result["changed"]
        assert slots_of(top) == before

        ok({"top": top, "state": "initialized", "fstab_template": "/snapshots/CURRENT_SNAPSHOTS_PATH / btrfs ro 0 0\n"})
        fstab = os.path.join(top, "snapshots/gen-c/@/etc/fstab")
        with open(fstab, "w", encoding="utf-8") as handle:
            handle.write("/snapshots/gen-a/@ / btrfs ro 0 0\n")
        run(["btrfs", "property", "set", "-ts", os.path.join(top, "snapshots/gen-c/@"), "ro", "true"])
        rc, result, stderr = module({"top": top, "state": "current", "name": "gen-c"})
        assert result is not None and result.get("failed"), (rc, result, stderr)
        assert "read-only" in result["msg"] and slots_of(top) == before
        ok({"top": top, "state": "current", "name": "gen-b"})
        assert slots_of(top)[0] == "gen-b"
    finally:
        disk.discard()


# --- issue 17, lesser cases: an oversized template, a symlinked etc, space after a deletion -----------------------

MIB = 1 << 20


def state_of(top: str) -> tuple[list[str], str]:
    """The subvolume list and a hash over every entry below top (path, type, mode, size, link text, content)."""
    digest = hashlib.sha256()
    for base, directories, files in os.walk(top):
        directories.sort()
        for entry in sorted(directories + files):
            path = os.path.join(base, entry)
            status = os.lstat(path)
            digest.update(("%s %o %d %d\n" % (os.path.relpath(path, top), status.st_mode, status.st_size,
                                              status.st_mtime_ns)).encode("utf-8", "surrogateescape"))
            if stat.S_ISLNK(status.st_mode):
                digest.update(os.readlink(path).encode("utf-8", "surrogateescape"))
            elif stat.S_ISREG(status.st_mode):
                digest.update(pathlib.Path(path).read_bytes())
    return subvolumes(top), digest.hexdigest()


def refused(args: dict[str, t.Any], *phrases: str) -> dict[str, t.Any]:
    """The module fails (in check mode and for real) with every phrase in its message and changes nothing."""
    top = args["top"]
    before = state_of(top)
    result: dict[str, t.Any] = {}
    for check in (True, False):
        rc, outcome, stderr = module(args, check=check)
        assert rc == 1 and outcome is not None and "Traceback" not in stderr, (rc, outcome, stderr)
        result = outcome
        assert result.get("failed") and not result["changed"] and result["actions"] == [], dump(result)
        for phrase in phrases:
            assert phrase in result["msg"], (phrase, result["msg"])
    assert state_of(top) == before
    return result


def source_tree(base: pathlib.Path) -> pathlib.Path:
    tree = base / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\n")
    return tree


@contextlib.contextmanager
def initialized_top(size: str, label: str) -> t.Iterator[str]:
    """A fresh loop btrfs of size, mounted, with its first generation gen-a."""
    disk = Disk.create(shared_pool(), size, label)
    mounted = disk.mount()
    try:
        ok({"top": mounted, "state": "initialized", "name": "gen-a"})
        yield mounted
    finally:
        disk.discard()


@pytest.fixture
def top() -> t.Iterator[str]:
    with initialized_top("1G", "hostile") as mounted:
        yield mounted


def test_an_fstab_template_over_1_mib_is_refused_before_anything_changes(top: str) -> None:
    template = "UUID=x CURRENT_SNAPSHOTS_PATH/@ / btrfs ro 0 0\n"
    huge = template + "#" * (MIB - len(template)) + "\n"
    refused({"top": top, "state": "initialized", "fstab_template": huge}, "fstab_template", "1048576 bytes")
    # 1 MiB exactly is taken, and a long name that renders it past 1 MiB in etc/fstab still converges.
    exact = (template * (MIB // len(template) + 1))[:MIB - 1] + "\n"
    assert len(exact.encode()) == MIB
    ok({"top": top, "state": "initialized", "fstab_template": exact})
    long_name = "g" * 200
    created = ok({"top": top, "state": "present", "name": long_name})
    assert [action["action"] for action in created["actions"]] == ["create_generation", "inject_fstab"]
    assert ok({"top": top, "state": "present", "name": long_name})["actions"] == []
    assert ok({"top": top, "state": "initialized", "fstab_template": exact})["actions"] == []
    assert ok({"top": top, "state": "current", "name": long_name})["slots"][0] == long_name
    fstab = pathlib.Path(top, "snapshots", long_name, "@", "etc/fstab").read_text()
    assert fstab == exact.replace("CURRENT_SNAPSHOTS_PATH", "/snapshots/" + long_name) and len(fstab) > 4 * MIB


def test_a_template_on_disk_over_1_mib_a_fifo_or_a_symlink_is_refused_naming_it(top: str) -> None:
    fstab = pathlib.Path(top, "fstab")
    fstab.write_text("CURRENT_SNAPSHOTS_PATH / btrfs ro 0 0\n" + "#" * MIB + "\n")
    for args in ({"state": "present", "name": "gen-b"}, {"state": "pruned"},
                 {"state": "initialized", "fstab_template": "CURRENT_SNAPSHOTS_PATH / btrfs ro 0 0\n"}):
        refused(dict(args, top=top), "%s/fstab" % top, "regular file of at most 1048576 bytes")
    fstab.unlink()
    os.mkfifo(fstab)
    refused({"top": top, "state": "present", "name": "gen-b"}, "%s/fstab" % top, "regular file")
    fstab.unlink()
    fstab.symlink_to("/dev/zero")
    refused({"top": top, "state": "present", "name": "gen-b"}, "%s/fstab" % top, "regular file")
    fstab.unlink()
    ok({"top": top, "state": "initialized", "fstab_template": "CURRENT_SNAPSHOTS_PATH / btrfs ro 0 0\n"})
    assert ok({"top": top, "state": "present", "name": "gen-b"})["actions"][-1]["action"] == "inject_fstab"


@pytest.mark.parametrize("etc", ["symlink to a directory", "symlink to the host's /etc", "dangling symlink",
                                 "regular file"])
def test_a_source_whose_etc_is_no_directory_is_refused_then_the_fixed_source_works(
        top: str, tmp_path: pathlib.Path, etc: str) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/etc").mkdir(parents=True)
    (tree / "usr/etc/os-release").write_text("ID=debian\n")
    target = {"symlink to a directory": "usr/etc", "symlink to the host's /etc": "/etc",
              "dangling symlink": "nowhere", "regular file": None}[etc]
    if target is None:
        (tree / "etc").write_text("not a directory\n")
    else:
        (tree / "etc").symlink_to(target)
    host_fstab = pathlib.Path("/etc/fstab").read_bytes() if os.path.exists("/etc/fstab") else None
    for args in ({"state": "present", "name": "gen-b", "source": str(tree)},
                 {"state": "present", "name": "gen-b", "source": str(tree), "building": True},
                 {"state": "present", "source": str(tree)}):
        refused(dict(args, top=top), "source", "%s/etc" % tree, "not a directory")
    assert (pathlib.Path("/etc/fstab").read_bytes() if os.path.exists("/etc/fstab") else None) == host_fstab

    (tree / "etc").unlink()
    (tree / "etc").mkdir()
    result = ok({"top": top, "state": "present", "name": "gen-b", "source": str(tree)})
    assert [action["action"] for action in result["actions"]] == ["create_generation", "inject_fstab"]
    assert ok({"top": top, "state": "present", "name": "gen-b", "source": str(tree)})["actions"] == []
    assert ok({"top": top, "state": "current", "name": "gen-b"})["slots"] == ["gen-b", "gen-a", "gen-a", "gen-a"]


def test_a_subvolume_source_or_a_generation_with_a_symlinked_etc_is_refused(top: str) -> None:
    source = os.path.join(top, "source")
    run(["btrfs", "subvolume", "create", source])
    os.symlink("/etc", os.path.join(source, "etc"))
    refused({"top": top, "state": "present", "name": "gen-b", "source": source}, "source", "%s/etc" % source)
    # A generation whose etc became a symlink (inside it, by an upgrade) is no origin for the next one.
    gen_a = os.path.join(top, "snapshots/gen-a/@")
    run(["mv", os.path.join(gen_a, "etc"), os.path.join(gen_a, "etc.real")])
    os.symlink("etc.real", os.path.join(gen_a, "etc"))
    refused({"top": top, "state": "present", "name": "gen-b"}, "from", "%s/etc" % gen_a)
    refused({"top": top, "state": "present", "name": "gen-b", "from": "gen-a"}, "from", "%s/etc" % gen_a)


def test_a_source_whose_etc_fstab_is_a_symlink_gets_a_regular_fstab_and_the_target_is_untouched(
        top: str, tmp_path: pathlib.Path) -> None:
    tree = source_tree(tmp_path)
    bait = tmp_path / "bait"
    bait.write_text("untouched\n")
    for name, target in (("gen-b", str(bait)), ("gen-c", "/dev/zero"), ("gen-d", "../nowhere")):
        (tree / "etc/fstab").unlink(missing_ok=True)
        (tree / "etc/fstab").symlink_to(target)
        ok({"top": top, "state": "present", "name": name, "source": str(tree)})
        assert ok({"top": top, "state": "present", "name": name, "source": str(tree)})["actions"] == []
        fstab = pathlib.Path(top, "snapshots", name, "@", "etc/fstab")
        assert not fstab.is_symlink() and "/snapshots/%s/@" % name in fstab.read_text()
    assert bait.read_text() == "untouched\n"


def test_a_source_whose_etc_fstab_is_a_directory_is_refused(top: str, tmp_path: pathlib.Path) -> None:
    tree = source_tree(tmp_path)
    (tree / "etc/fstab").mkdir()
    refused({"top": top, "state": "present", "name": "gen-b", "source": str(tree)}, "source",
            "%s/etc/fstab" % tree)
    (tree / "etc/fstab").rmdir()
    ok({"top": top, "state": "present", "name": "gen-b", "source": str(tree)})


# ENOSPC: a deleted subvolume's space comes back only when the btrfs cleaner has dropped it, asynchronously.

def allocate(path: str, size: int) -> bool:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        return True
    except OSError:
        os.unlink(path)
        return False
    finally:
        os.close(fd)


def fill(top: str, leave: int) -> None:
    """Allocate data until about `leave` bytes can still be written."""
    reserve = os.path.join(top, "reserve")
    assert allocate(reserve, leave)
    size, number = 1 << 34, 0
    while size >= 4096:
        if allocate(os.path.join(top, "filler-%d" % number), size):
            number += 1
        else:
            size //= 2
    os.unlink(reserve)
    run(["btrfs", "filesystem", "sync", top])


@pytest.fixture
def small_top() -> t.Iterator[str]:
    with initialized_top("512M", "enospc") as mounted:
        yield mounted


def big_tree(base: pathlib.Path, size: int) -> pathlib.Path:
    tree = source_tree(base)
    with open(tree / "big", "wb") as handle:
        for _chunk in range(size // MIB):
            handle.write(os.urandom(MIB))
    return tree


def test_after_enospc_the_partial_copy_is_reclaimed_before_the_module_returns(
        small_top: str, tmp_path: pathlib.Path) -> None:
    top = small_top
    tree = big_tree(tmp_path, 64 * MIB)
    assert allocate(os.path.join(top, "cause"), 48 * MIB)
    fill(top, leave=40 * MIB)
    rc, result = module({"top": top, "state": "present", "name": "big", "source": str(tree)})[:2]
    assert rc == 1 and result is not None and "No space left on device" in result["msg"], dump(result or {})
    assert "partial copy was deleted" in result["msg"]
    assert not [path for path in subvolumes(top) if "big" in path]
    # 48 MiB freed: the 64 MiB copy fits only with the 40 MiB the deleted partial copy held.
    os.unlink(os.path.join(top, "cause"))
    result = ok({"top": top, "state": "present", "name": "big", "source": str(tree)})
    assert [action["action"] for action in result["actions"]] == ["create_generation", "inject_fstab"]
    assert pathlib.Path(top, "snapshots/big/@/big").stat().st_size == 64 * MIB
    assert ok({"top": top, "state": "present", "name": "big", "source": str(tree)})["actions"] == []


def test_a_rerun_waits_for_the_space_of_the_staging_copy_it_deletes(small_top: str, tmp_path: pathlib.Path) -> None:
    top = small_top
    tree = big_tree(tmp_path, 64 * MIB)
    # What a run killed after its copy leaves: a complete staging subvolume of 64 MiB.
    staging = os.path.join(top, "snapshots/.partial-big")
    run(["btrfs", "subvolume", "create", staging])
    run(["cp", "-a", "--", str(tree) + "/.", staging + "/"])
    fill(top, leave=40 * MIB)
    result = ok({"top": top, "state": "present", "name": "big", "source": str(tree)})
    assert [action["action"] for action in result["actions"]] == ["create_generation", "inject_fstab"]
    assert not [path for path in subvolumes(top) if ".partial-" in path]
    assert pathlib.Path(top, "snapshots/big/@/big").stat().st_size == 64 * MIB
