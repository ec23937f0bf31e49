# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks on hostile roots (issue 17): a mount point inside a directory it would move, sparse files and
a separate /usr, concurrent runs on one root, an /etc that is a symlink."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import STOP_AT_ENV

from support.modules import collections_path, direct_module
from support.namespace import MountNamespace
from support.wait import wait_for
from support.usrmerge import module_argv, tree_manifest


def usrmerge(ns: MountNamespace, args: dict, check: bool = False) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "usrmerge_symlinks", args, check=check)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    assert "Traceback" not in stderr
    return result


def split_tree(root: pathlib.Path) -> pathlib.Path:
    for directory in ("bin/mnt", "sbin", "lib/modules", "usr/bin", "usr/sbin", "usr/lib", "etc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "bin/tool").write_text("#!/bin/sh\n")
    (root / "lib/libx.so").write_text("lib\n")
    (root / "usr/bin/other").write_text("#!/bin/sh\n")
    return root


@pytest.mark.parametrize("mountpoint", ["bin/mnt", "lib/modules", "bin"])
def test_mount_inside_a_moved_directory_is_refused_before_anything_moves(ns: MountNamespace, tmp_path: pathlib.Path,
                                                                         mountpoint: str) -> None:
    root = split_tree(tmp_path / "root")
    ns.run(["mount", "-t", "tmpfs", "tmpfs", str(root / mountpoint)] if mountpoint != "bin"
           else ["mount", "--bind", str(root / "bin"), str(root / "bin")])
    before = tree_manifest(root)
    for check in (True, False):
        result = usrmerge(ns, {"root": str(root)}, check=check)
        assert result.get("failed"), result
        assert "/%s is a mount point" % mountpoint in result["msg"] and "nothing was changed" in result["msg"], result
        assert not result["changed"] and result["actions"] == []
    assert tree_manifest(root) == before
    assert not [name for name in os.listdir(root) + os.listdir(root / "usr") if name.startswith(".usrmerge")]

    ns.run(["umount", str(root / mountpoint)])
    merged = usrmerge(ns, {"root": str(root)})
    assert not merged.get("failed") and merged["changed"], merged.get("msg")
    assert os.readlink(root / "bin") == "usr/bin" and (root / "usr/bin/tool").is_file()


def hashed_tree(root: pathlib.Path) -> dict[str, tuple[t.Any, ...]]:
    """Every path below root with its type, mode, owner, symlink text and, for files, the sha256 of the bytes."""
    found = {}
    for path, entry in tree_manifest(root).items():
        content = ""
        if entry.kind == "file":
            digest = hashlib.sha256()
            with open(root / path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            content = digest.hexdigest()
        found[path] = (entry.kind, entry.mode, entry.uid, entry.gid, entry.size, entry.target, content)
    return found


def namespace_view(ns: MountNamespace, path: pathlib.Path) -> pathlib.Path:
    """path as the namespace sees it, mounts included."""
    return pathlib.Path("/proc/%d/root%s" % (ns.pid, path))


MIB = 1 << 20
SPARSE_SIZE = 256 * MIB


def sparse_file(path: pathlib.Path, data: int) -> str:
    """A SPARSE_SIZE file with `data` bytes written at two places and holes around them; its sha256."""
    with open(path, "wb") as handle:
        handle.truncate(SPARSE_SIZE)
        handle.seek(64 * MIB)
        handle.write(os.urandom(data // 2))
        handle.seek(SPARSE_SIZE - MIB - data // 2)
        handle.write(os.urandom(data - data // 2))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def separate_usr(ns: MountNamespace, root: pathlib.Path, size: str = "16m") -> pathlib.Path:
    """A split root whose usr is a small tmpfs (mounted only in ns): everything is copied, never renamed."""
    for directory in ("bin", "usr", "etc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "bin/tool").write_text("#!/bin/sh\n")
    ns.sh("mount -t tmpfs -o size={1} usr {0}/usr && mkdir {0}/usr/bin".format(root, size))
    return namespace_view(ns, root)


def test_sparse_file_keeps_its_holes_when_copied_into_a_separate_usr(ns: MountNamespace,
                                                                     tmp_path: pathlib.Path) -> None:
    """256 MiB files holding 2 MiB of data each, into a 16 MiB /usr: the space check passes, the copies stay sparse."""
    root = tmp_path / "root"
    view = separate_usr(ns, root)
    digests = {"bin/sparse": sparse_file(root / "bin/sparse", 2 * MIB),
               "bin/other": sparse_file(root / "bin/other", 2 * MIB)}
    # prefer_root saves the /usr copy under var/lib on the root's filesystem: a copy the other way.
    digests["var/lib/usrmerge-backup/usr/bin/other"] = sparse_file(view / "usr/bin/other", 2 * MIB)
    result = usrmerge(ns, {"root": str(root), "conflicts": "prefer_root"})
    assert not result.get("failed") and result["changed"] and result["verified"], result.get("msg")
    digests["usr/bin/sparse"], digests["usr/bin/other"] = digests.pop("bin/sparse"), digests.pop("bin/other")
    for path, digest in digests.items():
        copied = os.lstat(view / path)
        assert copied.st_size == SPARSE_SIZE and copied.st_blocks * 512 < 3 * MIB, (path, copied)
        assert hashlib.sha256((view / path).read_bytes()).hexdigest() == digest, path
    assert os.readlink(view / "bin") == "usr/bin"
    assert usrmerge(ns, {"root": str(root), "conflicts": "prefer_root"})["changed"] is False


def test_free_space_check_counts_allocated_blocks_not_apparent_size(ns: MountNamespace,
                                                                    tmp_path: pathlib.Path) -> None:
    """A sparse file whose data does not fit is still refused, with the size of its data."""
    root = tmp_path / "root"
    view = separate_usr(ns, root)
    sparse_file(root / "bin/sparse", 24 * MIB)
    before = hashed_tree(view)
    for check in (True, False):
        result = usrmerge(ns, {"root": str(root)}, check=check)
        assert result.get("failed") and not result["changed"] and result["actions"] == [], result
        assert result["msg"].startswith("root: the filesystem holding %s/usr has 16.0 MiB" % root), result["msg"]
        assert "but the merge needs 24.0 MiB" in result["msg"] and "nothing was changed" in result["msg"]
    assert hashed_tree(view) == before


def many_files(root: pathlib.Path, count: int = 300) -> pathlib.Path:
    split_tree(root)
    for number in range(count):
        (root / ("bin/tool%d" % number)).write_text("tool %d\n" % number)
        (root / ("lib/lib%d.so" % number)).write_text("lib %d\n" % number)
    return root


def start(ns: MountNamespace, args: dict, directory: pathlib.Path, check: bool = False,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    argv, args_file = module_argv("usrmerge_symlinks", args, directory)
    if check:
        with open(args_file, "w", encoding="utf-8") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=True, _ansible_diff=False)}, handle)
    process = subprocess.Popen(ns.prefix() + argv, env=dict(os.environ, PYTHONPATH=collections_path(), **(env or {})),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, args_file


def collect(process: subprocess.Popen, args_file: str) -> dict[str, t.Any]:
    stdout, stderr = process.communicate(timeout=600)
    os.unlink(args_file)
    assert "Traceback" not in stderr, stderr
    try:
        return t.cast(dict, json.loads(stdout))
    except ValueError:
        raise AssertionError("module crashed (rc %s): %s" % (process.returncode, stderr)) from None


def assert_merged(root: pathlib.Path, count: int) -> None:
    assert os.readlink(root / "bin") == "usr/bin" and os.readlink(root / "lib") == "usr/lib"
    assert (root / "usr/bin/tool").is_file() and (root / ("usr/lib/lib%d.so" % (count - 1))).is_file()
    assert not [name for name in os.listdir(root) + os.listdir(root / "usr") if name.startswith(".usrmerge")]


def root_descriptors(pid: int, root: pathlib.Path) -> int:
    """How many descriptors process pid holds on the root directory itself."""
    count = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            count += os.readlink("/proc/%d/fd/%s" % (pid, fd)) == str(root)
        except FileNotFoundError:
            continue  # closed meanwhile
    return count


@pytest.mark.parametrize("step", ["usrmerge.planned", "usrmerge.staged", "usrmerge.exchanged /bin"])
def test_a_second_run_waits_for_the_first_and_finds_the_work_done(ns: MountNamespace, tmp_path: pathlib.Path,
                                                                  step: str) -> None:
    """The first run is stopped at a step; a second run and a check-mode run started meanwhile wait for it."""
    root = many_files(tmp_path / "root")
    first, first_args = start(ns, {"root": str(root)}, tmp_path, env={STOP_AT_ENV: step})
    _pid, status = os.waitpid(first.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), "the first run did not stop at %s" % step
    second = start(ns, {"root": str(root)}, tmp_path)
    checking = start(ns, {"root": str(root)}, tmp_path, check=True)
    # Each later run has reached the lock once it holds the root open (the lock is its first look at the root);
    # then it must still be running, and holding the root only once (observing would open it again).
    for process, _args in (second, checking):
        wait_for(lambda: root_descriptors(process.pid, root) > 0 or process.poll() is not None,
                 "run %d to reach the lock" % process.pid, timeout=120)
    assert second[0].poll() is None and checking[0].poll() is None, "a run did not wait for the first one"
    assert root_descriptors(second[0].pid, root) == root_descriptors(checking[0].pid, root) == 1
    os.kill(first.pid, signal.SIGCONT)
    result = collect(first, first_args)
    assert not result.get("failed") and result["changed"] and result["verified"], result
    for name, later in (("second", collect(*second)), ("check mode", collect(*checking))):
        assert not later.get("failed"), (name, later["msg"])
        assert later["changed"] is False and later["actions"] == [], (name, later)
    assert_merged(root, 300)


def test_parallel_runs_on_one_root_merge_it_once(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    root = many_files(tmp_path / "root", 1000)
    runs = [start(ns, {"root": str(root)}, tmp_path, check=number % 3 == 2) for number in range(6)]
    results = [collect(*run) for run in runs]
    assert [result.get("msg") for result in results if result.get("failed")] == []
    applied = [result for number, result in enumerate(results) if number % 3 != 2]
    assert sum(result["changed"] for result in applied) == 1, results
    assert all(result["actions"] == [] for result in applied if not result["changed"])
    assert_merged(root, 1000)


def etc_elsewhere(root: pathlib.Path, outside: pathlib.Path) -> pathlib.Path:
    split_tree(root)
    outside.mkdir()
    (outside / "unsupported-skip-usrmerge-conversion").write_text("outside\n")
    (root / "etc").rmdir()
    (root / "etc").symlink_to(outside)
    return root


@pytest.mark.parametrize("skip_flag", ["remove", "honour"])
def test_etc_symlink_is_named_and_refused_without_changes(ns: MountNamespace, tmp_path: pathlib.Path,
                                                          skip_flag: str) -> None:
    outside = tmp_path / "outside-etc"
    root = etc_elsewhere(tmp_path / "root", outside)
    before = hashed_tree(tmp_path)
    for check in (True, False):
        result = usrmerge(ns, {"root": str(root), "skip_flag": skip_flag}, check=check)
        assert result.get("failed") and not result["changed"] and result["actions"] == [], result
        assert result["msg"] == (
            "root: %s/etc is a symlink to %s; refusing to follow it to look for "
            "/etc/unsupported-skip-usrmerge-conversion, nothing was changed (skip_flag=keep merges without looking)"
            % (root, outside)), result["msg"]
    assert hashed_tree(tmp_path) == before


def test_etc_symlink_is_left_alone_with_skip_flag_keep_and_once_merged(
        ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside-etc"
    root = etc_elsewhere(tmp_path / "root", outside)
    outside_before = hashed_tree(outside)
    merged = usrmerge(ns, {"root": str(root), "skip_flag": "keep"})
    assert not merged.get("failed") and merged["changed"], merged.get("msg")
    assert os.readlink(root / "bin") == "usr/bin" and os.readlink(root / "etc") == str(outside)
    again = usrmerge(ns, {"root": str(root)})  # merged: the flag no longer matters
    assert not again.get("failed") and again["changed"] is False and again["actions"] == [], again
    assert hashed_tree(outside) == outside_before


def test_etc_as_a_file_holds_no_skip_flag(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    root = split_tree(tmp_path / "root")
    (root / "etc").rmdir()
    (root / "etc").write_text("not a directory\n")
    result = usrmerge(ns, {"root": str(root), "skip_flag": "honour"})
    assert not result.get("failed") and result["changed"], result.get("msg")
    assert os.readlink(root / "bin") == "usr/bin" and (root / "etc").read_text() == "not a directory\n"


def test_skip_flag_that_is_a_directory_is_not_removed(ns: MountNamespace, tmp_path: pathlib.Path) -> None:
    root = split_tree(tmp_path / "root")
    (root / "etc/unsupported-skip-usrmerge-conversion/inside").mkdir(parents=True)
    before = hashed_tree(root)
    for check in (True, False):
        result = usrmerge(ns, {"root": str(root)}, check=check)
        assert result.get("failed") and not result["changed"] and result["actions"] == [], result
        assert result["msg"] == (
            "root: %s/etc/unsupported-skip-usrmerge-conversion is a directory, not debootstrap's flag file; refusing "
            "to remove it, nothing was changed (skip_flag=keep merges without looking)" % root), result["msg"]
    assert hashed_tree(root) == before
    kept = usrmerge(ns, {"root": str(root), "skip_flag": "keep"})
    assert not kept.get("failed") and kept["changed"] and (root / "etc/unsupported-skip-usrmerge-conversion").is_dir()


@pytest.mark.parametrize("link,text", [("sbin/a/b/b", "b"), ("sbin/self", "/sbin/self"), ("bin/x", "../bin/x")])
def test_a_link_that_already_loops_is_moved_as_it_is(ns: MountNamespace, tmp_path: pathlib.Path, link: str,
                                                     text: str) -> None:
    # Found by the campaign: a link that would point at itself once copied is dropped, and so was one that already
    # did; the path turned from a loop into missing, verification failed after the compatibility links were made.
    root = split_tree(tmp_path / "root")
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(text, root / link)
    merged = usrmerge(ns, {"root": str(root)})
    assert not merged.get("failed") and merged["changed"], merged.get("msg")
    moved = root / "usr" / link
    assert os.readlink(moved) == text
    if not text.startswith("/"):  # an absolute one resolves inside the root only, which the module verified
        with pytest.raises(OSError) as error:
            os.stat(moved)
        assert error.value.errno == errno.ELOOP  # as before the merge
    assert not usrmerge(ns, {"root": str(root)})["changed"]
