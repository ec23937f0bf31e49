# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Discovery, masking and the verdict per image, as truth tables."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext.images import (
    ImageContent, SYMLINK_REASON, SearchEntry, classify, contributes, discover, judge, merge_candidates, to_inspect,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import HostRelease

HOST = HostRelease("debian", "12")
GOOD = ImageContent(release={"ID": "debian", "VERSION_ID": "12"}, release_path="usr/lib/extension-release.d/x",
                    hierarchies=("/usr",))


def entry(search_dir: str, file_name: str, kind: str = "directory") -> SearchEntry:
    return SearchEntry(search_dir, file_name, "/r%s/%s" % (search_dir, file_name), kind)  # type: ignore[arg-type]


def test_entry_names() -> None:
    assert entry("/etc/extensions", "foo.raw", "raw").name == "foo"
    assert entry("/etc/extensions", "foo.raw", "directory").name == "foo.raw", "a directory keeps its .raw"
    assert entry("/etc/extensions", "foo.raw", "symlink").name == "foo"
    assert entry("/etc/extensions", "foo", "block").image_type == "block"


def test_masking_by_priority_and_ambiguity_within_one_directory() -> None:
    entries = [
        entry("/etc/extensions", "tool"),
        entry("/run/extensions", "tool.raw", "raw"),
        entry("/var/lib/extensions", "twin"),
        entry("/var/lib/extensions", "twin.raw", "raw"),
        entry("/usr/lib/extensions", "twin"),
        entry("/usr/lib/extensions", "solo"),
    ]
    decided, judged = discover(entries)
    by_path = {verdict.entry.path: (verdict.verdict, verdict.reason) for verdict in decided}
    assert by_path["/r/run/extensions/tool.raw"] == ("masked", "masked by /r/etc/extensions/tool")
    assert by_path["/r/var/lib/extensions/twin"][0] == "invalid"
    assert "/r/var/lib/extensions/twin.raw has the same name" in by_path["/r/var/lib/extensions/twin"][1]
    assert by_path["/r/var/lib/extensions/twin.raw"][0] == "invalid"
    assert by_path["/r/usr/lib/extensions/twin"] == ("masked", "masked by /r/var/lib/extensions/twin")
    assert [item.file_name for item in judged] == ["tool", "solo"]


def test_what_systemd_does_not_see() -> None:
    entries = [
        entry("/etc/extensions", "linked", "symlink"),
        entry("/etc/extensions", "README", "other"),
        entry("/etc/extensions", ".#sysext-build.tool.x"),
        entry("/etc/extensions", "bad\x01name"),
        entry("/var/lib/extensions", "linked"),
    ]
    decided, judged = discover(entries)
    assert [(verdict.entry.file_name, verdict.verdict) for verdict in decided] == [
        ("linked", "ignored"), ("bad\x01name", "ignored")]
    assert decided[0].reason == SYMLINK_REASON
    assert [item.path for item in judged] == ["/r/var/lib/extensions/linked"], "a symlink masks nothing"


RAW = entry("/var/lib/extensions", "img.raw", "raw")
DIRECTORY = entry("/var/lib/extensions", "img")


@pytest.mark.parametrize("image, content, force, verdict, reason", [
    (DIRECTORY, GOOD, False, "compatible", None),
    (DIRECTORY, ImageContent(release=GOOD.release, not_directories=("/opt",)), True, "invalid",
     "its /opt is not a directory"),
    (entry("/var/lib/extensions", "a:b"), GOOD, False, "invalid", "does not match"),
    (entry("/var/lib/extensions", "dev", "block"), GOOD, False, "invalid", "block devices"),
    (RAW, ImageContent(error="blkid finds no filesystem in it"), False, "invalid", "cannot be read (blkid"),
    (RAW, ImageContent(error="mount failed"), True, "invalid", "aborts the whole merge"),
    (RAW, ImageContent(release_problem="no usr/lib/x"), False, "invalid", "No medium found"),
    (RAW, ImageContent(release_problem="no usr/lib/x"), True, "invalid", "No medium found"),
    (RAW, ImageContent(os_tree=True), False, "incompatible", "carries no extension-release data"),
    (RAW, ImageContent(os_tree=True), True, "compatible", None),
    (DIRECTORY, ImageContent(release=None, release_problem="no usr/lib/x"), False, "incompatible",
     "carries no extension-release data (no usr/lib/x)"),
    (DIRECTORY, ImageContent(release={}), False, "incompatible", "its extension-release file is empty"),
    (DIRECTORY, ImageContent(release=None), True, "compatible", None),
    (DIRECTORY, ImageContent(release=GOOD.release, os_release=True, os_tree=True), False, "invalid",
     "ships usr/lib/os-release"),
    (DIRECTORY, ImageContent(release=GOOD.release, os_release=True), True, "compatible", None),
    (DIRECTORY, ImageContent(release={"ID": "fedora"}), False, "incompatible", "is for OS 'fedora'"),
    (DIRECTORY, ImageContent(release={"ID": "fedora"}), True, "compatible", None),
])
def test_judge_truth_table(image: SearchEntry, content: ImageContent, force: bool, verdict: str,
                           reason: str | None) -> None:
    judged = judge(image, content, HOST, "x86-64", force=force)
    assert judged.verdict == verdict
    if reason is None:
        assert judged.reason is None and judged.compatible
    else:
        assert judged.reason is not None and reason in judged.reason
    assert judged.blocking is (verdict == "invalid")


def test_classify_keeps_search_order_and_sorts_candidates() -> None:
    entries = [entry("/etc/extensions", "c10"), entry("/var/lib/extensions", "c9.raw", "raw"),
               entry("/var/lib/extensions", "old"), entry("/var/lib/extensions", "c10"),
               entry("/var/lib/extensions", "README", "other"), entry("/var/lib/extensions", "missing")]
    contents = {item.path: GOOD for item in entries}
    contents["/r/var/lib/extensions/old"] = ImageContent(release={"ID": "debian", "VERSION_ID": "11"})
    del contents["/r/var/lib/extensions/missing"]
    verdicts = classify(entries, contents, HOST, "x86-64")
    assert [(v.entry.path, v.verdict) for v in verdicts] == [
        ("/r/etc/extensions/c10", "compatible"), ("/r/var/lib/extensions/c9.raw", "compatible"),
        ("/r/var/lib/extensions/old", "incompatible"), ("/r/var/lib/extensions/c10", "masked"),
        ("/r/var/lib/extensions/missing", "invalid")]
    assert merge_candidates(verdicts) == ["c9", "c10"]
    assert contributes(verdicts[0], "/usr") and not contributes(verdicts[0], "/opt")
    assert not contributes(verdicts[3], "/usr"), "masked images have no content"
    assert [item.name for item in to_inspect(entries)] == ["c10", "c9", "old", "missing"]
