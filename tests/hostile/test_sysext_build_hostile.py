# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build against hostile sources: symlinks where the release file goes, setuid files of other owners,
members bsdtar refuses, hard links to members the image drops."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import stat
import sys
import tarfile
import tempfile
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


# Issue 17, lesser cases: members bsdtar refuses, hard links to dropped members, and their neighbours.

def _member(name: str, data: bytes | None = b"", kind: bytes = tarfile.REGTYPE, link: str = "",
            mode: int = 0o644, owner: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid, info.mtime = kind, link, mode, owner, owner, 1700000000
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"")
    return info, data


def _tarball(path: pathlib.Path, members: t.Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    # tarfile writes members in the order given and keeps names as they are (absolute, with '..').
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return str(path)


def _file(name: str, data: bytes, mode: int = 0o644, owner: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, data, mode=mode, owner=owner)


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, None, tarfile.LNKTYPE, target)


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, None, tarfile.SYMTYPE, target)


def hashed_listing(top: pathlib.Path) -> dict[str, tuple[int, int, int, str]]:
    """path -> (mode, uid, gid, sha256 of the content or link target) of everything under top."""
    found = {}
    for current, directories, files in os.walk(top):
        for name in directories + files:
            path = os.path.join(current, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
            else:
                content = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            found[os.path.relpath(path, top)] = (st.st_mode, st.st_uid, st.st_gid, content)
    return found


def _conflict_dirs() -> list[str]:
    return [name for name in os.listdir(tempfile.gettempdir()) if name.startswith("immutable-root-sysext-conflicts-")]


# Facts of paths in a built image: (inode, nlink, uid, gid, mode, content or link target); read in the namespace,
# from the kernel's mount of a raw image.
_FACTS = r"""
import json, os, stat, sys
top, paths = sys.argv[1], sys.argv[2:]
facts = {}
for path in paths:
    st = os.lstat(os.path.join(top, path))
    if stat.S_ISLNK(st.st_mode):
        content = "-> " + os.readlink(os.path.join(top, path))
    else:
        content = open(os.path.join(top, path), "rb").read().decode()
    facts[path] = [st.st_ino, st.st_nlink, st.st_uid, st.st_gid, st.st_mode, content]
print(json.dumps(facts))
"""


def image_facts(ns: MountNamespace, image: str, image_format: str, tmp_path: pathlib.Path,
                paths: t.Sequence[str]) -> dict[str, list[t.Any]]:
    if image_format == "directory":
        return json.loads(ns.run([sys.executable, "-c", _FACTS, image] + list(paths)).stdout)
    mounted = tmp_path / "mounted"
    mounted.mkdir(exist_ok=True)
    ns.run(["mount", "-t", image_format, "-o", "loop,ro", image, str(mounted)])
    try:
        return json.loads(ns.run([sys.executable, "-c", _FACTS, str(mounted)] + list(paths)).stdout)
    finally:
        ns.run(["umount", str(mounted)])


def _assert_refused_without_trace(ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path, args: dict,
                                  expected: str) -> dict[str, t.Any]:
    before, conflicts = hashed_listing(tmp_path), _conflict_dirs()
    result = build(ns, args)
    assert result.get("failed") and result["msg"] == expected, result.get("msg")
    assert result["changed"] is False and result["actions"] == []
    assert hashed_listing(tmp_path) == before, "the refused build left something behind"
    assert _conflict_dirs() == conflicts
    assert not [name for name in os.listdir(root / "var/lib") if name.startswith(".#")]
    return result


# Each: the members (given a directory outside everything), the member bsdtar refuses, and how its reason
# begins (libarchive 3.6's wording).
BSDTAR_REFUSALS: dict[str, tuple[t.Callable[[str], list[tuple[tarfile.TarInfo, bytes | None]]], str, str]] = {
    "file through a symlink out of the tree": (
        lambda outside: [_symlink("usr/share/evil", outside), _file("usr/share/evil/x", b"pwned\n")],
        "usr/share/evil/x", "Cannot extract through symlink usr/share/evil/x"),
    "file through a symlink inside the tree": (
        lambda outside: [_file("usr/share/tool/data", b"data\n"), _symlink("usr/share/alias", "tool"),
                         _file("usr/share/alias/x", b"x\n")],
        "usr/share/alias/x", "Cannot extract through symlink usr/share/alias/x"),
    "hard link to a member that comes after it": (
        lambda outside: [_hardlink("usr/share/tool/early", "usr/share/tool/data"),
                         _file("usr/share/tool/data", b"data\n")],
        "usr/share/tool/early", "Hard-link target 'usr/share/tool/data' does not exist."),
}


@pytest.mark.parametrize("case", sorted(BSDTAR_REFUSALS))
@pytest.mark.parametrize("dest", ["default", "new"])
def test_members_bsdtar_refuses_are_named_and_leave_nothing_behind(
        ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path, case: str, dest: str) -> None:
    members, refused, reason = BSDTAR_REFUSALS[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    tarball = _tarball(tmp_path / "refused.tar", [_file("usr/share/tool/before", b"before\n")] + members(str(outside)))
    args = {"root": str(root), "name": "refused", "format": "squashfs", "sources": [tarball]}
    if dest == "new":
        args["dest"] = str(root / "var/lib/new-extensions")
    # bsdtar only refuses while unpacking: check mode predicts the build it cannot know will fail.
    assert build(ns, args, check=True)["changed"] is True
    expected = "sources: bsdtar refused to unpack a member of %s: %s (%s" % (tarball, refused, reason)
    before = hashed_listing(tmp_path)
    result = build(ns, args)
    assert result.get("failed") and result["msg"].startswith(expected) and result["msg"].endswith(")"), result["msg"]
    assert "Error exit delayed" not in result["msg"] and result["cmd"][-2:] == ["--", "usr"]
    assert result["changed"] is False and result["actions"] == []
    assert hashed_listing(tmp_path) == before, "the refused build left something behind"
    assert not [name for name in os.listdir(root / "var/lib") if name.startswith(".#")]
    assert os.listdir(outside) == []


def test_every_refused_member_is_named(ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    tarball = _tarball(tmp_path / "two.tar", [
        _symlink("usr/share/a", "/tmp"), _file("usr/share/a/one", b"1\n"),
        _symlink("opt/b: c", "/tmp"), _file("opt/b: c/two", b"2\n")])
    result = build(ns, {"root": str(root), "name": "two", "format": "directory", "sources": [tarball]})
    assert result["msg"] == (
        "sources: bsdtar refused to unpack 2 members of %s: usr/share/a/one (Cannot extract through symlink "
        "usr/share/a/one); opt/b: c/two (Cannot extract through symlink opt/b: c/two)" % tarball)
    assert not (root / "var/lib/extensions/two").exists()


# Refused when the sources are read, before anything is written, in check mode too.
SCAN_REFUSALS = {
    "member climbing out with ..": (
        [_file("usr/share/../../../tmp/dd", b"dd\n")],
        "sources: {tarball}: member 'usr/share/../../../tmp/dd' climbs out of the image with '..'"),
    "dropped member climbing out with ..": (
        [_file("../etc/passwd", b"root::0:0::/:/bin/sh\n")],
        "sources: {tarball}: member '../etc/passwd' climbs out of the image with '..'"),
    "hard link climbing out with ..": (
        [_hardlink("usr/share/tool/passwd", "../../etc/passwd")],
        "sources: {tarball} ships usr/share/tool/passwd as a hard link to ../../etc/passwd, which climbs out "
        "with '..'"),
    "hard link to a file the source does not ship": (
        [_hardlink("usr/share/tool/passwd", "/etc/passwd")],
        "sources: {tarball} ships usr/share/tool/passwd as a hard link to /etc/passwd, a member it does not ship"),
}


@pytest.mark.parametrize("case", sorted(SCAN_REFUSALS))
def test_climbing_and_dangling_members_are_refused_before_anything_changes(
        ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path, case: str) -> None:
    members, message = SCAN_REFUSALS[case]
    tarball = _tarball(tmp_path / "climb.tar", [_file("usr/share/tool/data", b"data\n")] + members)
    args = {"root": str(root), "name": "climb", "format": "directory", "sources": [tarball]}
    for check in (True, False):
        before = hashed_listing(tmp_path)
        result = build(ns, args, check=check)
        assert result.get("failed") and result["msg"] == message.format(tarball=tarball), result.get("msg")
        assert hashed_listing(tmp_path) == before


def test_absolute_members_and_symlinks_pointing_out_are_kept_as_written(
        ns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # A symlink in an image is resolved in the merged root at run time: it is kept, never followed while building.
    tarball = _tarball(tmp_path / "links.tar", [
        _file("/usr/share/tool/absolute", b"absolute\n"),
        _symlink("usr/share/tool/shadow", "/etc/shadow"),
        _symlink("usr/share/tool/up", "../../../../../../etc"),
    ])
    before = hashed_listing(root / "etc")
    result = build(ns, {"root": str(root), "name": "links", "format": "directory", "sources": [tarball]})
    assert not result.get("failed"), result.get("msg")
    paths = ["usr/share/tool/absolute", "usr/share/tool/shadow", "usr/share/tool/up"]
    facts = image_facts(ns, result["path"], "directory", tmp_path, paths)
    assert [facts[path][5] for path in paths] == ["absolute\n", "-> /etc/shadow", "-> ../../../../../../etc"]
    assert hashed_listing(root / "etc") == before


@pytest.mark.parametrize("image_format", ["directory", "squashfs", "erofs"])
def test_hard_links_to_dropped_members_keep_the_content(ns: MountNamespace, root: pathlib.Path,
                                                        tmp_path: pathlib.Path, image_format: str) -> None:
    tarball = _tarball(tmp_path / "linked.pkg.tar", [
        _file(".PKGINFO", b"pkgname = tool\n"),
        _file("./etc/tool.conf", b"setting = 1\n", mode=0o640, owner=1000),
        _hardlink("./usr/share/tool/tool.conf", "./etc/tool.conf"),
        _hardlink("./usr/share/doc/tool/example.conf", "./etc/tool.conf"),
        _file("./usr/bin/tool", b"#!/bin/sh\n", mode=0o755),
        _hardlink("./usr/bin/tool-alias", "./usr/bin/tool"),
    ])
    args = {"root": str(root), "name": "linked", "format": image_format, "sources": [tarball]}
    check = build(ns, args, check=True)
    result = build(ns, args)
    assert not result.get("failed"), result.get("msg")
    assert check["changed"] and result["changed"] and result["file_count"] == 5
    assert result["dropped"] == [".PKGINFO", "etc/tool.conf"]
    paths = ["usr/share/tool/tool.conf", "usr/share/doc/tool/example.conf", "usr/bin/tool", "usr/bin/tool-alias"]
    facts = image_facts(ns, result["path"], image_format, tmp_path, paths)
    conf, example, tool, alias = (facts[path] for path in paths)
    # The dropped etc/tool.conf is gone: the two links are one file of two names, with its content and metadata.
    assert conf[1:] == [2, 1000, 1000, stat.S_IFREG | 0o640, "setting = 1\n"] and example == conf
    assert tool[1:] == [2, 0, 0, stat.S_IFREG | 0o755, "#!/bin/sh\n"] and alias == tool
    assert not (pathlib.Path(result["path"]) / "etc").exists()
    again = build(ns, args)
    assert not again.get("failed") and again["changed"] is False, again.get("msg")


def test_two_sources_shipping_one_hard_link_to_a_dropped_member(ns: MountNamespace, root: pathlib.Path,
                                                                tmp_path: pathlib.Path) -> None:
    # The path both ship is compared after unpacking it, which needs the dropped target unpacked too.
    members = [_file("etc/tool.conf", b"setting = 1\n"), _hardlink("usr/share/tool/tool.conf", "etc/tool.conf")]
    first, second = _tarball(tmp_path / "first.tar", members), _tarball(tmp_path / "second.tar", members)
    conflicts = _conflict_dirs()
    result = build(ns, {"root": str(root), "name": "both", "format": "directory", "sources": [first, second]})
    assert not result.get("failed"), result.get("msg")
    assert (pathlib.Path(result["path"]) / "usr/share/tool/tool.conf").read_bytes() == b"setting = 1\n"
    assert _conflict_dirs() == conflicts
    other = _tarball(tmp_path / "other.tar", [_file("etc/tool.conf", b"setting = 2\n"),
                                              _hardlink("usr/share/tool/tool.conf", "etc/tool.conf")])
    _assert_refused_without_trace(
        ns, root, tmp_path, {"root": str(root), "name": "both", "format": "directory", "sources": [first, other]},
        "sources: %s and %s both ship usr/share/tool/tool.conf, with different content or metadata" % (first, other))
