# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usr_move_check on a real split Debian tree (debootstrap --no-merged-usr bookworm) on btrfs, and on tmpfs trees
with a separate /usr, in private mount namespaces: preflight refusals, the manifest around a real
usrmerge_symlinks run, and a verification that catches changed bytes."""

from __future__ import annotations

import fcntl
import json
import pathlib
import typing as t

import pytest

from support.modules import direct_module
from support.namespace import MountNamespace
from support.usrmerge import BtrfsPool, split_usr_tarball

MODULE = "usr_move_check"


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[BtrfsPool]:
    btrfs = BtrfsPool(tmp_path_factory.mktemp("usr-move"))
    try:
        btrfs.from_tarball("pristine", split_usr_tarball())
        yield btrfs
    finally:
        btrfs.close()


def run(ns: MountNamespace, args: dict[str, t.Any], check: bool = False) -> tuple[int, dict[str, t.Any]]:
    rc, result, stderr = direct_module(ns, MODULE, args, check=check)
    assert result is not None, stderr
    return rc, result


def checks_of(result: dict[str, t.Any]) -> dict[str, bool]:
    return {check["name"]: check["passed"] for check in result["checks"]}


def test_record_move_verify_on_the_split_tree(split: BtrfsPool) -> None:
    root = split.snapshot("pristine", "moved")
    manifest = root + "/var/lib/gentoo-usr-move/manifest.json"
    args = {"stage": "record", "root": root, "manifest": manifest}
    try:
        rc, predicted = run(split.ns, args, check=True)
        assert rc == 0 and predicted["changed"] and not split.view("moved").joinpath(
            "var/lib/gentoo-usr-move/manifest.json").exists()
        rc, recorded = run(split.ns, args)
        assert rc == 0 and recorded["changed"] and recorded["recorded"] == predicted["recorded"] > 200
        assert run(split.ns, args)[1]["changed"] is False
        paths = json.loads(split.view("moved").joinpath("var/lib/gentoo-usr-move/manifest.json").read_text())["paths"]
        assert paths["/bin"] == "directory" and paths["/bin/ls"].startswith("sha256:")

        rc, merged, stderr = direct_module(split.ns, "usrmerge_symlinks", {"root": root})
        assert rc == 0 and merged is not None and merged["verified"], stderr
        rc, verified = run(split.ns, {"stage": "verify", "root": root, "manifest": manifest})
        assert rc == 0, verified["msg"]
        assert verified["verification"]["differing"] == [] and verified["verification"]["checked_paths"] == len(paths)
        assert verified["verification"]["checked_binaries"] > 50
        assert verified["verification"]["broken_interpreters"] == []
        # Once merged there is nothing left to record: the manifest of the split layout stays.
        assert run(split.ns, args)[1]["changed"] is False

        split.ns.sh("printf changed > %s/usr/bin/ls" % root)
        rc, caught = run(split.ns, {"stage": "verify", "root": root, "manifest": manifest})
        assert rc != 0 and caught["failed"]
        assert "/bin/ls: expected sha256:" in caught["msg"] and "/usr/bin/ls: expected" not in caught["msg"]
        assert "/bin/ls" in " ".join(caught["verification"]["differing"])

        split.ns.sh("rm -f %s/usr/lib64/ld-linux-x86-64.so.2 %s/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
                    % (root, root))
        rc, broken = run(split.ns, {"stage": "verify", "root": root, "manifest": manifest})
        assert rc != 0 and "/usr/bin/bash: /lib64/ld-linux-x86-64.so.2" in broken["verification"]["broken_interpreters"]
    finally:
        split.delete("moved")


def test_preflight_passes_then_names_locks_and_a_read_only_root(split: BtrfsPool) -> None:
    root = split.snapshot("pristine", "locks")
    try:
        rc, passed = run(split.ns, {"stage": "preflight", "root": root})
        assert rc == 0 and all(checks_of(passed).values()) and passed["os_id"] == "debian"
        assert passed["usr_separate"] is False and passed["root_fstype"] == "btrfs" and passed["merged"] is False

        # dpkg's lock file always exists; only a held lock means dpkg runs (on a btrfs subvolume, whose st_dev
        # is not the superblock's device /proc/locks names).
        lock_path = split.view("locks") / "var/lib/dpkg/lock-frontend"
        with open(lock_path, "r+b") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            rc, locked = run(split.ns, {"stage": "preflight", "root": root}, check=True)
        assert rc != 0 and checks_of(locked)["package_manager"] is False
        assert "dpkg: %s/var/lib/dpkg/lock-frontend is locked by pid" % root in locked["msg"]
        assert locked["msg"].startswith("preflight refused the /usr move, nothing was changed")

        split.ns.sh("mkdir -p %s/var/lib/pacman && : > %s/var/lib/pacman/db.lck" % (root, root))
        rc, pacman = run(split.ns, {"stage": "preflight", "root": root})
        assert rc != 0 and "pacman: %s/var/lib/pacman/db.lck exists" % root in pacman["msg"]
        split.ns.sh("rm %s/var/lib/pacman/db.lck" % root)

        split.ns.sh("mount --bind %s %s && mount -o remount,bind,ro %s" % (root, root, root))
        rc, read_only = run(split.ns, {"stage": "preflight", "root": root})
        assert rc != 0 and checks_of(read_only) == {"initramfs": True, "space": True, "package_manager": True,
                                                    "root_writable": False}
        assert "root_writable: / (btrfs) is mounted read-only" in read_only["msg"]
    finally:
        split.ns.run(["umount", root], check=False)
        split.delete("locks")


def test_separate_usr_needs_an_initramfs_that_mounts_it_and_room(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    root = str(tmp_path / "root")
    ns.sh("""
        mkdir -p {r} && mount -t tmpfs -o size=64m tree {r}
        mkdir -p {r}/bin {r}/lib {r}/etc {r}/usr
        mount -t tmpfs -o size=2m usr {r}/usr
        mkdir -p {r}/usr/bin {r}/usr/lib
        head -c 3145728 /dev/zero > {r}/bin/big
        : > {r}/usr/bin/mkinitcpio
        printf '/dev/vda1 / ext4 rw 0 1\\n/dev/vda2 /usr ext4 rw 0 2\\n' > {r}/etc/fstab
        printf 'HOOKS=(base udev autodetect modconf block filesystems fsck)\\n' > {r}/etc/mkinitcpio.conf
    """.format(r=root))
    rc, refused = run(ns, {"stage": "preflight", "root": root})
    assert rc != 0 and refused["usr_separate"]
    assert checks_of(refused) == {"initramfs": False, "space": False, "package_manager": True, "root_writable": True}
    assert refused["initramfs"] == {"generator": "mkinitcpio", "inspected": root + "/etc/mkinitcpio.conf",
                                    "mounts_usr": False,
                                    "missing": "HOOKS=(base udev autodetect modconf block filesystems fsck) has "
                                               "neither the usr nor the systemd hook"}
    assert "initramfs: /usr is a separate filesystem (usr) and must be mounted by the initramfs; checked mkinitcpio" \
        in refused["msg"]
    assert "space: the /usr filesystem has" in refused["msg"] and "but the move copies 3.0 MiB" in refused["msg"]

    ns.sh("rm {r}/bin/big && mkdir -p {r}/etc/mkinitcpio.conf.d && "
          "echo 'HOOKS=(base udev usr block filesystems)' > {r}/etc/mkinitcpio.conf.d/usr.conf".format(r=root))
    rc, passed = run(ns, {"stage": "preflight", "root": root})
    assert rc == 0 and all(checks_of(passed).values()) and passed["initramfs"]["mounts_usr"]


def test_compatibility_paths_must_resolve_where_usr_has_them(tmp_path: pathlib.Path) -> None:
    from ansible_collections.immutable.root.plugins.module_utils._usrmove.observe import missing_compat_links

    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/sh").write_text("")
    (tmp_path / "usr/lib64").mkdir()
    links = ["/bin/sh", "/lib64/ld-linux-x86-64.so.2"]
    assert missing_compat_links(str(tmp_path), links) == ("/bin/sh",)  # no loader in /usr: nothing to resolve
    (tmp_path / "bin").symlink_to("usr/bin")
    assert missing_compat_links(str(tmp_path), links) == ()


def test_snapshot_of_a_split_btrfs_root_is_read_only_and_refused_where_it_cannot_be(split: BtrfsPool) -> None:
    root = split.snapshot("pristine", "snapme")
    snapshots = split.path("snapshots")
    args = {"stage": "snapshot", "root": root, "snapshot_dir": snapshots}
    try:
        rc, predicted = run(split.ns, args, check=True)
        assert rc == 0 and predicted["changed"] and predicted["snapshot"].startswith(snapshots + "/usr-move-")
        assert not split.view("snapshots").exists(), "check mode created the snapshot directory"

        rc, taken = run(split.ns, args)
        assert rc == 0 and taken["changed"] and taken["root_fstype"] == "btrfs" and not taken["merged"], taken
        name = taken["snapshot"][len(snapshots) + 1:]
        # The oracle is btrfs itself: a read-only subvolume holding the same bytes as the root.
        shown = split.ns.run(["btrfs", "subvolume", "show", taken["snapshot"]]).stdout
        assert "Flags:" in shown and "readonly" in shown, shown
        assert split.view("snapshots/" + name + "/bin/ls").read_bytes() == split.view("snapme/bin/ls").read_bytes()

        # Refusals name their reason and create nothing.
        other = split.workdir / "other"
        split.ns.sh("mkdir -p %s && mount -t tmpfs -o size=1m other %s" % (other, other))
        elsewhere = "%s/snapshots" % other
        rc, refused = run(split.ns, dict(args, snapshot_dir=elsewhere))
        assert rc != 0 and "snapshot_dir: %s is not on the btrfs filesystem of %s" % (elsewhere, root) in refused["msg"]
        split.ns.sh("test ! -e %s" % elsewhere)
        split.ns.sh("mkdir -p %s/plain/bin %s/plain/usr/bin" % (root, root))
        rc, refused = run(split.ns, dict(args, root=root + "/plain"))
        assert rc != 0 and "not a subvolume" in refused["msg"], refused["msg"]
        split.ns.sh("rm -rf %s/plain" % root)

        # Once the root is merged there is nothing to undo.
        rc, merged, stderr = direct_module(split.ns, "usrmerge_symlinks", {"root": root})
        assert rc == 0 and merged is not None, stderr
        rc, after = run(split.ns, args)
        assert rc == 0 and not after["changed"] and after["snapshot"] is None and after["merged"]
        assert split.ns.run(["ls", snapshots]).stdout.split() == [name]
    finally:
        split.ns.sh("for s in %s/usr-move-*; do [ -e \"$s\" ] && btrfs -q subvolume delete \"$s\"; done; "
                    "rmdir %s 2>/dev/null; true" % (snapshots, snapshots))
        split.delete("snapme")


def test_snapshot_refuses_a_root_that_is_not_btrfs(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "tree"
    ns.sh("mkdir -p {r} && mount -t tmpfs -o size=8m tree {r} && mkdir -p {r}/bin {r}/usr/bin {r}/etc".format(r=root))
    rc, refused = run(ns, {"stage": "snapshot", "root": str(root), "snapshot_dir": "%s/.snapshots" % root})
    assert rc != 0 and "stage=snapshot needs a btrfs root: %s is tmpfs" % root in refused["msg"]
    ns.sh("test ! -e %s/.snapshots" % root)
