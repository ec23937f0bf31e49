# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Cached Debian trees (tarballs) built by mmdebstrap or debootstrap, for VM images and for host tests.

Host tests call, for example:

    from vmlab import rootfs
    tarball = rootfs.ensure_tree(rootfs.MINBASE_TREE)          # mmdebstrap --variant=minbase bookworm
    tarball = rootfs.ensure_tree(rootfs.SPLIT_USR_TREE)        # debootstrap --variant=minbase --no-merged-usr
    rootfs.extract_tree(tarball, some_empty_directory)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from vmlab import aptsources
from vmlab.cache import CacheEntry, cache_root, content_key
from vmlab.run import require_tools, run, run_logged

# Bump when the build recipe changes in a way the spec fields do not capture.
TREE_BUILDER_VERSION = 1
TREE_FILE = "rootfs.tar"
BUILD_TIMEOUT = 1800.0
EXTRACT_TIMEOUT = 600.0
TOOLS = ("mmdebstrap", "debootstrap")
# mmdebstrap's own hook that keeps /bin, /sbin, /lib separate from /usr (man mmdebstrap, "--hook-dir").
MMDEBSTRAP_NO_MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/no-merged-usr"
# The host's sources may point at a dated snapshot whose Release files have expired; the host's own apt
# configuration turns the same check off, but mmdebstrap runs apt with a configuration of its own.
APT_OPTIONS = ('Acquire::Check-Valid-Until "false"',)
TAR_OPTIONS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")


@dataclasses.dataclass(frozen=True)
class TreeSpec:
    """What goes into a tree; every field is part of the content key."""

    name: str
    tool: str = "mmdebstrap"
    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    merged_usr: bool = True
    # Shell snippets; "$1" is the tree.  Essential hooks run before the non-essential packages are
    # installed (mmdebstrap only); customize hooks run last, with /proc, /sys and /dev available for chroot.
    essential_hooks: tuple[str, ...] = ()
    customize_hooks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ValueError(f"tree {self.name}: tool must be one of {TOOLS}, not {self.tool!r}")
        if self.tool == "debootstrap" and self.essential_hooks:
            raise ValueError(f"tree {self.name}: essential hooks need mmdebstrap")
        if not self.name or "/" in self.name:
            raise ValueError(f"tree name {self.name!r} must be a non-empty file name")

    def key_fields(self) -> dict[str, object]:
        return {
            "kind": "tree",
            "tool": self.tool,
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(set(self.packages)),
            "merged_usr": self.merged_usr,
            "essential_hooks": list(self.essential_hooks),
            "customize_hooks": list(self.customize_hooks),
            "builder_version": TREE_BUILDER_VERSION,
        }

    def key(self) -> str:
        return content_key(self.key_fields())


# An `mmdebstrap --variant=minbase` bookworm root, merged /usr.
MINBASE_TREE = TreeSpec(name="bookworm-minbase")

# A split-/usr tree in which Debian's convert-usrmerge can run (it needs perl and File::Find::Rule).
# debootstrap also writes /etc/unsupported-skip-usrmerge-conversion into it; it is left there on purpose.
SPLIT_USR_TREE = TreeSpec(name="bookworm-split-usr", tool="debootstrap", merged_usr=False,
                          packages=("perl", "libfile-find-rule-perl"))


def mmdebstrap_argv(spec: TreeSpec, output: Path, mirrors: list[str]) -> list[str]:
    argv = ["mmdebstrap", "--mode=root", f"--variant={spec.variant}"]
    argv += [f"--aptopt={option}" for option in APT_OPTIONS]
    if spec.packages:
        argv.append("--include=" + ",".join(sorted(set(spec.packages))))
    if not spec.merged_usr:
        argv.append(f"--hook-dir={MMDEBSTRAP_NO_MERGED_USR_HOOK}")
    argv += [f"--essential-hook={hook}" for hook in spec.essential_hooks]
    argv += [f"--customize-hook={hook}" for hook in spec.customize_hooks]
    return argv + [spec.suite, str(output), *mirrors]


def debootstrap_argv(spec: TreeSpec, target: Path, mirror: str) -> list[str]:
    argv = ["debootstrap", f"--variant={spec.variant}", "--merged-usr" if spec.merged_usr else "--no-merged-usr"]
    if spec.packages:
        argv.append("--include=" + ",".join(sorted(set(spec.packages))))
    return argv + [spec.suite, str(target), mirror]


def in_private_namespace(argv: list[str]) -> list[str]:
    """Mounts made by the builders (proc, sys, dev in the tree) stay in a namespace that dies with them."""
    return ["unshare", "--mount", "--propagation", "private", *argv]


def tree_entry(spec: TreeSpec, cache: Path | None = None) -> CacheEntry:
    return CacheEntry(cache or cache_root(), "trees", spec.name, spec.key())


def ensure_tree(spec: TreeSpec, *, cache: Path | None = None) -> Path:
    """Path of the verified tarball of `spec`, built first if missing or corrupt (safe to call concurrently).

    `cache` defaults to ${IMMUTABLE_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/immutable-root}.
    """
    entry = tree_entry(spec, cache)
    return entry.ensure(lambda staging: _build_tree(spec, staging, entry.log_path)) / TREE_FILE


def _build_tree(spec: TreeSpec, staging: Path, log: Path) -> None:
    require_tools([spec.tool, "unshare", "tar"])
    started = time.monotonic()
    output = staging / TREE_FILE
    what = f"building Debian tree {spec.name} ({spec.tool} {spec.suite} --variant={spec.variant})"
    if spec.tool == "mmdebstrap":
        # A derived sources file (a suite the host does not list) lives in the staging directory only while mmdebstrap
        # runs: it names the host's mirror and is no part of the entry.
        scratch = staging / ".apt-sources"
        try:
            mirrors = [str(path) for path in aptsources.mmdebstrap_mirrors(spec.suite, scratch)]
            # TMPDIR in the staging directory: the chroot of a killed mmdebstrap goes away with the staging directory.
            run_logged(in_private_namespace(mmdebstrap_argv(spec, output, mirrors)), log=log, timeout=BUILD_TIMEOUT,
                       what=what, env={"TMPDIR": str(staging)})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        mirror = aptsources.mirror_uri(spec.suite)
        target = staging / "tree"
        target.mkdir()
        run_logged(in_private_namespace(debootstrap_argv(spec, target, mirror)), log=log, timeout=BUILD_TIMEOUT,
                   what=what, secrets=[mirror])
        for number, hook in enumerate(spec.customize_hooks, 1):
            run_logged(in_private_namespace(["sh", "-euc", hook, "sh", str(target)]), log=log, timeout=BUILD_TIMEOUT,
                       what=f"{spec.name}: customize hook {number}")
        run_logged(["tar", *TAR_OPTIONS, "--sort=name", "-C", str(target), "-cf", str(output), "."], log=log,
                   timeout=BUILD_TIMEOUT, what=f"{spec.name}: packing the tree")
        run(["rm", "-rf", "--one-file-system", str(target)], timeout=600)
    tool_version = run([spec.tool, "--version"], timeout=30).strip()
    (staging / "tree.json").write_text(json.dumps({
        "spec": spec.key_fields(), "name": spec.name, "tool_version": tool_version,
        "build_seconds": round(time.monotonic() - started, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")


def extract_tree(tarball: Path, dest: Path) -> None:
    """Unpack a cached tree into `dest` (created if needed) with owners, modes, xattrs and ACLs kept."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", *TAR_OPTIONS, "-xpf", str(tarball), "-C", str(dest)], timeout=EXTRACT_TIMEOUT, what=f"unpacking {tarball}")
