# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build against hostile sources: symlinks where the release file goes, setuid files of other owners."""

from __future__ import annotations

import io
import os
import pathlib
import stat
import tarfile
import typing as t

import pytest

from support.modules import direct_module
from support.namespace import MountNamespace
from support.sysext import warning_texts


def build(ns: MountNamespace, args: dict, check: bool = False) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "sysext_build", args, check=check)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    assert "Traceback" not in stderr
    return result


def listing(path: pathlib.Path) -> list[tuple[str, int, int]]:
    found = []
    for current, directories, files in os.walk(path):
        for name in sorted(directories + files):
            st = os.lstat(os.path.join(current, name))
            found.append((os.path.relpath(os.path.join(current, name), path), st.st_mode, st.st_size))
    return sorted(found)


# Each: which component of usr/lib/extension-release.d is a link, and where it points (absolute or ../).
LINK_CASES = [
    ("usr", "absolute"), ("usr", "relative"),
    ("usr/lib", "absolute"), ("usr/lib", "relative"),
    ("usr/lib/extension-release.d", "absolute"), ("usr/lib/extension-release.d", "relative"),
]


def _plant(tree: pathlib.Path, component: str, how: str, outside: pathlib.Path) -> None:
    link = tree / component
    link.parent.mkdir(parents=True, exist_ok=True)
    target = str(outside) if how == "absolute" else os.path.relpath(outside, link.parent)
    link.symlink_to(target)
    if component != "usr":
        (tree / "usr/share/tool").mkdir(parents=True, exist_ok=True)
        (tree / "usr/share/tool/data").write_text("data\n")
    else:
        (tree / "opt/tool").mkdir(parents=True)
        (tree / "opt/tool/data").write_text("data\n")


@pytest.mark.parametrize("component,how", LINK_CASES)
@pytest.mark.parametrize("kind", ["directory", "tarball"])
def test_symlinked_release_parents_are_refused_and_nothing_is_written_outside(
        ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path, component: str, how: str, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    source = tmp_path / "source"
    _plant(source, component, how, outside)
    if kind == "tarball":
        tarball = tmp_path / "source.tar"
        with tarfile.open(tarball, "w") as archive:
            for name in sorted(os.listdir(source)):
                archive.add(source / name, arcname=name)
        source_path = str(tarball)
    else:
        source_path = str(source)
    dest = root / "var/lib/extensions"
    before = listing(tmp_path)
    for check in (True, False):
        result = build(ns, {"root": str(root), "name": "evil", "format": "directory", "sources": [source_path]},
                       check=check)
        if result.get("failed"):
            assert component in result["msg"] and "directory" in result["msg"], result["msg"]
        assert listing(outside) == [], "something was written through the link: %s" % listing(outside)
    assert result.get("failed"), "a symlinked %s must be refused" % component
    assert not (dest / "evil").exists() and listing(tmp_path) == before
    assert not [name for name in os.listdir(root / "var/lib") if name.startswith(".#sysext-build")]


def _owned_source(tmp_path: pathlib.Path) -> pathlib.Path:
    source = tmp_path / "source"
    (source / "usr/bin").mkdir(parents=True)
    tool = source / "usr/bin/tool"
    tool.write_text("#!/bin/sh\n")
    os.chown(tool, 1000, 1000)
    os.chmod(tool, 0o4755)
    grouped = source / "usr/bin/grouped"
    grouped.write_text("#!/bin/sh\n")
    os.chown(grouped, 1001, 1002)
    os.chmod(grouped, 0o2755)
    os.mknod(source / "usr/bin/null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return source


def _owners_in_image(ns: MountNamespace, image: pathlib.Path, image_format: str,
                     tmp_path: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    # The kernel's view, as systemd-sysext would merge it (fsck.erofs --extract drops setuid bits itself).
    out = tmp_path / "mounted"
    out.mkdir()
    ns.run(["mount", "-t", image_format, "-o", "loop,ro", str(image), str(out)])
    listing_ = ns.run(["sh", "-c", 'cd "$1" && stat -c "%n %u %g %a" tool grouped 2>/dev/null; true', "-",
                       str(out / "usr/bin")]).stdout
    ns.run(["umount", str(out)])
    found = {}
    for line in listing_.splitlines():
        name, uid, gid, mode = line.rsplit(" ", 3)
        found[os.path.basename(name)] = (int(uid), int(gid), int(mode, 8))
    return found


@pytest.mark.parametrize("image_format", ["squashfs", "erofs"])
def test_images_keep_owners_and_warn_of_setuid_and_device_nodes(ns: MountNamespace, root: pathlib.Path,
                                                                tmp_path: pathlib.Path, image_format: str) -> None:
    source = _owned_source(tmp_path)
    args = {"root": str(root), "name": "owned", "format": image_format, "sources": [str(source)]}
    check = build(ns, args, check=True)
    result = build(ns, args)
    assert not result.get("failed"), result.get("msg")
    for outcome in (check, result):
        texts = " ".join(warning_texts(outcome))
        assert "usr/bin/tool with the setuid bit" in texts and "usr/bin/grouped with the setgid bit" in texts
        assert "device node usr/bin/null" in texts
    owners = _owners_in_image(ns, pathlib.Path(result["path"]), image_format, tmp_path)
    assert owners == {"tool": (1000, 1000, 0o4755), "grouped": (1001, 1002, 0o2755)}


def test_package_sources_warn_of_setuid_members(ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    tarball = tmp_path / "setuid.tar"
    with tarfile.open(tarball, "w") as archive:
        info = tarfile.TarInfo("usr/bin/tool")
        data = b"#!/bin/sh\n"
        info.size, info.mode, info.uid, info.gid = len(data), 0o4755, 1000, 1000
        archive.addfile(info, io.BytesIO(data))
    result = build(ns, {"root": str(root), "name": "pkg", "format": "squashfs", "sources": [str(tarball)]})
    assert not result.get("failed"), result.get("msg")
    assert any("usr/bin/tool with the setuid bit" in text for text in warning_texts(result))
    assert _owners_in_image(ns, pathlib.Path(result["path"]), "squashfs", tmp_path)["tool"] == (1000, 1000, 0o4755)
