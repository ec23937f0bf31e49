# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""immutability_facts' pure views: mount views, locks, env places, the /usr merge state."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._facts import (
    assignments, env_places, hierarchies_to_check, lock_unit, locks, mount_view, mutable_options, overlay_layers,
    sysext_warnings, usrmerge_view,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import parse_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import Node

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

# A sysext merge over /usr as systemd-sysext 252 leaves it (overlay source "sysext", lowerdirs top first).
SYSEXT_MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro
80 22 0:45 / /usr ro,nodev,relatime shared:40 - overlay sysext ro,lowerdir=/run/systemd/sysext/meta/usr:/run/systemd/sysext/extensions/ripgrep/usr:/usr
81 22 254:0 /var/lib/pacman /var/lib/pacman ro,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro
"""


def test_kairos_assignments_in_every_form() -> None:
    # The three forms the Kairos seed writes, a kernel command line, and comments that must not count.
    value = "/usr/local/bin:/usr/bin:/opt"
    assert assignments('Environment="SYSTEMD_SYSEXT_HIERARCHIES=%s"\n' % value, "SYSTEMD_SYSEXT_HIERARCHIES") == [value]
    assert assignments("Environment=SYSTEMD_SYSEXT_HIERARCHIES=%s\n" % value, "SYSTEMD_SYSEXT_HIERARCHIES") == [value]
    assert assignments('export SYSTEMD_SYSEXT_HIERARCHIES="%s"\n' % value, "SYSTEMD_SYSEXT_HIERARCHIES") == [value]
    assert assignments("SYSTEMD_SYSEXT_HIERARCHIES='/usr'\n", "SYSTEMD_SYSEXT_HIERARCHIES") == ["/usr"]
    assert assignments("quiet systemd.setenv=SYSTEMD_SYSEXT_HIERARCHIES=/usr:/opt rw",
                       "SYSTEMD_SYSEXT_HIERARCHIES") == ["/usr:/opt"]
    assert assignments("# export SYSTEMD_SYSEXT_HIERARCHIES=/opt\n; Environment=SYSTEMD_SYSEXT_HIERARCHIES=/x\n",
                       "SYSTEMD_SYSEXT_HIERARCHIES") == []
    assert assignments("MY_SYSTEMD_SYSEXT_HIERARCHIES=/opt\n", "SYSTEMD_SYSEXT_HIERARCHIES") == []


def test_env_places_and_inconsistency_warning() -> None:
    texts = [("sysext_service", "/etc/systemd/system/systemd-sysext.service.d/kairos.conf",
              '[Service]\nEnvironment="SYSTEMD_SYSEXT_HIERARCHIES=/usr:/opt"\n'),
             ("profile", "/etc/profile.d/systemd-sysext.sh", 'export SYSTEMD_SYSEXT_HIERARCHIES="/usr:/opt"\n')]
    env = env_places(texts, "SYSTEMD_SYSEXT_HIERARCHIES")
    assert [item["place"] for item in env] == ["sysext_service", "profile"]
    assert sysext_warnings(env) == []
    assert hierarchies_to_check(env) == ["/usr", "/opt"]
    texts.append(("initramfs", "/etc/dracut.conf.d/sysext.conf", "SYSTEMD_SYSEXT_HIERARCHIES=/usr:/srv\n"))
    env = env_places(texts, "SYSTEMD_SYSEXT_HIERARCHIES")
    (warning,) = sysext_warnings(env)
    assert "/etc/dracut.conf.d/sysext.conf (initramfs) = /usr:/srv" in warning
    assert hierarchies_to_check(env) == ["/usr", "/opt", "/srv"]


def test_mutable_options_only_on_exec_start() -> None:
    text = "[Service]\nExecStart=\nExecStart=systemd-sysext refresh --mutable=ephemeral\n# ExecStart=x --mutable=yes\n"
    assert mutable_options(text) == ["ephemeral"]
    assert mutable_options("Description=--mutable=yes\n") == []


def test_mount_views_of_a_sysext_merge() -> None:
    mounts = parse_mountinfo(SYSEXT_MOUNTINFO)
    root = mount_view(mounts, "/")
    assert (root["source"], root["fstype"], root["read_only"], root["own_mount"], root["overlay"]) == (
        "/dev/vda", "ext4", False, True, None)
    usr = mount_view(mounts, "/usr")
    assert usr["own_mount"] and usr["read_only"] and usr["fstype"] == "overlay"
    assert usr["overlay"] == {"lowerdir": ["/run/systemd/sysext/meta/usr", "/run/systemd/sysext/extensions/ripgrep/usr",
                                           "/usr"], "upperdir": None, "workdir": None}
    # A path below no mount of its own is shown with the mount that holds it.
    etc = mount_view(mounts, "/etc")
    assert etc["mountpoint"] == "/" and not etc["own_mount"]
    assert mount_view((), "/")["mountpoint"] is None


def test_overlay_with_upper_layer() -> None:
    (mount,) = parse_mountinfo("5 1 0:50 / /opt rw - overlay sysext rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n")
    assert overlay_layers(mount) == {"lowerdir": ["/a", "/b"], "upperdir": "/u", "workdir": "/w"}


def test_btrfs_subvolume_of_a_generation_root() -> None:
    mounts = parse_mountinfo((FIXTURES.parent / "_btrfs" / "fixtures" / "mountinfo_generation_mounted.txt").read_text())
    view = mount_view(mounts, "/tmp/bx/G")
    assert view["subvolume"] == "/snapshots/20261123194743AvPtLAvN/@" and view["read_only"]


def test_locks_from_captured_mountinfo() -> None:
    # Captured: a writable self-bind, a read-only one on top, and a foreign tmpfs over both.
    mounts = parse_mountinfo((FIXTURES.parent / "_linux" / "fixtures" / "mountinfo_private.txt").read_text())
    # The foreign tmpfs on top of pacman's stack hides its lock; /locked is a plain read-only self-bind.
    assert locks(mounts, (), set()) == [{"path": "/tmp/cap/root/locked", "read_only": True, "unit": None,
                                         "persisted": None, "layers": 1}]
    without_foreign = tuple(entry for entry in mounts if entry.source != "foreign")
    pacman = locks(without_foreign, (), set())[1]
    assert pacman == {"path": "/tmp/cap/root/var/lib/pacman", "read_only": True, "unit": None, "persisted": None,
                      "layers": 2}


def test_lock_units() -> None:
    mounts = parse_mountinfo(SYSEXT_MOUNTINFO)
    (lock,) = locks(mounts, (), {"var-lib-pacman.mount"})
    assert (lock["unit"], lock["persisted"], lock["read_only"]) == ("var-lib-pacman.mount", "unit", True)
    fstab = parse_fstab("/var/lib/pacman /var/lib/pacman none bind,ro 0 0\n")
    assert lock_unit("/var/lib/pacman", fstab, set()) == ("var-lib-pacman.mount", "fstab")
    assert lock_unit("/var/lib/pacman", parse_fstab("/dev/x /var/lib/pacman ext4 ro 0 0\n"), set()) == (None, None)


def node(kind: str, target: str = "") -> Node:
    return Node(kind, 0o755, 0, 0, 1, 2, target=target)


@pytest.mark.parametrize("tops,links,names,state,offending", [
    # Debian bookworm merged (ext4 lab image): the four symlinks.
    ({"usr": node("dir"), "bin": node("link", "usr/bin"), "sbin": node("link", "usr/sbin"),
      "lib": node("link", "usr/lib"), "lib64": node("link", "usr/lib64")},
     {"bin": "usr/bin", "sbin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64"}, [], "merged", []),
    # debootstrap --no-merged-usr (split-usr lab image).
    ({"usr": node("dir"), "bin": node("dir"), "sbin": node("dir"), "lib": node("dir"), "lib64": node("dir")},
     {}, [], "split", []),
    # Half-way: bin moved, lib not yet, and a leftover of an interrupted run.
    ({"usr": node("dir"), "bin": node("link", "usr/bin"), "lib": node("dir")}, {"bin": "usr/bin"},
     [".usrmerge~lib"], "partial", ["/.usrmerge~lib", "/lib"]),
    # A symlink that leads somewhere else than /usr, or is dangling.
    ({"usr": node("dir"), "bin": node("link", "/opt/bin")}, {"bin": "opt/bin"}, [], "partial", ["/bin"]),
    ({"usr": node("dir"), "bin": node("link", "usr/bin")}, {"bin": ""}, [], "partial", ["/bin"]),
    # A regular file where a directory belongs.
    ({"usr": node("dir"), "lib": node("file")}, {}, [], "partial", ["/lib"]),
    # No /usr at all (a tree that is not a system), and nothing at all.
    ({"bin": node("dir")}, {}, [], "split", []),
    ({"usr": node("dir")}, {}, [], "merged", []),
])
def test_usrmerge_states(tops: dict, links: dict, names: list, state: str, offending: list) -> None:
    view = usrmerge_view(tops, links, names)
    assert (view["state"], view["offending"]) == (state, offending)


def test_usrmerge_paths_words() -> None:
    view = usrmerge_view({"usr": node("dir"), "bin": node("link", "usr/bin"), "lib": node("dir")}, {"bin": "usr/bin"}, [])
    assert view["paths"] == {"/bin": "symlink -> usr/bin", "/lib": "directory"}


def test_captured_split_usr_sepusr_vm() -> None:
    # /proc/self/mountinfo, /etc/fstab and os-release captured on a booted split-usr-sepusr lab VM.
    from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import parse_release

    captured = FIXTURES / "facts"
    mounts = parse_mountinfo((captured / "mountinfo_split_usr_sepusr.txt").read_text())
    root, usr = mount_view(mounts, "/"), mount_view(mounts, "/usr")
    assert (root["source"], root["fstype"], root["own_mount"], root["read_only"]) == ("/dev/vda1", "ext4", True, False)
    assert (usr["source"], usr["mountpoint"], usr["own_mount"]) == ("/dev/vda2", "/usr", True)
    assert mount_view(mounts, "/usr/bin")["mountpoint"] == "/usr"
    fstab = parse_fstab((captured / "fstab_split_usr_sepusr.txt").read_text())
    # Nothing on the VM is a self-bind: /run/credentials ramfs and /tmp tmpfs are filesystems of their own.
    assert locks(mounts, fstab, set()) == []
    assert [entry.mountpoint for entry in fstab] == ["/", "/usr", "/tmp"]
    release = parse_release((captured / "os_release_bookworm.txt").read_text())
    assert (release["ID"], release["VERSION_ID"]) == ("debian", "12")
