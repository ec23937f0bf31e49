# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind against real mounts in private mount namespaces, with a real pacman database."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import KILL_AT_ENV, TRACE_ENV

from support.modules import ansible_module, collections_path, direct_module, four_step
from support.mounts import describe, stack
from support.namespace import MountNamespace
from support.pacman import pacman_argv, tree_digest


def db(root: pathlib.Path) -> str:
    return str(root / "var/lib/pacman")


def test_lock_blocks_pacman_and_keeps_the_database_bytes(ns: MountNamespace, pacman_tree: pathlib.Path,
                                                         packages: dict[str, pathlib.Path]) -> None:
    path = db(pacman_tree)
    before = tree_digest(pacman_tree / "var/lib/pacman")
    check, apply, again, check_again = four_step(ns, "ro_bind", {"path": path})

    assert [action["action"] for action in check["actions"]] == ["lock"]
    assert check["mount"]["read_only"] and check["mount"]["mount_id"] is None, "check mode predicts, mounts nothing"
    assert check["diff"]["before"]["mount"]["layers"] == 0 and check["diff"]["after"]["mount"]["layers"] == 1
    assert apply["method"] == "mount_api"
    assert apply["mount"]["self_bind"] and apply["mount"]["read_only"] and apply["mount"]["layers"] == 1
    assert apply["mount"]["fs_root"] == path and apply["mount"]["mount_options"][0] == "ro"
    assert again["mount"] == apply["mount"] and check_again["mount"] == apply["mount"]
    assert describe(ns, path) == [(stack(ns, path)[0].fstype, path, True)]

    blocked = ns.run(pacman_argv(pacman_tree, "-U", str(packages["second"])), check=False)
    assert blocked.returncode == 1
    assert "could not lock database: Read-only file system" in blocked.stderr
    assert tree_digest(pacman_tree / "var/lib/pacman") == before
    assert not (pacman_tree / "usr/share/second-immutable").exists(), "no package file was extracted"
    assert ns.run(pacman_argv(pacman_tree, "-Q"), check=False).stdout.startswith("hello-immutable 1.0-1")

    apply = four_step(ns, "ro_bind", {"path": path, "state": "absent"}).apply
    assert [action["action"] for action in apply["actions"]] == ["unmount"]
    assert apply["mount"]["layers"] == 0 and stack(ns, path) == ()
    ns.run(pacman_argv(pacman_tree, "-U", str(packages["second"])))
    assert (pacman_tree / "usr/share/second-immutable/data").is_file()


def test_ad_hoc_as_users_type_it(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    result = ansible_module(ns, "ro_bind", "path=%s state=present" % tmp_path)
    assert result["changed"] and result["mount"]["read_only"] and describe(ns, str(tmp_path))[-1][2] is True


@pytest.mark.parametrize("shared", [False, True], ids=["private-parent", "shared-parent"])
def test_stacked_self_binds_collapse_to_one(ns: MountNamespace, tmp_path: pathlib.Path, shared: bool) -> None:
    # On a shared parent, each stacked bind propagates and the stack grows 1, 3, 7 (measured on 6.18).
    path = str(tmp_path / "db")
    # The tmpfs exists only inside the namespace, so the directory is made there too.
    ns.sh("mount -t tmpfs stack %s && mount --make-%s %s && mkdir %s"
          % (tmp_path, "shared" if shared else "private", tmp_path, path))
    # rw at the bottom, ro in the middle, a writable one on top.
    ns.sh("mount --bind {0} {0} && mount --bind -o ro {0} {0} && mount --bind {0} {0} && "
          "mount -o remount,bind,rw {0}".format(path))
    assert not stack(ns, path)[-1].read_only
    stacked = len(stack(ns, path))
    assert stacked == (7 if shared else 3)

    result = ansible_module(ns, "ro_bind", {"path": path}, diff=True)
    assert result["changed"] and not result.get("failed"), result.get("msg")
    assert describe(ns, path) == [("tmpfs", "/db", True)]
    assert result["diff"]["before"]["mount"]["layers"] == stacked and result["mount"]["layers"] == 1
    assert not ansible_module(ns, "ro_bind", {"path": path})["changed"]

    result = ansible_module(ns, "ro_bind", {"path": path, "state": "absent"})
    assert result["changed"] and stack(ns, path) == ()


def test_writable_self_bind_is_only_remounted(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path)
    ns.sh("mount --bind %s %s" % (path, path))
    mount_id = stack(ns, path)[0].mount_id
    steps = four_step(ns, "ro_bind", {"path": path})
    assert [action["action"] for action in steps.apply["actions"]] == ["remount_ro"]
    assert steps.check["mount"]["mount_id"] == mount_id
    assert [entry.mount_id for entry in stack(ns, path)] == [mount_id] and stack(ns, path)[0].read_only


def test_fallback_method_four_steps(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "with space")
    os.mkdir(path)
    apply = four_step(ns, "ro_bind", {"path": path, "method": "bind_remount"}).apply
    assert apply["method"] == "bind_remount" and apply["mount"]["read_only"]
    assert describe(ns, path)[-1][2] is True and len(describe(ns, path)) == 1


def boundaries(ns: MountNamespace, args: dict, tmp_path: pathlib.Path) -> list[str]:
    """Names of the step boundaries a run passes, from a traced dry run that is then undone."""
    trace = tmp_path / "trace"
    rc, result, stderr = direct_module(ns, "ro_bind", args, env={TRACE_ENV: str(trace)})
    assert rc == 0, stderr
    direct_module(ns, "ro_bind", dict(args, state="absent"))
    return [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]


@pytest.mark.parametrize("method", ["bind_remount", "mount_api"])
def test_kill_at_every_step_then_rerun_converges(ns: MountNamespace, tmp_path: pathlib.Path, method: str) -> None:
    path = str(tmp_path / "db")
    os.mkdir(path)
    args = {"path": path, "method": method}
    steps = boundaries(ns, args, tmp_path)
    expected = ["mount_api.cloned", "mount_api.read_only"] if method == "mount_api" else ["ro_bind.bind_made"]
    assert steps == expected + ["ro_bind.lock"]
    for number, step in enumerate(steps, start=1):
        rc, result = direct_module(ns, "ro_bind", args, env={KILL_AT_ENV: str(number)})[:2]
        assert rc == -9 and result is None, "killed at %s" % step
        layers = describe(ns, path)
        if step == "ro_bind.bind_made":
            # mount(2)'s window: the bind exists but is still writable.
            assert layers == [(layers[0][0], path, False)]
        elif step.startswith("mount_api."):
            assert layers == [], "a detached clone dies with the process: nothing is ever visible half-made"
        rc, result, stderr = direct_module(ns, "ro_bind", args)
        assert rc == 0 and result is not None, stderr
        assert describe(ns, path) == [(layers[0][0] if layers else describe(ns, path)[0][0], path, True)]
        if step == "ro_bind.bind_made":
            assert [action["action"] for action in result["actions"]] == ["remount_ro"]
        assert direct_module(ns, "ro_bind", args)[1]["changed"] is False
        direct_module(ns, "ro_bind", dict(args, state="absent"))
        assert stack(ns, path) == ()


def test_persist_fstab(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "db")
    os.mkdir(path)
    fstab = tmp_path / "fstab"
    fstab.write_text("# keep me\nUUID=1 / ext4 defaults 0 1\n")
    args = {"path": path, "persist": "fstab", "fstab_path": str(fstab)}
    check, apply = four_step(ns, "ro_bind", args)[:2]
    line = "%s %s none bind,ro 0 0" % (path, path)
    assert check["diff"]["after"]["fstab_entry"] == line and check["diff"]["before"]["fstab_entry"] is None
    assert fstab.read_text() == "# keep me\nUUID=1 / ext4 defaults 0 1\n%s\n" % line
    assert [action["action"] for action in apply["actions"]] == ["lock", "write_fstab_entry"]

    # What mount -a at boot would do with that line: a read-only bind.
    ns.sh("umount %s && mount --fstab %s %s" % (path, fstab, path))
    assert describe(ns, path)[-1][2] is True

    apply = four_step(ns, "ro_bind", dict(args, state="absent")).apply
    assert [action["action"] for action in apply["actions"]] == ["remove_fstab_entry", "unmount"]
    assert fstab.read_text() == "# keep me\nUUID=1 / ext4 defaults 0 1\n"


def test_persist_systemd_unit(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "var/lib/pacman")
    os.makedirs(path)
    units = tmp_path / "units"
    args = {"path": path, "persist": "systemd", "unit_dir": str(units)}
    check = four_step(ns, "ro_bind", args).check
    name = ns.run(["systemd-escape", "--path", "--suffix=mount", path]).stdout.strip()
    unit = units / name
    assert "Where=%s\n" % path in unit.read_text() and check["diff"]["after"]["unit"] == unit.read_text()
    assert os.readlink(units / "local-fs.target.wants" / name) == "../" + name
    verify = ns.run(["systemd-analyze", "verify", "--man=no", str(unit)], check=False)
    assert "Where=" not in verify.stderr and "Invalid" not in verify.stderr, verify.stderr

    apply = four_step(ns, "ro_bind", dict(args, state="absent")).apply
    assert [action["action"] for action in apply["actions"]] == ["disable_unit", "remove_unit", "unmount"]
    assert sorted(os.listdir(units)) == ["local-fs.target.wants"] and not os.listdir(units / "local-fs.target.wants")


def test_bound_unit_without_a_running_systemd_persists_but_holds_no_lock(
        ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    # This host has no systemd as PID 1, so the bound unit counts as inactive: the lock is not held now,
    # and a self-bind made by hand is taken away, exactly as systemd would stop the mount unit.
    path = str(tmp_path / "var/lib/pacman")
    os.makedirs(path)
    units = tmp_path / "units"
    ns.run(["mount", "--bind", path, path])
    args = {"path": path, "persist": "systemd", "unit_dir": str(units), "bound_to": "systemd-sysext.service"}
    apply = four_step(ns, "ro_bind", args).apply
    assert [action["action"] for action in apply["actions"]] == ["unmount", "write_unit", "enable_unit"]
    assert not [line for line in ns.mountinfo().splitlines() if line.split()[4] == path]
    name = ns.run(["systemd-escape", "--path", "--suffix=mount", path]).stdout.strip()
    text = (units / name).read_text()
    assert "BindsTo=systemd-sysext.service\n" in text and "WantedBy=systemd-sysext.service\n" in text
    assert os.readlink(units / "systemd-sysext.service.wants" / name) == "../" + name
    verify = ns.run(["systemd-analyze", "verify", "--man=no", str(units / name)], check=False)
    assert "Invalid" not in verify.stderr and "Failed" not in verify.stderr, verify.stderr
    refused = ansible_module(ns, "ro_bind", {"path": path, "bound_to": "systemd-sysext.service"})
    assert refused.get("failed") and refused["msg"].startswith("bound_to: needs persist=systemd"), refused


def test_unlock_without_persist_warns_about_boot_time_lock(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "db")
    os.mkdir(path)
    fstab = tmp_path / "fstab"
    ansible_module(ns, "ro_bind", {"path": path, "persist": "fstab", "fstab_path": str(fstab)})
    result = ansible_module(ns, "ro_bind", {"path": path, "state": "absent", "fstab_path": str(fstab)})
    assert result["changed"] and "persist=fstab" in " ".join(result.get("warnings", []))
    assert "bind,ro" in fstab.read_text(), "persist=none leaves persistence alone"


@pytest.mark.parametrize("args, message", [
    ({"path": "relative/dir"}, "path: must be an absolute path"),
    ({"path": "/tmp/../etc"}, "path: must not contain '..'"),
    ({"path": "/nonexistent/immutable-root-test"}, "path: /nonexistent/immutable-root-test does not exist"),
    ({"path": "/proc/self/root/etc"}, "through a symlink"),
    ({"path": "/tmp", "persist": "fstab", "fstab_path": "etc/fstab"}, "fstab_path: must be an absolute path"),
    ({"path": "/tmp", "state": "locked"}, "value of state must be one of"),
])
def test_bad_input_is_refused_and_nothing_is_mounted(ns: MountNamespace, args: dict, message: str) -> None:
    before = ns.mountinfo()
    result = ansible_module(ns, "ro_bind", args)
    assert result.get("failed") and message in result["msg"], result.get("msg")
    assert ns.mountinfo() == before


def test_foreign_mount_is_never_touched(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "db")
    os.mkdir(path)
    ns.sh("mount -t tmpfs foreign %s" % path)
    before = ns.mountinfo()
    result = ansible_module(ns, "ro_bind", {"path": path})
    assert result.get("failed") and result["msg"].startswith("path: ") and "tmpfs 'foreign'" in result["msg"]
    assert ns.mountinfo() == before
    unlocked = ansible_module(ns, "ro_bind", {"path": path, "state": "absent"})
    assert not unlocked.get("failed") and not unlocked["changed"] and ns.mountinfo() == before

    # A foreign mount on top of a lock: unlocking would have to unmount it, so the module refuses.
    ns.sh("umount %s && mount --bind -o ro %s %s && mount -t tmpfs foreign %s" % (path, path, path, path))
    before = ns.mountinfo()
    result = ansible_module(ns, "ro_bind", {"path": path, "state": "absent"})
    assert result.get("failed") and "foreign mount on top" in result["msg"] and ns.mountinfo() == before


def test_open_writers_are_reported(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "db")
    os.mkdir(path)
    # A writer that opened its file before the lock, like a pacman transaction in progress.
    script = "exec 3>%s/db.lck; echo started; read line; echo late >&3" % path
    writer = subprocess.Popen(ns.prefix() + ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        result = ansible_module(ns, "ro_bind", {"path": path})
        assert result["changed"] and [entry["file"] for entry in result["open_writers"]] == [path + "/db.lck"]
        assert any("open for writing" in warning for warning in result.get("warnings", []))
        writer.communicate("go\n", timeout=30)
        assert writer.returncode == 0
        assert (tmp_path / "db" / "db.lck").read_text() == "late\n", "the old descriptor still writes: documented"
        assert ansible_module(ns, "ro_bind", {"path": path})["open_writers"] == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


BIND_READ_ONLY = """
import sys
from ansible_collections.immutable.root.plugins.module_utils._linux.mount_api import bind_read_only
bind_read_only(sys.argv[1])
"""


def test_the_lock_acts_on_the_checked_directory_never_through_a_symlink(ns: MountNamespace,
                                                                        tmp_path: pathlib.Path) -> None:
    """Regression: the path was checked with realpath and bound later by name (open_tree without
    AT_SYMLINK_NOFOLLOW), so a component swapped for a symlink in between redirected the lock."""
    (tmp_path / "real").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "swapped")
    env = {"PYTHONPATH": collections_path()}
    before = ns.mountinfo()
    refused = ns.run([sys.executable, "-c", BIND_READ_ONLY, str(tmp_path / "swapped")], check=False, env=env)
    assert refused.returncode != 0 and "changed since it was checked" in refused.stderr, refused.stderr
    assert ns.mountinfo() == before, "nothing was mounted, least of all on the symlink's target"
    ns.run([sys.executable, "-c", BIND_READ_ONLY, str(tmp_path / "real")], env=env)
    fields = [line.split() for line in ns.mountinfo().splitlines()]
    locked = [f for f in fields if f[4] == str(tmp_path / "real")]
    assert len(locked) == 1 and "ro" in locked[0][5].split(","), locked
