# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge against the real systemd-sysext 252, with --root trees in private mount namespaces.

Every verdict the module predicts is held against what systemd-sysext really does with the same tree:
which names it merges, and (with SYSTEMD_LOG_LEVEL=debug) why it skips the others.
"""

from __future__ import annotations

import os
import pathlib
import struct
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import KILL_AT_ENV, TRACE_ENV

from support.modules import ansible_module, direct_module, four_step
from support.namespace import MountNamespace
from support.sysext import (
    DEBIAN_12, erofs, ignored_by_systemd, in_ns, loop_devices, make_extension, manifest, merged_now,
    overlay_lowerdirs, squashfs, sysext, warning_texts,
)


def run(ns: MountNamespace, args: dict, check: bool = False, diff: bool = False,
        env: dict | None = None) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "sysext_merge", args, check=check, diff=diff, env=env)
    assert result is not None, "module crashed (rc %d): %s" % (rc, stderr)
    return result


def verdicts(result: dict) -> dict[str, tuple[str, str | None]]:
    return {item["name"]: (item["verdict"], item["reason"]) for item in result["extensions"]
            if item["verdict"] not in ("masked", "ignored")}


def top_mount(ns: MountNamespace, path: pathlib.Path) -> tuple[str, ...] | None:
    """(mount id, device, mtime of the merged tree): all three change on any remount."""
    found = None
    for line in ns.mountinfo().splitlines():
        fields = line.split(" ")
        if fields[4] == str(path):
            found = (fields[0], fields[2], str(os.stat(in_ns(ns, path)).st_mtime_ns))
    return found


def test_directory_squashfs_erofs_four_steps_layer_order_diff_and_exact_unmerge(
        sxns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    images = root / "var/lib/extensions"
    shared = "usr/share/base/shared"
    make_extension(images / "a", "a", files={shared: "a\n", "usr/bin/a-tool": "a"})
    make_extension(images / "b", "b", files={shared: "b\n", "opt/b/data": "b"})
    squashfs(make_extension(tmp_path / "c9", "c9", files={shared: "c9\n"}), images / "c9.raw")
    erofs(make_extension(tmp_path / "c10", "c10", files={shared: "c10\n", "usr/bin/c10-tool": "c10"}),
          images / "c10.raw")
    before_tree, loops_before = manifest(root), loop_devices(tmp_path)
    mounts_before = sxns.mountinfo()

    check, apply, again, check_again = four_step(sxns, "sysext_merge", {"root": str(root)})

    merge_action = {"action": "merge", "target": str(root), "detail": "a, b, c9, c10 into /usr, /opt (top layer: c10)"}
    assert check["actions"] == apply["actions"] == [merge_action]
    assert check["layer_order"] == apply["layer_order"] == ["c10", "c9", "b", "a"]
    assert overlay_lowerdirs(sxns, root, "usr") == ["c10", "c9", "b", "a"], "the kernel's stack is the predicted one"
    assert overlay_lowerdirs(sxns, root, "opt") == ["b"], "only b ships /opt; the name list is still complete"
    assert (in_ns(sxns, root / shared)).read_text() == "c10\n"
    assert merged_now(sxns, root) == merged_now(sxns, root, "opt") == ["a", "b", "c9", "c10"]
    assert {item["name"]: (item["type"], item["fstype"]) for item in apply["extensions"]} == {
        "a": ("directory", None), "b": ("directory", None), "c9": ("raw", "squashfs"), "c10": ("raw", "erofs")}
    usr = apply["hierarchies"][0]
    assert usr["merged"] and usr["mount_id"] and usr["since"] and check["hierarchies"][0]["mount_id"] is None
    # Diff: before/after sets, and for each newly merged image the files it adds and the base files it hides.
    assert check["diff"]["before"]["merged"] == {"/usr": [], "/opt": []}
    assert check["diff"]["after"]["merged"] == {"/usr": ["a", "b", "c9", "c10"], "/opt": ["a", "b", "c9", "c10"]}
    files = check["diff"]["after"]["files"]
    assert files["c10"]["shadows"] == ["/usr/share/base/shared"] and files["c10"]["shadows_count"] == 1
    assert "/usr/bin/c10-tool" in files["c10"]["adds"] and files["b"]["adds_count"] == 2
    assert "/opt/b/data" in files["b"]["adds"]
    assert again["diff"]["after"].get("files") is None, "nothing is newly merged on the second run"
    # Idempotence means no remount at all: same mount, same device, same merge time.
    assert len(loop_devices(tmp_path) - loops_before) == 2, "one loop device per raw image while merged"
    mounted = (top_mount(sxns, root / "usr"), top_mount(sxns, root / "opt"))
    assert again["hierarchies"] == apply["hierarchies"] == check_again["hierarchies"]
    assert run(sxns, {"root": str(root)})["changed"] is False
    assert (top_mount(sxns, root / "usr"), top_mount(sxns, root / "opt")) == mounted

    steps = four_step(sxns, "sysext_merge", {"root": str(root), "state": "unmerged"})
    assert steps.check["actions"][0]["action"] == "unmerge"
    assert steps.check["hierarchies"][0]["merged"] is False and merged_now(sxns, root) == []
    assert sxns.mountinfo() == mounts_before
    assert manifest(root) == before_tree, "unmerge leaves the tree byte- and metadata-identical"
    assert loop_devices(tmp_path) == loops_before


# Extension release files against a Debian 12 host; (release text or None for no file, compatible?).
CORPUS: dict[str, tuple[str | None, bool]] = {
    "good": (DEBIAN_12, True),
    "anyid": ("ID=_any\n", True),
    "anyarch": (DEBIAN_12 + "ARCHITECTURE=_any\n", True),
    "thisarch": (DEBIAN_12 + "ARCHITECTURE=x86-64\n", True),
    "scopes": (DEBIAN_12 + "SYSEXT_SCOPE='initrd system'\n", True),
    "quoted": ('ID="debian"\nVERSION_ID=\'12\'\n', True),
    "norel": (None, False),
    "emptyrel": ("", False),
    "commentonly": ("# ID=debian\n", False),
    "wrongid": ("ID=fedora\nVERSION_ID=12\n", False),
    "noid": ("VERSION_ID=12\n", False),
    "wrongver": ("ID=debian\nVERSION_ID=11\n", False),
    "nover": ("ID=debian\n", False),
    "wrongarch": (DEBIAN_12 + "ARCHITECTURE=arm64\n", False),
    "portable": (DEBIAN_12 + "SYSEXT_SCOPE=portable\n", False),
    "levelonly": ("ID=debian\nSYSEXT_LEVEL=1.0\n", False),
    "badutf8": ("ID=debian\nVERSION_ID=12\nNAME=\udcff\n", False),
}


def build_corpus(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    images = root / "var/lib/extensions"
    for name, (release, _compatible) in CORPUS.items():
        tree = images / name
        make_extension(tree, name, release=None)
        if release is not None:
            path = tree / "usr/lib/extension-release.d" / ("extension-release." + name)
            path.parent.mkdir(parents=True)
            path.write_bytes(release.encode("utf-8", "surrogateescape"))
    # Renamed on deployment: a release file under another name counts only with strict=false, and only alone.
    make_extension(images / "misnamed", "misnamed", release_name="other")
    relaxed = make_extension(images / "relaxed", "relaxed", release_name="other")
    os.setxattr(relaxed / "usr/lib/extension-release.d/extension-release.other", "user.extension-release.strict",
                b"false")
    strict = make_extension(images / "strict", "strict", release_name="other")
    os.setxattr(strict / "usr/lib/extension-release.d/extension-release.other", "user.extension-release.strict",
                b"true")
    twice = make_extension(images / "twice", "twice", release_name="one")
    make_extension(twice, "two", files={})
    for other in ("one", "two"):
        os.setxattr(twice / "usr/lib/extension-release.d" / ("extension-release." + other),
                    "user.extension-release.strict", b"0")
    # Raw images: a version mismatch is skipped like a directory's; an OS tree without release data too.
    squashfs(make_extension(tmp_path / "src/rawold", "rawold", release="ID=debian\nVERSION_ID=11\n"),
             images / "rawold.raw")
    ostree = make_extension(tmp_path / "src/rawos", "rawos", release=None)
    (ostree / "etc").mkdir()
    (ostree / "etc/os-release").write_text(DEBIAN_12)
    erofs(ostree, images / "rawos.raw")
    erofs(make_extension(tmp_path / "src/rawgood", "rawgood"), images / "rawgood.raw")


EXPECTED = {name for name, (_release, compatible) in CORPUS.items() if compatible} | {"relaxed", "rawgood"}


@pytest.mark.parametrize("host, expected", [
    (DEBIAN_12, EXPECTED),
    # A rolling release without VERSION_ID (Arch): the ID decides alone.
    ("ID=debian\n", EXPECTED | {"wrongver", "nover", "levelonly", "rawold"}),
    ("ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\n", EXPECTED | {"levelonly"}),
    ("ID=fedora\nVERSION_ID=12\n", {"anyid", "wrongid"}),
], ids=["debian12", "rolling", "sysext-level", "fedora"])
def test_incompatible_corpus_verdicts_agree_with_systemd(sxns: MountNamespace, root: pathlib.Path,
                                                         tmp_path: pathlib.Path, host: str, expected: set) -> None:
    (root / "usr/lib/os-release").write_text(host)
    build_corpus(root, tmp_path)
    predicted = run(sxns, {"root": str(root)}, check=True)
    assert not predicted.get("failed"), predicted.get("msg")
    judged = verdicts(predicted)
    assert {name for name, (verdict, _reason) in judged.items() if verdict == "compatible"} == expected
    incompatible = {name: reason for name, (verdict, reason) in judged.items() if verdict != "compatible"}
    assert all(reason for reason in incompatible.values()), "every skipped image has a reason"
    if host == DEBIAN_12:
        assert len(incompatible) >= 10

    # The real thing: what systemd-sysext 252 merges, and why it says it skipped the rest.
    merged = sysext(sxns, root, "merge", debug=True)
    assert merged.returncode == 0, merged.stderr
    assert set(merged_now(sxns, root)) == expected
    said = ignored_by_systemd(merged.stderr)
    for name, reason in incompatible.items():
        assert name in said, "systemd-sysext did not mention %s: %s" % (name, merged.stderr)
        ours = reason.split(" (")[0]
        assert ours in said[name] or ours.replace("OS version", "OS") in said[name], (name, reason, said[name])
    assert sysext(sxns, root, "unmerge").returncode == 0

    applied = run(sxns, {"root": str(root)})
    assert applied["changed"] and not applied.get("failed"), applied.get("msg")
    assert set(merged_now(sxns, root)) == expected


def test_masking_symlinks_and_priority(sxns: MountNamespace, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    make_extension(root / "etc/extensions/tool", "tool", files={"usr/share/tool/from": "etc\n"})
    make_extension(root / "run/extensions/tool", "tool", files={"usr/share/tool/from": "run\n"})
    make_extension(root / "var/lib/extensions/tool", "tool", release="ID=fedora\n")
    # An empty directory high up masks a good image further down (systemd's way to disable one).
    (root / "etc/extensions/off").mkdir()
    make_extension(root / "var/lib/extensions/off", "off")
    make_extension(tmp_path / "elsewhere", "linked")
    os.symlink(tmp_path / "elsewhere", root / "etc/extensions/linked")
    (root / "var/lib/extensions/README").write_text("not an image\n")

    result = run(sxns, {"root": str(root), "required": ["tool"]})
    assert not result.get("failed"), result.get("msg")
    listed = [(item["search_dir"], item["name"], item["verdict"]) for item in result["extensions"]]
    assert listed == [
        ("/etc/extensions", "linked", "ignored"),
        ("/etc/extensions", "off", "incompatible"),
        ("/etc/extensions", "tool", "compatible"),
        ("/run/extensions", "tool", "masked"),
        ("/var/lib/extensions", "off", "masked"),
        ("/var/lib/extensions", "tool", "masked"),
    ]
    reasons = {(item["search_dir"], item["name"]): item["reason"] for item in result["extensions"]}
    assert reasons[("/run/extensions", "tool")] == "masked by %s" % (root / "etc/extensions/tool")
    assert "symlink" in reasons[("/etc/extensions", "linked")]
    assert any("linked" in warning and "symlink" in warning for warning in warning_texts(result))
    assert (in_ns(sxns, root / "usr/share/tool/from")).read_text() == "etc\n"
    assert merged_now(sxns, root) == ["tool"]
    # systemd-sysext agrees: with --root the symlink is not an image, and the masked names are not listed twice.
    listed_by_systemd = sysext(sxns, root, "list", "--json=short").stdout
    assert '"linked"' not in listed_by_systemd and listed_by_systemd.count('"tool"') == 1


BLOCKING: dict[str, tuple[t.Callable[[pathlib.Path, pathlib.Path], pathlib.Path], str, bool]] = {
    # name: (make the image, what the message says, does systemd-sysext itself fail on it)
    "corrupt-raw": (lambda images, src: _write(images / "junk.raw", os.urandom(1 << 20)), "blkid finds no filesystem",
                    True),
    "broken-squashfs": (lambda images, src: _break_superblock(squashfs(make_extension(src / "t", "broken"),
                                                                       images / "broken.raw")), "mount failed", True),
    "raw-without-release": (lambda images, src: squashfs(make_extension(src / "n", "norel", release=None),
                                                         images / "norel.raw"), "No medium found", True),
    "renamed-raw": (lambda images, src: squashfs(make_extension(src / "r", "before"), images / "after.raw"),
                    "No medium found", True),
    "raw-with-os-release": (lambda images, src: erofs(make_extension(src / "o", "osrel", files={
        "usr/lib/os-release": DEBIAN_12}), images / "osrel.raw"), "ships usr/lib/os-release", True),
    "dir-with-os-release": (lambda images, src: make_extension(images / "osdir", "osdir", files={
        "usr/lib/os-release": DEBIAN_12}), "ships usr/lib/os-release", True),
    "opt-is-a-file": (lambda images, src: make_extension(images / "optfile", "optfile", files={"opt": "a file\n"}),
                      "its /opt is not a directory", True),
    "colon-name": (lambda images, src: make_extension(images / "a:b", "a:b"), "does not match", True),
    "ambiguous": (lambda images, src: squashfs(make_extension(images / "twin", "twin"), images / "twin.raw"),
                  "ambiguous", False),
    "hidden-name": (lambda images, src: make_extension(images / ".hidden", ".hidden"), "does not match", False),
}


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


def _break_superblock(path: pathlib.Path) -> pathlib.Path:
    # inode_table_start (offset 64) far beyond the end: blkid still says squashfs, the kernel refuses it.
    with open(path, "r+b") as handle:
        handle.seek(64)
        handle.write(struct.pack("<Q", 1 << 30))
    return path


@pytest.mark.parametrize("case", sorted(BLOCKING))
def test_images_that_break_the_whole_merge_are_refused_by_name(sxns: MountNamespace, root: pathlib.Path,
                                                               tmp_path: pathlib.Path, case: str) -> None:
    make, message, systemd_fails = BLOCKING[case]
    make_extension(root / "var/lib/extensions/good", "good")
    image = make(root / "var/lib/extensions", tmp_path / "src")
    mounts, loops, tree = sxns.mountinfo(), loop_devices(tmp_path), manifest(root)

    result = run(sxns, {"root": str(root)})
    assert result.get("failed") and str(image) in result["msg"], result.get("msg")
    assert message in result["msg"] or case == "raw-without-release" and "extension-release" in result["msg"]
    assert sxns.mountinfo() == mounts and loop_devices(tmp_path) == loops and manifest(root) == tree
    assert run(sxns, {"root": str(root)}, check=True).get("failed"), "check mode predicts the same failure"

    # And systemd-sysext really does fail the whole merge on it (with rc 0 in most cases).
    direct = sysext(sxns, root, "merge")
    if systemd_fails:
        assert merged_now(sxns, root) == [], "systemd merged despite %s: %s" % (case, direct.stderr)
    sysext(sxns, root, "unmerge")


def test_hierarchy_that_cannot_be_created_is_refused_instead_of_a_partial_merge(
        sxns: MountNamespace, root: pathlib.Path) -> None:
    (root / "opt").rmdir()
    make_extension(root / "var/lib/extensions/both", "both", files={"usr/share/both/x": "x", "opt/both/y": "y"})
    sxns.sh("mount --bind {0} {0} && mount -o remount,bind,ro {0}".format(root))
    mounts = sxns.mountinfo()
    result = run(sxns, {"root": str(root)})
    assert result.get("failed") and result["msg"].startswith(
        "hierarchies: %s/opt does not exist and cannot be created" % root), result.get("msg")
    assert sxns.mountinfo() == mounts
    # What the module saved us from: systemd-sysext merges /usr, fails on /opt, and exits 0.
    direct = sysext(sxns, root, "merge")
    assert direct.returncode == 0 and "Failed to create hierarchy mount point" in direct.stderr
    assert merged_now(sxns, root) == ["both"] and not (in_ns(sxns, root / "opt")).exists()


def test_success_that_is_not_visible_is_a_failure(sxns: MountNamespace, root: pathlib.Path,
                                                  tmp_path: pathlib.Path) -> None:
    # A systemd-sysext that says what 252 says in a private namespace, exits 0, and mounts nothing.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemd-sysext").write_text(
        "#!/bin/sh\nfor arg; do case $arg in\n  --version) exec /usr/bin/systemd-sysext --version;;\n"
        "  merge|refresh) echo \"Merged extensions into '$PWD/usr'.\"; exit 0;;\nesac; done\n")
    (fake / "systemd-sysext").chmod(0o755)
    make_extension(root / "var/lib/extensions/tool", "tool")
    result = run(sxns, {"root": str(root)}, env={"PATH": "%s:%s" % (fake, os.environ["PATH"])})
    assert result.get("failed") and result["msg"] == (
        "systemd-sysext exited 0, but the result is not what was planned: expected /usr: tool; /opt: not merged; "
        "the mount table and .systemd-sysext markers show /usr: not merged; /opt: not merged")
    assert [action["action"] for action in result["actions"]] == ["merge"], "what was done is reported"


def test_required_images_must_merge(sxns: MountNamespace, root: pathlib.Path) -> None:
    make_extension(root / "var/lib/extensions/old", "old", release="ID=debian\nVERSION_ID=11\n")
    make_extension(root / "var/lib/extensions/fine", "fine")
    mounts = sxns.mountinfo()
    result = run(sxns, {"root": str(root), "required": ["fine", "old", "absent"]})
    assert result.get("failed")
    assert "old (%s): is for OS version '11'" % (root / "var/lib/extensions/old") in result["msg"]
    assert "absent: not found in any search directory" in result["msg"] and "fine" not in result["msg"].split(":")[1]
    assert sxns.mountinfo() == mounts


def test_changed_set_refreshes_and_empty_set_unmerges(sxns: MountNamespace, root: pathlib.Path) -> None:
    images = root / "var/lib/extensions"
    make_extension(images / "one", "one")
    assert [a["action"] for a in run(sxns, {"root": str(root)})["actions"]] == ["merge"]
    first = top_mount(sxns, root / "usr")
    make_extension(images / "two", "two")
    result = run(sxns, {"root": str(root)}, diff=True)
    assert [a["action"] for a in result["actions"]] == ["refresh"] and merged_now(sxns, root) == ["one", "two"]
    assert list(result["diff"]["after"]["files"]) == ["two"], "only the newly merged image is detailed"
    assert top_mount(sxns, root / "usr") != first
    refreshed = run(sxns, {"root": str(root), "state": "refreshed"})
    assert refreshed["changed"] and [a["action"] for a in refreshed["actions"]] == ["refresh"]
    (images / "one/usr/lib/extension-release.d/extension-release.one").write_text("ID=debian\nVERSION_ID=13\n")
    (images / "two/usr/lib/extension-release.d/extension-release.two").unlink()
    result = run(sxns, {"root": str(root)})
    assert [a["action"] for a in result["actions"]] == ["unmerge"] and merged_now(sxns, root) == []
    assert run(sxns, {"root": str(root)})["changed"] is False


def test_hierarchies_restrict_the_merge(sxns: MountNamespace, root: pathlib.Path) -> None:
    make_extension(root / "var/lib/extensions/both", "both", files={"usr/share/both/x": "x", "opt/both/y": "y"})
    result = run(sxns, {"root": str(root), "hierarchies": ["/usr"]})
    assert [state["hierarchy"] for state in result["hierarchies"]] == ["/usr"]
    assert merged_now(sxns, root) == ["both"] and merged_now(sxns, root, "opt") == []
    assert not (in_ns(sxns, root / "opt/both")).exists()


def test_private_mount_needs_make_shared(root: pathlib.Path) -> None:
    # / stays private here: a merge would print "Merged extensions", exit 0 and leave nothing visible.
    namespace = MountNamespace("mount -t tmpfs -o mode=0755 run /run")
    try:
        make_extension(root / "var/lib/extensions/tool", "tool")
        mounts = namespace.mountinfo()
        refused = run(namespace, {"root": str(root)})
        assert refused.get("failed") and refused["msg"].startswith("make_shared: "), refused.get("msg")
        assert "is not shared" in refused["msg"] and namespace.mountinfo() == mounts
        result = run(namespace, {"root": str(root), "make_shared": True})
        assert not result.get("failed"), result.get("msg")
        assert [a["action"] for a in result["actions"]] == ["make_shared", "merge"]
        assert merged_now(namespace, root) == ["tool"]
        assert run(namespace, {"root": str(root), "make_shared": True})["changed"] is False
    finally:
        namespace.close()


def test_kill_at_every_step_then_rerun_converges(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    make_extension(root / "var/lib/extensions/tool", "tool")
    args = {"root": str(root), "make_shared": True}
    trace = tmp_path / "trace"
    fresh = MountNamespace("mount -t tmpfs -o mode=0755 run /run")
    try:
        assert not run(fresh, args, env={TRACE_ENV: str(trace)}).get("failed")
    finally:
        fresh.close()
    steps = [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]
    assert steps == ["sysext_merge.root_bound", "sysext_merge.make_shared", "sysext_merge.merge"]
    for number, step in enumerate(steps, start=1):
        namespace = MountNamespace("mount -t tmpfs -o mode=0755 run /run")
        try:
            rc, result, _stderr = direct_module(namespace, "sysext_merge", args, env={KILL_AT_ENV: str(number)})
            assert rc == -9 and result is None, "killed at %s" % step
            rerun = run(namespace, args)
            assert not rerun.get("failed"), (step, rerun.get("msg"))
            assert merged_now(namespace, root) == ["tool"], step
            assert run(namespace, args)["changed"] is False
        finally:
            namespace.close()


@pytest.mark.parametrize("option, value, version", [("image_policy", "root=verity+signed+absent", 254),
                                                    ("mutable", "yes", 256)])
def test_options_of_newer_systemd_fail_clearly(sxns: MountNamespace, root: pathlib.Path, option: str, value: str,
                                               version: int) -> None:
    make_extension(root / "var/lib/extensions/tool", "tool")
    mounts = sxns.mountinfo()
    result = ansible_module(sxns, "sysext_merge", {"root": str(root), option: value})
    assert result.get("failed") and result["msg"] == (
        "%s: needs systemd %d or newer; systemd-sysext here is version 252" % (option, version))
    assert sxns.mountinfo() == mounts


@pytest.mark.parametrize("args, message", [
    ({"root": "relative/root"}, "root: must be an absolute path"),
    ({"root": "/nonexistent/immutable-root"}, "root: /nonexistent/immutable-root does not exist"),
    ({"hierarchies": ["/"]}, "hierarchies: / is refused"),
    ({"hierarchies": ["/usr", "/proc"]}, "hierarchies: /proc is refused: a kernel file system"),
    ({"hierarchies": ["/sys/fs"]}, "hierarchies: /sys/fs is refused"),
    ({"hierarchies": ["usr"]}, "hierarchies: 'usr' must be an absolute path"),
    ({"hierarchies": ["/usr", "/usr"]}, "hierarchies: /usr is listed twice"),
    ({"required": ["a:b"]}, "required: name 'a:b' does not match"),
    ({"state": "present"}, "value of state must be one of"),
])
def test_bad_input_is_refused_and_nothing_changes(sxns: MountNamespace, root: pathlib.Path, args: dict,
                                                  message: str) -> None:
    make_extension(root / "var/lib/extensions/tool", "tool")
    mounts, tree = sxns.mountinfo(), manifest(root)
    result = run(sxns, dict({"root": str(root)}, **args))
    assert result.get("failed") and message in result["msg"], result.get("msg")
    assert sxns.mountinfo() == mounts and manifest(root) == tree


def test_root_given_through_a_symlink_and_without_os_release(sxns: MountNamespace, root: pathlib.Path,
                                                             tmp_path: pathlib.Path) -> None:
    os.symlink(root, tmp_path / "link")
    result = run(sxns, {"root": str(tmp_path / "link")})
    assert result.get("failed") and result["msg"].startswith("root: ") and "through a symlink" in result["msg"]
    (root / "usr/lib/os-release").unlink()
    make_extension(root / "var/lib/extensions/tool", "tool")
    result = run(sxns, {"root": str(root)})
    assert result.get("failed") and "has no etc/os-release or usr/lib/os-release" in result["msg"]
