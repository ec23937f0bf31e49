# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind against hostile input: odd bytes in fstab and paths, symlinked fstab, concurrent runs, "~"."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import typing as t

import pytest

from support.modules import direct_module
from support.mounts import describe
from support.namespace import MountNamespace


def ro_bind(ns: MountNamespace, args: dict, check: bool = False, env: dict | None = None) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "ro_bind", args, check=check, env=env)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    assert "Traceback" not in stderr
    return result


# Line breaks of str.splitlines() that are no line break to mount(8), each inside a comment whose tail would
# otherwise become an active entry.
ODD_BREAKS = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


def test_fstab_is_rewritten_byte_exactly(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    comments = b"".join(("# comment%s%s %s none bind,ro 0 0\n" % (brk, target, target)).encode("utf-8")
                        for brk in ODD_BREAKS)
    original = b"UUID=1 / ext4 defaults 0 1\r\n" + comments + b"tmpfs /tmp tmpfs defaults 0 0\r\n\xff\xfe raw\n"
    fstab = tmp_path / "fstab"
    fstab.write_bytes(original)
    args = {"path": str(locked), "persist": "fstab", "fstab_path": str(fstab)}
    line = ("%s %s none bind,ro 0 0\n" % (locked, locked)).encode()

    assert ro_bind(ns, args, check=True)["changed"] and fstab.read_bytes() == original
    applied = ro_bind(ns, args)
    assert applied["changed"] and not applied.get("failed"), applied.get("msg")
    assert fstab.read_bytes() == original + line
    again = ro_bind(ns, args)
    assert not again["changed"] and fstab.read_bytes() == original + line
    assert describe(ns, str(target)) == [], "a comment's tail became a mount"

    gone = ro_bind(ns, dict(args, state="absent"))
    assert gone["changed"] and not gone.get("failed") and fstab.read_bytes() == original


def test_symlinked_fstab_is_written_through(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tmp_path / "etc/real-fstab"
    real.parent.mkdir()
    real.write_text("tmpfs /tmp tmpfs defaults 0 0\n")
    link = tmp_path / "fstab"
    link.symlink_to(os.path.relpath(real, link.parent))
    args = {"path": str(locked), "persist": "fstab", "fstab_path": str(link)}
    result = ro_bind(ns, args)
    assert not result.get("failed"), result.get("msg")
    assert link.is_symlink() and os.readlink(link) == "etc/real-fstab"
    assert real.read_text() == "tmpfs /tmp tmpfs defaults 0 0\n%s %s none bind,ro 0 0\n" % (locked, locked)
    assert not ro_bind(ns, args)["changed"]
    ro_bind(ns, dict(args, state="absent"))
    assert link.is_symlink() and real.read_text() == "tmpfs /tmp tmpfs defaults 0 0\n"


def test_concurrent_fstab_runs_lose_no_entry(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    fstab = tmp_path / "fstab"
    for round_ in range(3):
        fstab.write_text("# shared\n")
        paths = []
        for number in range(5):
            path = tmp_path / ("r%d-%d" % (round_, number))
            path.mkdir()
            paths.append(str(path))
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            results = list(pool.map(
                lambda path: ro_bind(ns, {"path": path, "persist": "fstab", "fstab_path": str(fstab)}), paths))
        assert all(not result.get("failed") for result in results), [result.get("msg") for result in results]
        lines = fstab.read_text().splitlines()
        assert sorted(lines[1:]) == sorted("%s %s none bind,ro 0 0" % (path, path) for path in paths), lines


@pytest.mark.parametrize("written", ["~", "~/x", "$HOME", "~root"])
def test_tilde_and_variables_are_not_expanded(ns: MountNamespace, tmp_path: pathlib.Path, written: str) -> None:
    home = tmp_path / "home"
    (home / "x").mkdir(parents=True)
    before = ns.mountinfo()
    for option in ("path", "fstab_path", "unit_dir"):
        args = {"path": str(tmp_path), option: written}
        result = ro_bind(ns, args, env={"HOME": str(home)})
        assert result.get("failed") and result["msg"].startswith("%s: must be an absolute path" % option), result
    assert ns.mountinfo() == before


def test_non_breaking_space_path_has_one_fstab_entry(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a\u00a0b"
    path.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    args = {"path": str(path), "persist": "fstab", "fstab_path": str(fstab)}
    first = ro_bind(ns, args)
    assert not first.get("failed"), first.get("msg")
    again = ro_bind(ns, args)
    assert not again.get("failed") and not again["changed"], again
    assert fstab.read_text() == "%s %s none bind,ro 0 0\n" % (path, path)
    gone = ro_bind(ns, dict(args, state="absent"))
    assert not gone.get("failed") and fstab.read_text() == ""


# Names with bytes the kernel leaves unescaped in mountinfo, that str.splitlines() or newline translation broke.
ODD_NAMES = ["a\x1cb", "a\x85b", "a\u2028b", "a\rb", "a\x0bb", "a\x0cb", "sp ace", "tab\tx", "back\\slash",
             "new\nline", "nbsp\u00a0x", "\xff\xfe"]


def test_odd_mountpoints_do_not_poison_later_runs(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    odd_paths = [str(tmp_path / name) for name in ODD_NAMES]
    for path in odd_paths:
        os.mkdir(path)
        locked = ro_bind(ns, {"path": path})
        assert not locked.get("failed") and locked["changed"], (path, locked.get("msg"))
    # Every odd lock is in the table now: later runs, on any path and in any state, must still parse it.
    assert not ro_bind(ns, {"path": odd_paths[0]})["changed"]
    for state in ("present", "absent"):
        other = ro_bind(ns, {"path": str(plain), "state": state})
        assert not other.get("failed") and other["changed"], other.get("msg")
    for path in odd_paths:
        gone = ro_bind(ns, {"path": path, "state": "absent"})
        assert not gone.get("failed") and gone["changed"], (path, gone.get("msg"))
        assert describe(ns, path) == [], path


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", ["per%cent", "100%%", "a%nb", "sp ace", "uni\u00e9"])
def test_systemd_units_are_escaped_and_verify(ns: MountNamespace, tmp_path: pathlib.Path, name: str) -> None:
    path = tmp_path / name
    path.mkdir()
    units = tmp_path / "units"
    result = ro_bind(ns, {"path": str(path), "persist": "systemd", "unit_dir": str(units)})
    assert not result.get("failed"), result.get("msg")
    (unit,) = [entry for entry in units.iterdir() if entry.name.endswith(".mount")]
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert ("What=%s\n" % str(path).replace("%", "%%")) in unit.read_text()


@pytest.mark.parametrize("name", ["new\nline", "ret\rurn", "trailing\\", "trailing "])
def test_unrepresentable_unit_paths_are_refused_before_acting(ns: MountNamespace, tmp_path: pathlib.Path,
                                                              name: str) -> None:
    path = os.path.join(str(tmp_path), name)
    os.mkdir(path)
    units = tmp_path / "units"
    before = ns.mountinfo()
    for check in (True, False):
        result = ro_bind(ns, {"path": path, "persist": "systemd", "unit_dir": str(units)}, check=check)
        assert result.get("failed") and result["msg"].startswith("path: ") and "What=" in result["msg"], result
        assert not result["changed"]
    assert not units.exists() and ns.mountinfo() == before


def test_a_failure_after_the_lock_reports_changed(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    # The lock is made, then the fstab cannot be written (its directory does not exist).
    result = ro_bind(ns, {"path": str(tmp_path), "persist": "fstab", "fstab_path": str(tmp_path / "missing/fstab")})
    assert result.get("failed") and result["changed"] is True, result
    assert [action["action"] for action in result["actions"]] == ["lock"]
    assert describe(ns, str(tmp_path))[-1][2] is True


def test_absent_under_a_propagated_foreign_mount_refuses_and_keeps_both(ns: MountNamespace,
                                                                        tmp_path: pathlib.Path) -> None:
    # / shared (systemd's default): a tmpfs mounted on the lock propagates a copy that the kernel tucks under the
    # lock, so the lock's mount-tree parent is foreign. It used to count no self-bind and report ok, lock kept.
    base = tmp_path / "base"
    base.mkdir()
    ns.run(["mount", "-t", "tmpfs", "base", str(base)])
    ns.run(["mount", "--make-rshared", str(base)])
    path = str(base / "locked")
    ns.run(["mkdir", path])
    assert ro_bind(ns, {"path": path})["changed"]
    ns.run(["mount", "-t", "tmpfs", "foreign", path])
    stacked = describe(ns, path)
    assert stacked == [("tmpfs", "/", False), ("tmpfs", "/locked", True), ("tmpfs", "/", False)], stacked
    for check in (True, False):
        refused = ro_bind(ns, {"path": path, "state": "absent"}, check=check)
        assert refused.get("failed") and not refused["changed"], refused
        assert refused["msg"].startswith("path: %s has a foreign mount on top of its self-bind layers" % path)
        assert describe(ns, path) == stacked
    # Once the foreign mount is gone (the umount propagates to its tucked copy), the lock comes off.
    ns.run(["umount", path])
    assert describe(ns, path) == [("tmpfs", "/locked", True)]
    unlocked = ro_bind(ns, {"path": path, "state": "absent"})
    assert not unlocked.get("failed") and unlocked["changed"], unlocked
    assert describe(ns, path) == []
