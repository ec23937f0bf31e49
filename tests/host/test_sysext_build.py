# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build: real makepkg packages and directories into directory, squashfs and erofs images, used by the
real systemd-sysext 252; a half-built image is never visible, whenever the build is killed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tarfile
import tempfile
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import KILL_AT_ENV, TRACE_ENV

from support.modules import direct_module, four_step
from support.namespace import MountNamespace
from support.pacman import build_package
from support.sysext import (
    DEBIAN_12, in_ns, loop_devices, make_extension, manifest, merged_now, sysext, warning_texts,
)
# The VM lab (molecule/lab, on sys.path through tests/conftest.py) caches the mmdebstrap minbase tree.
from vmlab import rootfs

DIGEST_KEY = "IMMUTABLE_ROOT_SYSEXT_DIGEST"


@pytest.fixture(scope="session")
def tools_package() -> t.Iterator[pathlib.Path]:
    """A makepkg package with files inside and outside the hierarchies."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="immutable-root-sysext-pkg-"))
    os.chmod(workdir, 0o755)
    yield build_package(workdir, "tools-immutable", {
        "usr/bin/tools-immutable": b"#!/bin/sh\necho tools from /usr, data: $(cat /opt/tools-immutable/data)\n",
        "opt/tools-immutable/data": b"opt data\n",
        "etc/tools-immutable.conf": b"never merged\n",
    })
    # build_package leaves its tree to the caller, like the shared fixture does.
    for current, directories, files in os.walk(workdir, topdown=False):
        for name in files:
            os.unlink(os.path.join(current, name))
        for name in directories:
            path = os.path.join(current, name)
            os.unlink(path) if os.path.islink(path) else os.rmdir(path)
    os.rmdir(workdir)


def build(ns: MountNamespace | None, args: dict, check: bool = False, diff: bool = False,
          env: dict | None = None) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "sysext_build", args, check=check, diff=diff, env=env)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    return result


def merge(ns: MountNamespace, root: pathlib.Path, **args: t.Any) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "sysext_merge", dict(args, root=str(root)))
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    return result


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_tree(path: pathlib.Path) -> pathlib.Path:
    make_extension(path, None, release=None, files={
        "usr/bin/from-dir": "#!/bin/sh\necho from a directory\n",
        "usr/share/from-dir/data": "data\n",
        "etc/from-dir.conf": "dropped\n",
    })
    os.chmod(path / "usr/bin/from-dir", 0o755)
    os.setxattr(path / "usr/bin/from-dir", "user.kept", b"yes")
    return path


def minbase(tmp_path: pathlib.Path) -> pathlib.Path:
    tree = tmp_path / "minbase"
    rootfs.extract_tree(rootfs.ensure_tree(rootfs.MINBASE_TREE), tree)
    return tree


def test_makepkg_package_to_extension_to_binary_in_a_minbase_chroot(
        sxns: MountNamespace, tmp_path: pathlib.Path, packages: dict[str, pathlib.Path],
        tools_package: pathlib.Path) -> None:
    tree = minbase(tmp_path)
    args = {"root": str(tree), "name": "tools", "sources": [str(packages["hello"]), str(tools_package)]}
    check, apply, again, check_again = four_step(sxns, "sysext_build", args)

    image = tree / "var/lib/extensions/tools.raw"
    assert apply["path"] == check["path"] == str(image) and apply["format"] == "squashfs"
    assert [a["action"] for a in check["actions"]] == ["build", "install"]
    assert check["size"] is None and apply["size"] == image.stat().st_size
    assert apply["release"]["ID"] == "debian" and apply["release"]["VERSION_ID"] == "12"
    assert apply["release"]["ARCHITECTURE"] == "x86-64" and apply["release"][DIGEST_KEY] == apply["digest"]
    assert again["digest"] == apply["digest"] == check_again["digest"]
    # The package's metadata and etc/ are left out, and listed.
    for dropped in (".PKGINFO", ".MTREE", ".BUILDINFO", "etc/", "etc/tools-immutable.conf"):
        assert dropped in apply["dropped"], apply["dropped"]
    assert apply["dropped_count"] == len(apply["dropped"])
    assert apply["file_count"] == 5, "two binaries, README, opt data, the release file"
    listing = sxns.run(["unsquashfs", "-lc", str(image)]).stdout
    assert "squashfs-root/usr/bin/tools-immutable" in listing and "etc" not in listing and ".PKGINFO" not in listing

    result = merge(sxns, tree, required=["tools"])
    assert not result.get("failed"), result.get("msg")
    assert merged_now(sxns, tree) == ["tools"] and merged_now(sxns, tree, "opt") == ["tools"]
    ran = sxns.run(["chroot", str(tree), "/usr/bin/hello-immutable"])
    assert ran.stdout == "hello from an arch package\n"
    ran = sxns.run(["chroot", str(tree), "/bin/tools-immutable"])  # /bin -> usr/bin in a merged-/usr tree
    assert ran.stdout == "tools from /usr, data: opt data\n"
    assert not (in_ns(sxns, tree / "etc/tools-immutable.conf")).exists()
    assert merge(sxns, tree, state="unmerged")["changed"]


@pytest.mark.parametrize("image_format", ["directory", "squashfs", "erofs"])
def test_formats_are_idempotent_reproducible_and_mergeable(sxns: MountNamespace, root: pathlib.Path,
                                                           tmp_path: pathlib.Path, image_format: str,
                                                           packages: dict[str, pathlib.Path]) -> None:
    args = {"root": str(root), "name": "both", "format": image_format,
            "sources": [str(source_tree(tmp_path / "src")), str(packages["hello"])]}
    before = manifest(root)
    predicted = build(sxns, args, check=True, diff=True)
    assert predicted["changed"] and manifest(root) == before, "check mode writes nothing"
    assert predicted["diff"] == {"before": {"images": {}}, "after": {"images": {predicted["path"]: predicted["digest"]}}}

    first = build(sxns, args)
    image = pathlib.Path(first["path"])
    assert first["changed"] and first["digest"] == predicted["digest"] and image.exists()
    identity = (image.stat().st_ino, image.stat().st_mtime_ns)
    again = build(sxns, args)
    assert not again["changed"] and again["actions"] == [] and (image.stat().st_ino, image.stat().st_mtime_ns) == identity
    assert sorted(os.listdir(root / "var/lib")) == ["extensions"], "no staging directory is left behind"

    # Same inputs, same bytes.
    fingerprint = manifest(image) if image.is_dir() else sha256(image)
    os.rename(image, tmp_path / "first")
    assert build(sxns, args)["changed"]
    assert (manifest(image) if image.is_dir() else sha256(image)) == fingerprint

    result = merge(sxns, root, required=["both"])
    assert not result.get("failed"), result.get("msg")
    item = [entry for entry in result["extensions"] if entry["name"] == "both"][0]
    assert item["type"] == ("directory" if image_format == "directory" else "raw")
    assert item["fstype"] == (None if image_format == "directory" else image_format)
    assert (in_ns(sxns, root / "usr/bin/from-dir")).read_text() == "#!/bin/sh\necho from a directory\n"
    assert os.getxattr(in_ns(sxns, root / "usr/bin/from-dir"), "user.kept") == b"yes"
    assert (in_ns(sxns, root / "usr/bin/hello-immutable")).exists()
    assert not (in_ns(sxns, root / "etc/from-dir.conf")).exists()


def test_changed_input_rebuilds_and_a_new_format_replaces_the_old(sxns: MountNamespace, root: pathlib.Path,
                                                                  tmp_path: pathlib.Path) -> None:
    source = source_tree(tmp_path / "src")
    args = {"root": str(root), "name": "tool", "format": "directory", "sources": [str(source)]}
    first = build(sxns, args)
    (source / "usr/share/from-dir/data").write_text("changed\n")
    second = build(sxns, args, diff=True)
    assert second["changed"] and second["digest"] != first["digest"]
    assert second["diff"]["before"]["images"] == {first["path"]: first["digest"]}
    assert (root / "var/lib/extensions/tool/usr/share/from-dir/data").read_text() == "changed\n"
    third = build(sxns, dict(args, format="erofs"))
    assert [a["action"] for a in third["actions"]] == ["build", "remove", "install"]
    assert sorted(os.listdir(root / "var/lib/extensions")) == ["tool.raw"]
    assert not build(sxns, dict(args, format="erofs"))["changed"]
    release = build(sxns, dict(args, format="erofs", release={"IMAGE_VERSION": "2"}))
    assert release["changed"] and release["release"]["IMAGE_VERSION"] == "2", "options are part of the digest"


def test_raw_images_are_replaced_while_merged_directories_are_not(sxns: MountNamespace, root: pathlib.Path,
                                                                  tmp_path: pathlib.Path) -> None:
    source = source_tree(tmp_path / "src")
    raw = {"root": str(root), "name": "raw", "sources": [str(source)]}
    directory = {"root": str(root), "name": "dir", "format": "directory", "sources": [str(source)]}
    build(sxns, raw)
    build(sxns, directory)
    assert merge(sxns, root)["changed"] and merged_now(sxns, root) == ["dir", "raw"]
    (source / "usr/share/from-dir/data").write_text("second\n")
    before = manifest(root / "var/lib/extensions/dir")
    refused = build(sxns, directory)
    assert refused.get("failed") and refused["msg"].startswith("name: ") and "is merged right now" in refused["msg"]
    assert manifest(root / "var/lib/extensions/dir") == before
    replaced = build(sxns, raw)
    assert replaced["changed"] and not replaced.get("failed"), replaced.get("msg")
    assert merge(sxns, root, state="refreshed")["changed"]
    assert merged_now(sxns, root) == ["dir", "raw"]


def test_release_defaults_and_overrides(sxns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    (root / "usr/lib/os-release").write_text("ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\n")
    source = source_tree(tmp_path / "src")
    leveled = build(sxns, {"root": str(root), "name": "leveled", "format": "directory", "sources": [str(source)]})
    assert {key: leveled["release"][key] for key in ("ID", "SYSEXT_LEVEL")} == {"ID": "debian", "SYSEXT_LEVEL": "1.0"}
    assert "VERSION_ID" not in leveled["release"], "a level survives OS updates, a VERSION_ID would not"
    anywhere = build(sxns, {"root": str(root), "name": "anywhere", "format": "directory", "sources": [str(source)],
                            "release": {"ID": "_any", "ARCHITECTURE": None, "SYSEXT_LEVEL": None,
                                        "SYSEXT_SCOPE": "system portable", "IMAGE_VERSION": 3}})
    text = (root / "var/lib/extensions/anywhere/usr/lib/extension-release.d/extension-release.anywhere").read_text()
    assert text == "ID=_any\nSYSEXT_SCOPE='system portable'\nIMAGE_VERSION=3\n%s=%s\n" % (DIGEST_KEY, anywhere["digest"])
    (root / "usr/lib/os-release").write_text("ID=fedora\nVERSION_ID=40\n")
    result = merge(sxns, root)
    assert [e["name"] for e in result["extensions"] if e["compatible"]] == ["anywhere"]
    rebuilt = build(sxns, {"root": str(root), "name": "leveled", "format": "directory", "sources": [str(source)],
                           "release": {"ID": "debian", "SYSEXT_LEVEL": "1.0"}})
    assert rebuilt["changed"], "the target changed, so did the defaults"
    assert any("leveled will not be merged on %s: it is for OS 'debian'" % root in warning
               for warning in warning_texts(rebuilt))
    make_extension(root / "etc/extensions/leveled", "leveled")
    masked = build(sxns, {"root": str(root), "name": "leveled", "format": "directory", "sources": [str(source)],
                          "release": {"ID": "fedora"}})
    assert any("leveled is masked by %s/etc/extensions/leveled" % root in warning for warning in warning_texts(masked))


def test_tarballs_with_dot_slash_names_and_a_narrow_hierarchy(sxns: MountNamespace, root: pathlib.Path,
                                                              tmp_path: pathlib.Path) -> None:
    tarball = tmp_path / "plain.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in (("./usr/local/bin/narrow", b"#!/bin/sh\n"), ("./usr/share/doc/wide", b"wide\n"),
                           ("./README", b"readme\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    result = build(sxns, {"root": str(root), "name": "narrow", "format": "directory", "sources": [str(tarball)],
                          "hierarchies": ["/usr/local"]})
    assert not result.get("failed"), result.get("msg")
    image = root / "var/lib/extensions/narrow"
    assert (image / "usr/local/bin/narrow").read_text() == "#!/bin/sh\n"
    assert not (image / "usr/share/doc").exists()
    assert sorted(result["dropped"]) == ["README", "usr/share/doc/wide"]


def image_names(root: pathlib.Path) -> list[str]:
    return sorted(name for name in os.listdir(root / "var/lib/extensions"))


def test_kill_at_every_step_never_shows_a_half_built_image(sxns: MountNamespace, root: pathlib.Path,
                                                           tmp_path: pathlib.Path) -> None:
    source = source_tree(tmp_path / "src")
    args = {"root": str(root), "name": "tool", "sources": [str(source)]}
    old = build(sxns, args)["digest"]
    (source / "usr/share/from-dir/data").write_text("new\n")
    trace = tmp_path / "trace"
    saved = tmp_path / "saved.raw"
    os.link(root / "var/lib/extensions/tool.raw", saved)
    new = build(sxns, args, env={TRACE_ENV: str(trace)})["digest"]
    steps = [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]
    assert steps == ["sysext_build.staged", "sysext_build.image_written", "sysext_build.validated",
                     "sysext_build.build", "sysext_build.install"]
    for number, step in enumerate(steps, start=1):
        os.replace(saved, root / "var/lib/extensions/tool.raw")
        os.link(root / "var/lib/extensions/tool.raw", saved)
        loops = loop_devices(tmp_path)
        rc, result, _stderr = direct_module(sxns, "sysext_build", args, env={KILL_AT_ENV: str(number)})
        assert rc == -9 and result is None, "killed at %s" % step
        # What systemd-sysext would find right now: the old image or the new one, complete, and nothing else.
        assert image_names(root) == ["tool.raw"], step
        seen = merge(sxns, root, required=["tool"])
        assert not seen.get("failed"), (step, seen.get("msg"))
        assert seen["extensions"][0]["release"][DIGEST_KEY] == (new if step == "sysext_build.install" else old), step
        merge(sxns, root, state="unmerged")
        rerun = build(sxns, args)
        assert not rerun.get("failed") and rerun["digest"] == new, (step, rerun.get("msg"))
        assert sorted(os.listdir(root / "var/lib")) == ["extensions"], "stale staging is cleaned up"
        assert loop_devices(tmp_path) == loops
    listed = json.loads(sysext(sxns, root, "list", "--json=short").stdout)
    assert [(item["name"], item["type"]) for item in listed] == [("tool", "raw")]


@pytest.mark.parametrize("change, message", [
    ({"name": "bad name"}, "name: name 'bad name' does not match"),
    ({"name": "a:b"}, "name: name 'a:b' does not match"),
    ({"root": "relative"}, "root: must be an absolute path"),
    ({"dest": "var/lib/extensions"}, "dest: must be an absolute path"),
    ({"hierarchies": ["/"]}, "hierarchies: / is refused"),
    ({"hierarchies": ["/proc"]}, "hierarchies: /proc is refused"),
    ({"hierarchies": ["/sys"]}, "hierarchies: /sys is refused"),
    ({"release": {"VERSON_ID": "12"}}, "release: unknown key 'VERSON_ID'"),
    ({"release": {"ARCHITECTURE": "amd64"}}, "release: ARCHITECTURE='amd64' is not a systemd architecture name"),
    ({"release": {DIGEST_KEY: "x"}}, "release: %s is written by this module" % DIGEST_KEY),
    ({"format": "squashfs", "compression": "lz4hc"}, "compression: 'lz4hc' is not available for format squashfs"),
    ({"sources": ["NOTES"]}, "sources: %s is neither a package or tarball"),
    ({"sources": ["FAKE"]}, "sources: %s cannot be read as a package or tarball"),
    ({"sources": ["/nonexistent/pkg.pkg.tar.zst"]}, "sources: /nonexistent/pkg.pkg.tar.zst does not exist"),
    ({"sources": ["OSREL"]}, "sources: %s ships usr/lib/os-release"),
    ({"sources": ["EMPTY"]}, "sources: nothing to build"),
    ({"sources": ["SRC", "CONFLICT"]}, "sources: %s and %s both ship usr/share/from-dir/data"),
])
def test_bad_input_is_refused_and_nothing_is_written(sxns: MountNamespace, root: pathlib.Path,
                                                     tmp_path: pathlib.Path, change: dict, message: str) -> None:
    files = {
        "SRC": source_tree(tmp_path / "src"),
        "NOTES": tmp_path / "notes.txt",
        "FAKE": tmp_path / "fake.pkg.tar.zst",
        "OSREL": make_extension(tmp_path / "osrel", None, release=None, files={"usr/lib/os-release": DEBIAN_12}),
        "EMPTY": make_extension(tmp_path / "empty", None, release=None, files={"etc/only": "x"}),
        "CONFLICT": make_extension(tmp_path / "conflict", None, release=None,
                                   files={"usr/share/from-dir/data": "other\n"}),
    }
    files["NOTES"].write_text("notes\n")
    files["FAKE"].write_bytes(os.urandom(4096))
    args = dict({"root": str(root), "name": "tool", "sources": [str(files["SRC"])]}, **change)
    args["sources"] = [str(files.get(source, source)) for source in args["sources"]]
    before, parent = manifest(root), sorted(os.listdir(tmp_path))
    result = build(sxns, args)
    named = [str(files[key]) for key in files if key in change.get("sources", [])]
    expected = message % tuple(named) if "%s" in message else message
    assert result.get("failed") and result["msg"].startswith(expected), result.get("msg")
    assert manifest(root) == before and sorted(os.listdir(tmp_path)) == parent
