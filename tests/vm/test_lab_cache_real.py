# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab cache for real: concurrent builders, a corrupt Debian tree rebuilt by mmdebstrap, loop cleanup."""

from __future__ import annotations

import pathlib
import select
import shutil
import subprocess
import sys
import textwrap

import pytest

from support.wait import wait_for
from vmlab import cache, images, loopdev, rootfs
from vmlab.errors import CommandFailed
from vmlab.run import run

LAB = pathlib.Path(__file__).resolve().parents[2] / "molecule" / "lab"


BUILDER = textwrap.dedent("""
    import pathlib, sys, time
    sys.path.insert(0, sys.argv[1])
    from vmlab.cache import CacheEntry
    root, gate = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])

    def build(staging):
        with (root / "builds.log").open("a") as log:
            log.write("build\\n")
        deadline, poll_interval = time.monotonic() + 120, 0.05
        while not gate.exists() and time.monotonic() < deadline:  # the test opens the gate
            time.sleep(poll_interval)
        (staging / "payload").write_text("built once")

    print(CacheEntry(root, "things", "shared", "c" * 64).ensure(build))
""")


def test_two_processes_asking_for_one_entry_build_it_once(tmp_path: pathlib.Path) -> None:
    gate = tmp_path / "gate"
    argv = [sys.executable, "-c", BUILDER, str(LAB), str(tmp_path), str(gate)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        wait_for((tmp_path / "builds.log").exists, "the first builder to start", timeout=120)
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = tmp_path / "locks" / f"things-shared-{'c' * 16}.lock"
        wait_for(lambda: lock.read_text().strip() == str(first.pid), "the first builder to hold the lock", timeout=120)
        assert second.stderr is not None
        # The second reports at once when it finds the lock taken; only then may the first finish.
        readable, _writable, _errors = select.select([second.stderr], [], [], 120)
        assert readable, "the second process never reported waiting for the lock"
        waiting = second.stderr.readline()
        gate.write_text("go")
        out_first, _err = first.communicate(timeout=120)
        out_second, err_second = second.communicate(timeout=120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0 and second.returncode == 0, err_second
    assert out_first == out_second and out_first.strip().endswith(f"shared-{'c' * 16}")
    assert (tmp_path / "builds.log").read_text() == "build\n"
    assert waiting.startswith(f"lab: waiting for cache entry shared-{'c' * 16}: another process (pid {first.pid})")


@pytest.mark.vm
def test_a_corrupt_debian_tree_is_detected_and_rebuilt(tmp_path: pathlib.Path, needs_root: None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    original = rootfs.ensure_tree(rootfs.MINBASE_TREE)  # the shared cache: built once, reused
    private = tmp_path / "cache"
    copy = rootfs.tree_entry(rootfs.MINBASE_TREE, private).path
    copy.parent.mkdir(parents=True)
    shutil.copytree(original.parent, copy)
    with (copy / rootfs.TREE_FILE).open("r+b") as handle:  # one flipped byte in the middle of the tarball
        handle.seek(handle.seek(0, 2) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert cache.verify_entry(copy) == f"checksum mismatch for {rootfs.TREE_FILE}"
    capsys.readouterr()

    rebuilt = rootfs.ensure_tree(rootfs.MINBASE_TREE, cache=private)

    assert rebuilt == copy / rootfs.TREE_FILE
    assert f"cache entry {copy} is unusable (checksum mismatch for {rootfs.TREE_FILE}); rebuilding it" in capsys.readouterr().err
    assert cache.verify_entry(copy) is None
    assert (copy / "tree.json").read_text() != (original.parent / "tree.json").read_text()  # really built again
    extracted = tmp_path / "root"
    rootfs.extract_tree(rebuilt, extracted)
    assert (extracted / "usr/bin/apt").is_file() and (extracted / "bin").is_symlink()


@pytest.mark.vm
def test_a_failed_btrfs_fill_leaves_no_loop_device(tmp_path: pathlib.Path, needs_root: None) -> None:
    image = tmp_path / "root.img"
    with image.open("wb") as handle:
        handle.truncate(256 << 20)
    run(["mkfs.btrfs", "-q", "-f", str(image)], timeout=60)
    with pytest.raises(CommandFailed, match="filling subvolume @ failed"):
        # The tree does not exist: the script fails after `mount -o loop` attached a loop device.
        images.fill_btrfs_subvolume(image, tmp_path / "no-such-tree", tmp_path / "mnt", tmp_path / "fill.log", "test")
    assert "Cannot open: No such file or directory" in (tmp_path / "fill.log").read_text()
    assert loopdev.loops_backed_by(image) == []


@pytest.mark.vm
def test_a_missing_debian_package_is_named_and_nothing_is_published(tmp_path: pathlib.Path, needs_root: None) -> None:
    spec = rootfs.TreeSpec(name="missing-package", packages=("immutable-root-no-such-package",))
    with pytest.raises(CommandFailed) as caught:
        rootfs.ensure_tree(spec, cache=tmp_path)
    assert "Unable to locate package immutable-root-no-such-package" in str(caught.value)
    assert list((tmp_path / "trees").iterdir()) == [], "no entry and no staging directory is left behind"
