# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge against a plain `systemd-sysext refresh`, and squashfs against erofs builds of ~50 MB of package.

Modules run the way Ansible runs them on a managed node, minus the transport: one python3 process per
run with the module's arguments in a file. Everything happens in a private mount namespace on a small
--root tree; this script always re-executes itself under `unshare --mount` first.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile

from _bench import import_collection, print_table, timed

COLLECTIONS = import_collection()
RELEASE = "ID=debian\nVERSION_ID=12\n"
PACKAGE_MB = 50


NAMESPACE_MARK = "IMMUTABLE_ROOT_BENCH_SYSEXT_NAMESPACE"


def sh(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=dict(os.environ, **(env or {})))


def module(name: str, args: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    try:
        completed = subprocess.run(
            ["/usr/bin/python3", "-m", "ansible_collections.immutable.root.plugins.modules." + name, handle.name],
            env=dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS, ansible_path()])), capture_output=True,
            text=True, check=False)
    finally:
        os.unlink(handle.name)
    result = json.loads(completed.stdout)
    if result.get("failed"):
        raise RuntimeError("%s failed: %s" % (name, result.get("msg")))
    return result


def ansible_path() -> str:
    import ansible  # pylint: disable=import-outside-toplevel

    return str(pathlib.Path(ansible.__file__).parent.parent)


def extension(tree: pathlib.Path, name: str, files: int = 50) -> pathlib.Path:
    (tree / "usr/lib/extension-release.d").mkdir(parents=True)
    (tree / "usr/lib/extension-release.d" / ("extension-release." + name)).write_text(RELEASE)
    (tree / "usr/share" / name).mkdir(parents=True)
    for number in range(files):
        (tree / "usr/share" / name / ("file%d" % number)).write_text("%s %d\n" % (name, number))
    return tree


def merge_rows(work: pathlib.Path) -> list[tuple[str, float, float]]:
    root = work / "root"
    for directory in ("usr/lib", "usr/bin", "var/lib/extensions"):
        (root / directory).mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(RELEASE)
    images = root / "var/lib/extensions"
    extension(images / "tree", "tree")
    sh("mksquashfs", str(extension(work / "sq", "sq")), str(images / "sq.raw"), "-all-root", "-noappend", "-quiet",
       "-no-progress")
    sh("mkfs.erofs", "--quiet", "--all-root", str(images / "ero.raw"), str(extension(work / "ero", "ero")))
    env = {"SYSTEMD_NSPAWN_LOCK": "0", "SYSTEMD_SYSEXT_HIERARCHIES": "/usr:/opt"}
    args = {"root": str(root)}
    module("sysext_merge", args)

    def plain_refresh() -> None:
        sh("systemd-sysext", "--root=%s" % root, "refresh", env=env)

    def noop() -> None:
        if module("sysext_merge", args)["changed"]:
            raise RuntimeError("the no-op run changed something")

    baseline = timed(plain_refresh)
    return [
        ("merge no-op (3 images merged) vs systemd-sysext refresh", timed(noop), baseline),
        ("merge state=refreshed vs systemd-sysext refresh",
         timed(lambda: module("sysext_merge", dict(args, state="refreshed"))), baseline),
        ("merge check mode (mounts nothing) vs refresh",
         timed(lambda: module("sysext_merge", dict(args, _ansible_check_mode=True))), baseline),
    ]


def probe_rows(work: pathlib.Path) -> list[tuple[str, float, float]]:
    """The raw-image probe sysext_merge makes per image: superblock magic read in-process vs `blkid -p` (what it ran
    before), in interleaved pairs on the squashfs and erofs images of merge_rows."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import read_head, superblock_type

    images = [str(work / "root/var/lib/extensions" / name) for name in ("sq.raw", "ero.raw")]

    def magic() -> None:
        if [superblock_type(read_head(image)) for image in images] != ["squashfs", "erofs"]:
            raise RuntimeError("the magic probe misread an image")

    def blkid() -> None:
        for image in images:
            sh("blkid", "-p", "-o", "export", image)

    pairs = [(timed(magic, repeat=1), timed(blkid, repeat=1)) for _pair in range(9)]
    ratios = sorted(ours / theirs for ours, theirs in pairs)
    medians = sorted(pair[0] for pair in pairs)[4], sorted(pair[1] for pair in pairs)[4]
    print("probe of 2 raw images, 9 interleaved pairs: ratio min %.4f, median %.4f" % (ratios[0], ratios[4]))
    return [("probe 2 raw images: superblock magic vs blkid -p (median)", medians[0], medians[1])]


def package(work: pathlib.Path) -> pathlib.Path:
    """About 50 MB of package content: text-like files and incompressible ones, as binaries and data are."""
    payload = work / "payload"
    generator = random.Random(252)
    words = [generator.randbytes(6).hex().encode() for _word in range(512)]
    written, number = 0, 0
    while written < PACKAGE_MB << 20:
        directory = payload / "usr/lib/bench" / ("d%02d" % (number % 40))
        directory.mkdir(parents=True, exist_ok=True)
        size = generator.randint(4 << 10, 64 << 10)
        data = generator.randbytes(size) if number % 3 == 0 else b" ".join(
            generator.choice(words) for _word in range(size // 13))
        (directory / ("f%05d" % number)).write_bytes(data)
        written, number = written + len(data), number + 1
    (payload / ".PKGINFO").write_text("pkgname = bench\n")
    archive = work / "bench-1-1-x86_64.pkg.tar.zst"
    sh("bsdtar", "--zstd", "-cf", str(archive), "-C", str(payload), ".PKGINFO", "usr")
    shutil.rmtree(payload)
    return archive


def build_rows(work: pathlib.Path) -> list[tuple[str, float, float]]:
    archive = package(work)
    root = work / "broot"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(RELEASE)

    def build(image_format: str, options: dict) -> float:
        args = dict(options, root=str(root), name="bench", format=image_format, sources=[str(archive)])

        def fresh() -> None:
            shutil.rmtree(root / "var/lib/extensions", ignore_errors=True)
            module("sysext_build", args)

        return timed(fresh, repeat=3)

    sizes = {}
    seconds = {}
    for label, image_format, options in (("squashfs zstd-3", "squashfs", {}),
                                         ("squashfs zstd-15", "squashfs", {"compression_level": 15}),
                                         ("erofs lz4hc", "erofs", {}), ("directory", "directory", {})):
        seconds[label] = build(image_format, options)
        image = root / "var/lib/extensions" / ("bench" if image_format == "directory" else "bench.raw")
        sizes[label] = image.stat().st_size if image.is_file() else 0
    noop = timed(lambda: module("sysext_build", {"root": str(root), "name": "bench", "format": "directory",
                                                 "sources": [str(archive)]}), repeat=3)
    images = ", ".join("%s %.1f MB" % (label, size / 1e6) for label, size in sizes.items() if size)
    print("package: %.1f MB holding %d MB of files; images: %s" % (archive.stat().st_size / 1e6, PACKAGE_MB, images))
    base = seconds["squashfs zstd-3"]
    return [
        ("build erofs (lz4hc) vs squashfs (zstd level 3)", seconds["erofs lz4hc"], base),
        ("build squashfs zstd level 15 vs level 3 (the default)", seconds["squashfs zstd-15"], base),
        ("build directory vs squashfs (zstd level 3)", seconds["directory"], base),
        ("build no-op (same digest) vs squashfs build", noop, base),
    ]


def main() -> None:
    if os.environ.get(NAMESPACE_MARK) != "1":
        # Always a namespace of our own: the mounts below must never reach the machine's mount table.
        os.environ[NAMESPACE_MARK] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable] + sys.argv)
    # As on a systemd host: / shared and /run a shared tmpfs, or systemd-sysext's merge stays invisible.
    sh("mount", "--make-rshared", "/")
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "run", "/run")
    sh("mount", "--make-shared", "/run")
    work = pathlib.Path(tempfile.mkdtemp(prefix="immutable-root-bench-sysext-"))
    try:
        print_table("sysext_merge (median of 5 runs each, one process per module run)", merge_rows(work))
        print()
        print_table("raw image probe", probe_rows(work))
        print()
        print_table("sysext_build (median of 3 runs each)", build_rows(work))
    finally:
        sh("systemd-sysext", "--root=%s" % (work / "root"), "unmerge", env={"SYSTEMD_NSPAWN_LOCK": "0"})
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
