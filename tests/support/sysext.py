# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Extension images, small roots, manifests and the real systemd-sysext, for the sysext host tests."""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import subprocess
import typing as t

from support.namespace import SYSTEMD_LIKE, MountNamespace

DEBIAN_12 = "ID=debian\nVERSION_ID=12\n"
SYSEXT_ENV = {"SYSTEMD_NSPAWN_LOCK": "0", "SYSTEMD_PAGER": "cat"}


def sysext_namespace() -> MountNamespace:
    """A namespace where systemd-sysext --root works: / rshared, /run a shared tmpfs (the propagation trap in docs/sysext.md)."""
    return MountNamespace(SYSTEMD_LIKE)


def make_root(root: pathlib.Path, os_release: str | None = DEBIAN_12) -> pathlib.Path:
    """A small tree: usr/lib/os-release, a base file and the search directories."""
    for directory in ("usr/bin", "usr/lib", "usr/share/base", "var/lib/extensions", "etc/extensions",
                      "run/extensions", "opt"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    if os_release is not None:
        (root / "usr/lib/os-release").write_text(os_release)
    (root / "usr/bin/base-tool").write_text("#!/bin/sh\necho base\n")
    (root / "usr/share/base/shared").write_text("from the base\n")
    return root


def make_extension(directory: pathlib.Path, name: str | None, release: str | None = DEBIAN_12,
                   files: t.Mapping[str, str] | None = None, release_name: str | None = None) -> pathlib.Path:
    """An extension tree at directory; release None writes no release file; files map path -> text."""
    directory.mkdir(parents=True, exist_ok=True)
    if release is not None:
        release_dir = directory / "usr/lib/extension-release.d"
        release_dir.mkdir(parents=True, exist_ok=True)
        (release_dir / ("extension-release.%s" % (release_name or name))).write_text(release)
    for relative, text in (files if files is not None else {"usr/share/%s/data" % name: name + "\n"}).items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return directory


def squashfs(source: pathlib.Path, image: pathlib.Path) -> pathlib.Path:
    subprocess.run(["mksquashfs", str(source), str(image), "-all-root", "-noappend", "-quiet", "-no-progress"],
                   check=True, capture_output=True)
    return image


def erofs(source: pathlib.Path, image: pathlib.Path) -> pathlib.Path:
    subprocess.run(["mkfs.erofs", "--quiet", "--all-root", "-zlz4hc", str(image), str(source)], check=True,
                   capture_output=True)
    return image


def in_ns(ns: MountNamespace, path: str | pathlib.Path) -> pathlib.Path:
    """path as the namespace sees it (merges are visible only inside it)."""
    return pathlib.Path("/proc/%d/root%s" % (ns.pid, path))


def merged_now(ns: MountNamespace, root: pathlib.Path, hierarchy: str = "usr") -> list[str]:
    """The names systemd-sysext's marker lists in the namespace, [] when not merged (systemd's own test)."""
    path = in_ns(ns, root / hierarchy)
    try:
        marker = (path / ".systemd-sysext/dev").read_text().strip()
        names = (path / ".systemd-sysext/extensions").read_text().split()
    except FileNotFoundError:
        return []
    st = os.stat(path)
    return names if marker == "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev)) else []


def overlay_lowerdirs(ns: MountNamespace, root: pathlib.Path, hierarchy: str = "usr") -> list[str]:
    """The extension names in the overlay's lowerdir option, top layer first (what the kernel stacks)."""
    target = str(root / hierarchy)
    for line in ns.mountinfo().splitlines():
        fields = line.split(" ")
        if fields[4] == target and " - overlay " in line:
            lowers = re.search(r"lowerdir=([^,]*)", line)
            assert lowers is not None
            return [layer.split("/")[-2] for layer in lowers.group(1).split(":")
                    if layer.startswith("/run/systemd/sysext/extensions/")]
    return []


def sysext(ns: MountNamespace, root: pathlib.Path, *args: str, debug: bool = False,
           hierarchies: str = "/usr:/opt") -> subprocess.CompletedProcess:
    """The real systemd-sysext on root, inside ns."""
    env = dict(SYSEXT_ENV, SYSTEMD_SYSEXT_HIERARCHIES=hierarchies)
    if debug:
        env["SYSTEMD_LOG_LEVEL"] = "debug"
    return ns.run(["systemd-sysext", "--root=%s" % root, *args], check=False, env=env)


def ignored_by_systemd(output: str) -> dict[str, str]:
    """Image name -> systemd's debug message for every image it skipped ("Extension 'x' ..., ignoring")."""
    reasons = {}
    for line in output.splitlines():
        match = re.match(r"Extension '([^']+)' (.*)", line.strip())
        if match and "matches" not in line and "Version info" not in line:
            reasons[match.group(1)] = match.group(2)
    return reasons


def warning_texts(result: dict) -> list[str]:
    """A result's warnings as text: a module run directly by ansible-core 2.19+ reports structured events."""
    return [warning if isinstance(warning, str) else warning.get("event", {}).get("msg", "")
            for warning in result.get("warnings", [])]


def loop_devices(under: pathlib.Path) -> set[str]:
    """Loop devices backed by files under a directory (other tests on the machine attach their own)."""
    listing = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], check=True,
                             capture_output=True, text=True).stdout
    prefix = str(under).rstrip("/") + "/"
    return {line.strip() for line in listing.splitlines() if prefix in line}


def manifest(path: pathlib.Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size, mtime_ns, sha256 or link target, xattrs): byte- and metadata-exact."""
    result: dict[str, tuple] = {}
    for current, directories, files in os.walk(path):
        for name in sorted(directories + files):
            full = os.path.join(current, name)
            st = os.lstat(full)
            if os.path.islink(full):
                content = os.readlink(full)
            elif os.path.isfile(full):
                with open(full, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            else:
                content = ""
            xattrs = tuple(sorted((key, os.getxattr(full, key, follow_symlinks=False))
                                  for key in os.listxattr(full, follow_symlinks=False)))
            result[os.path.relpath(full, path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                                                   content, xattrs)
    return result
