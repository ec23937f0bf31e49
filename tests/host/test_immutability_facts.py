# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""immutability_facts against what the other modules really produce: a sysext merge, an ro_bind lock, a
btrfs_generation layout on a loop image (found through a mount, and through a private read-only mount), a
split-/usr Debian tree before and after usrmerge_symlinks, and a tree where nothing is applied."""

from __future__ import annotations

import pathlib
import subprocess
import time
import typing as t

import pytest

from support.btrfs import Disk, Pool, minbase_tree, mountinfo, ok, run, shared_pool
from support.modules import ansible_module, direct_module
from support.namespace import MountNamespace
from support.sysext import make_extension
from support.usrmerge import BtrfsPool, split_usr_tarball

M = "immutability_facts"


def facts(ns: MountNamespace | None, args: dict[str, t.Any]) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, M, args)
    assert rc == 0 and result is not None and not result.get("failed"), stderr or result
    assert result["changed"] is False
    return t.cast(dict, result["ansible_facts"]["immutable_root"])


def test_nothing_applied_is_absent_not_an_error(ns: MountNamespace, root: pathlib.Path) -> None:
    result = ansible_module(ns, M, {"root": str(root)}, check=True)
    assert not result.get("failed") and result["changed"] is False, result
    found = result["ansible_facts"]["immutable_root"]
    assert found["os"]["id"] == "debian" and found["locks"] == [] and found["warnings"] == []
    assert not found["sysext"]["merged"] and found["sysext"]["env"] == [] and found["sysext"]["extensions"] == []
    assert found["generations"]["layout_found"] is False and found["boot"] == {"esp": None, "entries": []}
    assert found["usrmerge"]["state"] == "merged"  # make_root has no /bin at all: nothing is split
    assert found["root"]["path"] == str(root) and not found["usr"]["own_mount"]


def test_sysext_merge_and_its_configuration(sxns: MountNamespace, root: pathlib.Path) -> None:
    make_extension(root / "var/lib/extensions/tool", "tool",
                   release="ID=debian\nVERSION_ID=12\nSYSEXT_VERSION_ID=1.2.3\n",
                   files={"usr/bin/tool": "t", "opt/tool/data": "d"})
    dropin = root / "etc/systemd/system/systemd-sysext.service.d"
    dropin.mkdir(parents=True)
    (dropin / "opt.conf").write_text('[Service]\nEnvironment="SYSTEMD_SYSEXT_HIERARCHIES=/usr:/opt"\n')
    (root / "etc/profile.d").mkdir(parents=True)
    (root / "etc/profile.d/sysext.sh").write_text('export SYSTEMD_SYSEXT_HIERARCHIES="/usr"\n')
    merged = ansible_module(sxns, "sysext_merge", {"root": str(root), "hierarchies": ["/usr", "/opt"]})
    assert merged["changed"], merged

    found = facts(sxns, {"root": str(root)})
    sysext = found["sysext"]
    assert sysext["merged"]
    assert [(item["path"], item["merged"], item["extensions"]) for item in sysext["hierarchies"]] == [
        ("/usr", True, ["tool"]), ("/opt", True, ["tool"])]
    (tool,) = sysext["extensions"]
    assert (tool["name"], tool["version"], tool["hierarchies"]) == ("tool", "1.2.3", ["/usr", "/opt"])
    places = {(item["place"], item["value"]) for item in sysext["env"]}
    assert places == {("sysext_service", "/usr:/opt"), ("profile", "/usr")}
    assert any("differs between the places" in warning for warning in found["warnings"])
    assert found["usr"]["own_mount"] and found["usr"]["fstype"] == "overlay" and found["usr"]["read_only"]
    assert found["usr"]["overlay"]["lowerdir"], "the overlay's layers are listed"


def test_ro_bind_lock_and_its_unit(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "tree"
    (tree / "var/lib/pacman").mkdir(parents=True)
    (tree / "etc/systemd/system").mkdir(parents=True)
    ns.run(["mount", "-t", "tmpfs", "tree", str(tree)])
    for directory in ("var/lib/pacman", "etc/systemd/system", "usr"):
        ns.run(["mkdir", "-p", str(tree / directory)])
    locked = ansible_module(ns, "ro_bind", {"path": str(tree / "var/lib/pacman"), "persist": "systemd",
                                            "unit_dir": str(tree / "etc/systemd/system")})
    assert locked["changed"], locked
    (lock,) = facts(ns, {"root": str(tree)})["locks"]
    assert lock["path"] == str(tree / "var/lib/pacman") and lock["read_only"] and lock["layers"] == 1
    # systemd's own escaping is the oracle for the unit name ro_bind wrote.
    expected = subprocess.run(["systemd-escape", "--path", "--suffix=mount", str(tree / "var/lib/pacman")],
                              check=True, capture_output=True, text=True).stdout.strip()
    assert (tree / "etc/systemd/system" / expected).is_file() or ns.run(["test", "-f", str(tree / "etc/systemd/system" / expected)])
    assert lock["unit"] == expected and lock["persisted"] == "unit"
    ns.run(["umount", str(tree / "var/lib/pacman")])
    assert facts(ns, {"root": str(tree)})["locks"] == []


@pytest.fixture(scope="module")
def pool() -> Pool:
    return shared_pool()


@pytest.fixture
def disk(pool: Pool) -> t.Iterator[Disk]:
    disk = Disk.create(pool, "2G", "facts")
    top = disk.mount()
    ok({"top": top, "state": "initialized", "name": "gen-a", "source": str(minbase_tree(pool))})
    ok({"top": top, "state": "present", "name": "gen-b"})
    ok({"top": top, "state": "current", "name": "gen-b"})
    yield disk
    disk.discard()


def booted_root(top: str, target: pathlib.Path) -> str:
    """Mount slot 0 the way the boot loader configuration does (subvol=/current/0/@)."""
    target.mkdir(exist_ok=True)
    device = [line.split()[-2] for line in mountinfo().splitlines() if " %s " % top in line][0]
    run(["mount", "-o", "ro,subvol=/current/0/@", device, str(target)])
    return device


def test_generations_through_a_mounted_top_and_a_private_one(disk: Disk, tmp_path: pathlib.Path) -> None:
    top = str(disk.top)
    pathlib.Path(top, "tentative").write_text("gen-b\n")
    booted = tmp_path / "booted"
    booted_root(top, booted)
    try:
        found = facts(None, {"root": str(booted)})
        generations = found["generations"]
        assert generations["layout_found"] and generations["top"].endswith(" at " + top)
        assert (generations["current"], generations["booted"]) == ("gen-b", "gen-b")
        assert generations["slots"] == ["gen-b", "gen-a", "gen-a", "gen-a"]
        assert (generations["tentative"], generations["blessed"]) == ("gen-b", False)
        assert found["root"]["fstype"] == "btrfs" and found["root"]["read_only"]
        assert found["root"]["subvolume"].endswith("/@")

        # Without any mount of the top level, the module mounts it read-only in its own namespace.
        disk.umount()
        before = mountinfo()
        found = facts(None, {"root": str(booted)})
        assert "privately" in found["generations"]["top"] and found["generations"]["booted"] == "gen-b"
        assert mountinfo() == before, "the private mount never reaches the caller's mount table"
    finally:
        run(["umount", str(booted)])


def test_explicit_top_and_check_mode_change_nothing(disk: Disk) -> None:
    top = str(disk.top)
    listing = sorted(p.name for p in pathlib.Path(top).iterdir())
    rc, result, _stderr = direct_module(None, M, {"root": "/", "btrfs_top": top, "probe_esp": False}, check=True)
    assert rc == 0 and result is not None
    generations = result["ansible_facts"]["immutable_root"]["generations"]
    assert generations["current"] == "gen-b" and generations["booted"] is None
    assert sorted(p.name for p in pathlib.Path(top).iterdir()) == listing


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[BtrfsPool]:
    btrfs = BtrfsPool(tmp_path_factory.mktemp("facts-usrmerge"))
    try:
        btrfs.from_tarball("pristine", split_usr_tarball())
        yield btrfs
    finally:
        btrfs.close()


def test_usrmerge_split_partial_merged_on_the_split_tree(split: BtrfsPool) -> None:
    root = split.snapshot("pristine", "case")
    try:
        started = time.perf_counter()
        found = facts(split.ns, {"root": root})
        elapsed = time.perf_counter() - started
        assert found["os"]["id"] == "debian"
        assert found["usrmerge"]["state"] == "split" and found["usrmerge"]["offending"] == []
        assert found["usrmerge"]["paths"]["/bin"] == "directory"
        assert elapsed < 5, "facts on a split tree took %.1f s" % elapsed

        # An interrupted merge: /bin already a symlink while /sbin and /lib are still directories.
        view = split.view("case")
        split.ns.run(["sh", "-ec", "cd %s && mv bin .usrmerge~bin && ln -s usr/bin bin" % root])
        partial = facts(split.ns, {"root": root})["usrmerge"]
        assert partial["state"] == "partial" and "/.usrmerge~bin" in partial["offending"]
        assert "/sbin" in partial["offending"] and "/bin" not in partial["offending"]
        split.ns.run(["sh", "-ec", "cd %s && rm bin && mv .usrmerge~bin bin" % root])
        assert (view / "bin").is_dir()

        merged = direct_module(split.ns, "usrmerge_symlinks", {"root": root})
        assert merged[0] == 0 and merged[1] and merged[1]["changed"], merged[2]
        assert facts(split.ns, {"root": root})["usrmerge"] == {
            "state": "merged", "offending": [],
            "paths": {"/bin": "symlink -> usr/bin", "/sbin": "symlink -> usr/sbin", "/lib": "symlink -> usr/lib",
                      "/lib64": "symlink -> usr/lib64"}}
    finally:
        split.delete("case")


def test_a_given_esp_is_mounted_only_when_a_filesystem_is_mounted_right_there(tmp_path: pathlib.Path) -> None:
    """A plain directory where the ESP belongs (the ESP not mounted) must not pass for a mounted ESP.

    This machine's kernel has no vfat, so a btrfs image stands in: the facts report what is mounted, and the
    role refuses anything but vfat."""
    image, esp, plain = tmp_path / "esp.img", tmp_path / "esp", tmp_path / "plain"
    esp.mkdir()
    plain.mkdir()
    run(["truncate", "-s", "120M", str(image)])
    run(["mkfs.btrfs", "-q", str(image)])
    # This test process runs in a private mount namespace (scripts/test.sh): the mount is invisible to the host.
    run(["mount", "-o", "loop", str(image), str(esp)])
    try:
        mounted = facts(None, {"root": "/", "esp": str(esp), "probe_esp": False})["boot"]["esp"]
        assert mounted["path"] == str(esp) and mounted["mounted"] and mounted["fstype"] == "btrfs"
        assert mounted["free_bytes"] > 30 << 20 and mounted["device"].startswith("/dev/loop")
        directory = facts(None, {"root": "/", "esp": str(plain), "probe_esp": False})["boot"]["esp"]
        assert directory["path"] == str(plain) and not directory["mounted"]
        assert directory["fstype"] is None and directory["device"] is None
    finally:
        run(["umount", str(esp)])
