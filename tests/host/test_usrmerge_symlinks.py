# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks on a real split Debian tree (debootstrap --no-merged-usr bookworm), compared with Debian's
own convert-usrmerge, killed at every step and at random instants, attacked with planted symlinks.

Trees live as btrfs subvolumes on a loop image mounted only in a private namespace; each case works on a
snapshot, so a reset costs tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import subprocess
import time
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import KILL_AT_ENV, TRACE_ENV

from support.modules import ansible_module, direct_module, four_step
from support.namespace import MountNamespace
from support.usrmerge import (
    BtrfsPool, Entry, convert_usrmerge, finish, original_paths, random_delays, resolve_in_chroot, run_killed_after,
    shell_works, split_usr_tarball, start_stopping_at, tree_differences, tree_manifest,
)

MODULE = "usrmerge_symlinks"
RANDOM_KILLS = int(os.environ.get("USRMERGE_RANDOM_KILLS", "200"))
SEED = int(os.environ.get("USRMERGE_FAULT_SEED", "20240605"))
MERGED_LINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}


@dataclasses.dataclass
class Reference:
    """The pristine split tree and the module's uninterrupted result on it."""

    pool: BtrfsPool
    steps: list[str]
    changing: float  # the part of a run after its first step boundary, where it changes the tree
    manifest: dict[str, Entry]
    originals: list[str]
    resolved: dict[str, list[int]]

    @property
    def view(self) -> pathlib.Path:
        return self.pool.view("reference")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[BtrfsPool]:
    tarball = split_usr_tarball()
    btrfs = BtrfsPool(tmp_path_factory.mktemp("usrmerge"))
    try:
        btrfs.from_tarball("pristine", tarball)
        yield btrfs
    finally:
        btrfs.close()


@pytest.fixture(scope="module")
def reference(pool: BtrfsPool, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    trace = tmp_path_factory.mktemp("trace") / "steps"
    root = pool.snapshot("pristine", "reference")
    rc, result, stderr = direct_module(pool.ns, MODULE, {"root": root}, env={TRACE_ENV: str(trace)})
    assert rc == 0 and result and result["verified"], stderr
    pristine = tree_manifest(pool.view("pristine"))
    originals = original_paths(pristine)
    with case(pool, "timing") as (root, _view):
        pool.sync()
        process, args_file = start_stopping_at(pool.ns, MODULE, {"root": root}, 1, tmp_path_factory.mktemp("args"))
        started = time.perf_counter()
        finish(process, args_file)
        changing = time.perf_counter() - started
    steps = [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]
    resolved = resolve_in_chroot(pool.view("pristine"), originals)
    return Reference(pool, steps, changing, tree_manifest(pool.view("reference")), originals, resolved)


@contextlib.contextmanager
def case(pool: BtrfsPool, name: str) -> t.Iterator[tuple[str, pathlib.Path]]:
    """A writable snapshot of the pristine tree, deleted afterwards."""
    root = pool.snapshot("pristine", name)
    try:
        yield root, pool.view(name)
    finally:
        pool.delete(name)


def assert_usable(view: pathlib.Path, reference: Reference, when: str) -> None:
    """The invariant at every instant: a shell runs, and every original path leads to what it did."""
    shell = shell_works(view)
    assert shell.returncode == 0, "%s: chroot /bin/sh fails: %s" % (when, shell.stderr)
    resolved = resolve_in_chroot(view, reference.originals)
    changed = [path for path in reference.originals if resolved[path] != reference.resolved[path]]
    assert not changed, "%s: %d original paths resolve differently: %s" % (when, len(changed), changed[:10])


def assert_like_reference(view: pathlib.Path, reference: Reference, when: str) -> None:
    differing = tree_differences(reference.view, reference.manifest, view, tree_manifest(view))
    assert not differing, "%s: the tree differs from the uninterrupted result: %s" % (when, differing[:10])


def test_four_steps_on_a_debian_split_tree(reference: Reference) -> None:
    pool = reference.pool
    with case(pool, "four-steps") as (root, view):
        check, apply, again, check_again = four_step(pool.ns, MODULE, {"root": root})
        assert check["diff"]["before"]["layout"]["/bin"] == "directory"
        assert check["diff"]["after"]["layout"]["/lib64"] == "symlink -> usr/lib64"
        assert check["diff"]["before"]["skip_flag"] and not check["diff"]["after"]["skip_flag"]
        assert check["verified"] is None and check["plan"] == apply["plan"] and check["actions"] == apply["actions"]
        assert apply["plan"]["points_back"] == 1, "usr/bin/touch -> /bin/touch"
        assert apply["plan"]["conflict"] == 0 and apply["conflicts"] == [] and apply["moved"] > 250
        assert apply["verified"] is True and apply["symlinks"] == MERGED_LINKS == again["symlinks"]
        assert (view / "usr/bin/touch").is_file() and not (view / "usr/bin/touch").is_symlink()
        assert not (view / "etc/unsupported-skip-usrmerge-conversion").exists()
        assert [name for name in os.listdir(view) if name.startswith(".usrmerge")] == []
        assert_usable(view, reference, "after ansible")
        assert_like_reference(view, reference, "through ansible")


def test_same_result_as_debian_convert_usrmerge(reference: Reference) -> None:
    pool = reference.pool
    with case(pool, "convert-usrmerge") as (root, view):
        converted = convert_usrmerge(pool.ns, root, view)
        assert converted.returncode == 0 and "successfully converted" in converted.stdout, converted.stderr
        differing = tree_differences(reference.view, reference.manifest, view, tree_manifest(view))
        # The only difference: the module removes debootstrap's flag (skip_flag=remove); Debian leaves it.
        assert differing == ["etc/unsupported-skip-usrmerge-conversion: only in %s" % view], differing[:10]
        for name in ("bin", "sbin", "lib", "lib64"):
            assert os.readlink(view / name) == os.readlink(reference.view / name) == "usr/" + name
        assert shell_works(view).returncode == 0


def test_kill_at_every_step_boundary_then_one_rerun_converges(reference: Reference) -> None:
    pool = reference.pool
    steps = reference.steps
    assert steps[0] == "usrmerge.planned" and steps[-1] == "usrmerge.removed old /lib64", steps
    assert [step for step in steps if step.startswith("usrmerge.exchanged")] == [
        "usrmerge.exchanged /bin", "usrmerge.exchanged /sbin", "usrmerge.exchanged /lib", "usrmerge.exchanged /lib64"]
    for number, step in enumerate(steps, start=1):
        with case(pool, "kill-%d" % number) as (root, view):
            rc, result, _stderr = direct_module(pool.ns, MODULE, {"root": root}, env={KILL_AT_ENV: str(number)})
            assert rc == -9 and result is None, "not killed at %s" % step
            assert_usable(view, reference, "killed at %s" % step)
            rc, result, stderr = direct_module(pool.ns, MODULE, {"root": root})
            assert rc == 0 and result is not None, "rerun after %s: %s" % (step, stderr)
            if number < len(steps):
                assert result["changed"] and result["verified"] is True, step
            else:
                assert not result["changed"], "killed after the last step: nothing left to do"
            assert_like_reference(view, reference, "rerun after %s" % step)
            assert direct_module(pool.ns, MODULE, {"root": root})[1]["changed"] is False


def test_kill_at_random_instants_then_one_rerun_converges(reference: Reference, tmp_path: pathlib.Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Kill instants drawn (seeded) over the part of a run that changes the tree, plus 10 %: the timer starts
    at its first step boundary, after the read-only observation and planning (the boundary test kills it
    there, before any change)."""
    pool = reference.pool
    longest = 1.1 * reference.changing
    reached: dict[str, int] = {}
    for number, delay in enumerate(random_delays(SEED, RANDOM_KILLS, longest)):
        trace = tmp_path / ("trace-%d" % number)
        with case(pool, "random-%d" % number) as (root, view):
            rc = run_killed_after(pool.ns, MODULE, {"root": root}, delay, tmp_path, env={TRACE_ENV: str(trace)})
            passed = trace.read_text().splitlines() if trace.exists() else []
            where = "completed" if rc is not None else passed[-1].split(" ", 1)[1] if passed else "before any step"
            reached[where] = reached.get(where, 0) + 1
            when = "seed %d, kill %d after %.4f s (%s)" % (SEED, number, delay, where)
            assert rc in (None, 0), when
            assert_usable(view, reference, when)
            rerun_rc, result, stderr = direct_module(pool.ns, MODULE, {"root": root})
            assert rerun_rc == 0 and result is not None, "%s: %s" % (when, stderr)
            assert_like_reference(view, reference, when)
    landed = ", ".join("%s %d" % item for item in sorted(reached.items()))
    with capsys.disabled():
        print("\nusrmerge random kills: seed %d, %d kills at [0, %.3f] s after the first step; last step passed: %s"
              % (SEED, RANDOM_KILLS, longest, landed))
    # Kills that all land before the first step or after the last test nothing of the crash safety.
    interrupted = set(reached) - {"completed", "before any step"}
    assert interrupted, "no random kill interrupted a run between its steps: %s" % landed


def digest_tree(root: pathlib.Path) -> dict[str, tuple[t.Any, ...]]:
    found = {}
    for path, entry in tree_manifest(root).items():
        st = os.lstat(root / path)
        content = hashlib.sha256((root / path).read_bytes()).hexdigest() if entry.kind == "file" else ""
        found[path] = (entry, st.st_mtime_ns, st.st_nlink, content)
    return found


@pytest.mark.parametrize("planted", ["lib/terminfo", "usr/lib/x86_64-linux-gnu"],
                         ids=["source-directory", "destination-directory"])
def test_planted_symlink_never_leads_outside_the_root(reference: Reference, tmp_path: pathlib.Path,
                                                      planted: str) -> None:
    """A directory swapped for a symlink to an outside tree while the module is paused at each step."""
    pool = reference.pool
    sentinel = "sentinel-" + planted.replace("/", "-")
    outside = pool.view(sentinel)
    pool.ns.run(["cp", "-a", "--reflink=always", pool.path("pristine/" + planted), pool.path(sentinel)])
    before = digest_tree(outside)
    for number, step in enumerate(reference.steps, start=1):
        if step.startswith("usrmerge.exchanged"):
            break
        with case(pool, "planted") as (root, view):
            process, args_file = start_stopping_at(pool.ns, MODULE, {"root": root}, number, tmp_path)
            assert process.returncode is None, "the module did not stop at %s" % step
            os.rename(view / planted, view / (planted + ".moved"))
            os.symlink(pool.path(sentinel), view / planted)
            rc, result, stderr = finish(process, args_file)
            assert digest_tree(outside) == before, "a file outside the root changed (planted at %s)" % step
            assert result is not None, stderr
            if rc == 0:
                # Planted in an old directory that held only symlinks by then: it went with the directory.
                assert result["verified"] and not (view / (planted + ".moved")).exists(), step
            else:
                assert any(reason in result["msg"] for reason in (
                    "is not a directory any more", "changed during the run", "verification failed")), result
                os.unlink(view / planted)
                os.rename(view / (planted + ".moved"), view / planted)
                rc, result, stderr = direct_module(pool.ns, MODULE, {"root": root})
                assert rc == 0, "rerun after planting at %s: %s" % (step, stderr)
            assert_like_reference(view, reference, "planted at %s" % step)


def add_files(view: pathlib.Path, files: t.Mapping[str, str | None]) -> None:
    for path, content in files.items():
        target = view / path
        if content is None:
            target.mkdir()
        else:
            target.write_text(content)
            target.chmod(0o755)


def test_conflicts_are_reported_before_any_change_and_resolved_on_request(reference: Reference) -> None:
    pool = reference.pool
    clashes = {"bin/clash": "root version\n", "usr/bin/clash": "usr version\n", "lib/dirclash": None,
               "usr/lib/dirclash": "a file\n", "bin/twin": "same\n", "usr/bin/twin": "same\n"}
    with case(pool, "conflicts") as (root, view):
        add_files(view, clashes)
        before = tree_manifest(view)
        failed = ansible_module(pool.ns, MODULE, {"root": root})
        assert failed["failed"] and failed["msg"].startswith("conflicts: 2 entries differ"), failed["msg"]
        assert "/bin/clash vs /usr/bin/clash: both exist and differ" in failed["msg"]
        assert "/lib/dirclash is a directory and /usr/lib/dirclash is not" in failed["msg"]
        assert [item["path"] for item in failed["conflicts"]] == ["/bin/clash", "/lib/dirclash"]
        assert tree_differences(view, before, view, tree_manifest(view)) == [], "nothing was touched"
        refused = ansible_module(pool.ns, MODULE, {"root": root, "conflicts": "prefer_usr"})
        assert refused["failed"] and "prefer_usr cannot resolve this" in refused["msg"]

        (view / "lib/dirclash").rmdir()
        kept_usr = ansible_module(pool.ns, MODULE, {"root": root, "conflicts": "prefer_usr"})
        assert not kept_usr.get("failed"), kept_usr["msg"]
        assert kept_usr["verified"] and kept_usr["deduplicated"] == 1, "identical duplicates are merged"
        assert [item["resolution"] for item in kept_usr["conflicts"]] == [
            "keep /usr/bin/clash, save /bin/clash under /var/lib/usrmerge-backup"]
        assert (view / "bin/clash").read_text() == "usr version\n"
        assert (view / "var/lib/usrmerge-backup/bin/clash").read_text() == "root version\n"
        assert os.stat(view / "var/lib/usrmerge-backup").st_mode & 0o777 == 0o700
        assert not ansible_module(pool.ns, MODULE, {"root": root, "conflicts": "prefer_usr"})["changed"]

    with case(pool, "conflicts") as (root, view):
        add_files(view, {path: content for path, content in clashes.items() if "dirclash" not in path})
        kept_root = ansible_module(pool.ns, MODULE, {"root": root, "conflicts": "prefer_root"}, diff=True)
        assert not kept_root.get("failed"), kept_root["msg"]
        assert kept_root["diff"]["after"]["conflicts"] == [
            "/bin/clash vs /usr/bin/clash: keep /bin/clash, save /usr/bin/clash under /var/lib/usrmerge-backup"]
        assert (view / "usr/bin/clash").read_text() == "root version\n"
        assert (view / "var/lib/usrmerge-backup/usr/bin/clash").read_text() == "usr version\n"
        assert_usable(view, reference, "prefer_root")


def test_merge_sbin_the_arch_way(reference: Reference) -> None:
    pool = reference.pool
    with case(pool, "merge-sbin") as (root, view):
        rc, result, stderr = direct_module(pool.ns, MODULE, {"root": root, "merge_sbin": True})
        assert rc == 0 and result and result["verified"], stderr
        assert result["symlinks"] == dict(MERGED_LINKS, **{"/sbin": "usr/bin", "/usr/sbin": "bin"})
        assert os.readlink(view / "usr/sbin") == "bin" and (view / "usr/bin/useradd").is_file()
        assert_usable(view, reference, "merge_sbin")
        assert direct_module(pool.ns, MODULE, {"root": root, "merge_sbin": True})[1]["changed"] is False


def build_small_tree(ns: MountNamespace, root: pathlib.Path, view: pathlib.Path) -> None:
    """A root whose usr is another filesystem (so everything is copied), with the awkward kinds of entry."""
    ns.sh("mountpoint -q {0} && umount -R {0} || true; mkdir -p {0} && mount -t tmpfs -o size=64m small {0} && "
          "mkdir -p {0}/usr {0}/bin {0}/lib/x/y && mount -t tmpfs -o size=64m usr {0}/usr && mkdir {0}/usr/bin && "
          "printf cap > {0}/bin/cap && "
          "printf suid > {0}/bin/suid && chown 1000:1000 {0}/bin/suid && chmod 4755 {0}/bin/suid && "
          "printf twin > {0}/bin/a && ln {0}/bin/a {0}/bin/b && mkfifo {0}/bin/fifo && "
          "printf deep > {0}/lib/x/y/z && ln -s x/y/z {0}/lib/link && ln -s /bin/cap {0}/usr/bin/cap && "
          "chmod 0750 {0}/lib/x".format(root))
    os.setxattr(view / "bin/cap", "trusted.immutable-root", b"42")


def test_copies_into_a_separate_usr_keep_owners_modes_links_and_attributes(
        pool: BtrfsPool, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "small"
    view = pathlib.Path("/proc/%d/root%s" % (pool.ns.pid, root))
    build_small_tree(pool.ns, root, view)
    trace = tmp_path / "trace"
    rc, result, stderr = direct_module(pool.ns, MODULE, {"root": str(root)}, env={TRACE_ENV: str(trace)})
    assert rc == 0 and result and result["verified"], stderr
    assert result["plan"]["points_back"] == 1 and result["plan"]["move"] == 5
    usr = view / "usr"
    assert os.getxattr(usr / "bin/cap", "trusted.immutable-root") == b"42"
    suid = os.lstat(usr / "bin/suid")
    assert (suid.st_mode & 0o7777, suid.st_uid, suid.st_gid) == (0o4755, 1000, 1000)
    assert os.lstat(usr / "bin/a").st_ino == os.lstat(usr / "bin/b").st_ino, "hard links stay hard links"
    assert os.path.isfile(usr / "bin/cap") and os.readlink(usr / "lib/link") == "x/y/z"
    assert os.lstat(usr / "lib/x").st_mode & 0o777 == 0o750 and (view / "bin").is_symlink()
    uninterrupted = tree_manifest(view)
    steps = [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]
    for number, step in enumerate(steps, start=1):
        build_small_tree(pool.ns, root, view)
        rc = direct_module(pool.ns, MODULE, {"root": str(root)}, env={KILL_AT_ENV: str(number)})[0]
        assert rc == -9, step
        rc, result, stderr = direct_module(pool.ns, MODULE, {"root": str(root)})
        assert rc == 0, "rerun after %s: %s" % (step, stderr)
        assert tree_differences(view, uninterrupted, view, tree_manifest(view)) == [], step
        assert os.lstat(usr / "bin/a").st_ino == os.lstat(usr / "bin/b").st_ino, step
        assert os.getxattr(usr / "bin/cap", "trusted.immutable-root") == b"42", step
    pool.ns.sh("umount -R %s" % root)


def test_bad_input_changes_nothing(reference: Reference, tmp_path: pathlib.Path) -> None:
    pool = reference.pool
    with case(pool, "bad-input") as (root, view):
        before = tree_manifest(view)
        for args, message in (
            ({"root": root + "/etc/hostname"}, "root: %s/etc/hostname is not a directory" % root),
            ({"root": root, "directories": ["bin", "etc"]}, "directories: 'etc' not allowed"),
            ({"root": root, "conflicts": "merge"}, "value of conflicts must be one of"),
            ({"root": root + "/nonexistent"}, "root: %s/nonexistent does not exist" % root),
        ):
            result = ansible_module(pool.ns, MODULE, args)
            assert result["failed"] and message in result["msg"], result["msg"]
        assert tree_differences(view, before, view, tree_manifest(view)) == []

    small = tmp_path / "tight"
    image = tmp_path / "usr.img"
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    pool.ns.sh("mkdir -p {0}/bin {0}/usr && head -c 32M /dev/urandom > {0}/bin/big && mount -o loop {1} {0}/usr && "
               "mkdir {0}/usr/bin".format(small, image))
    view = pathlib.Path("/proc/%d/root%s" % (pool.ns.pid, small))
    try:
        before = tree_manifest(view)
        result = ansible_module(pool.ns, MODULE, {"root": str(small)})
        assert result["failed"] and result["msg"].startswith("root: the filesystem holding %s/usr has" % small)
        assert "but the merge needs 32.0 MiB" in result["msg"]
        assert tree_differences(view, before, view, tree_manifest(view)) == []
    finally:
        pool.ns.sh("umount %s/usr" % small)
