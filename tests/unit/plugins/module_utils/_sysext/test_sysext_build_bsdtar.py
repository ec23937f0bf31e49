# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build's reading of bsdtar: member patterns, hard link targets, refusals on stderr, and their wording.

The listings and stderr below are bsdtar 3.6.2 (libarchive 3.6.2) output under LANG=C, as the runner sets it,
for tarballs written with Python's tarfile; a byte bsdtar cannot print is listed as an escape there."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext.build_plan import (
    bsdtar_refusals,
    hardlink_targets,
    member_pattern,
    refusal_problem,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import SysextError


@pytest.mark.parametrize("listed, expected", [
    ("usr/bin/tool", "usr/bin/tool"),
    ("usr/", "usr/"),
    ("./usr/lib/tool.so", "./usr/lib/tool.so"),
    ("/usr/abs hl", "/usr/abs hl"),
    ("usr/bin/my tool", "usr/bin/my tool"),
    ("usr/bin/a: b", "usr/bin/a: b"),
    ("usr/bin/x -> y", "usr/bin/x -> y"),
    ("usr/bin/p link to q", "usr/bin/p link to q"),
    ("usr/lib/x]", "usr/lib/x]"),
    ("usr/bin/star*?[x]", "usr/bin/star\\*\\?\\[x]"),
    # listed as two backslashes: one literal backslash, which a pattern spells as two again
    ("usr/bin/back\\\\slash", "usr/bin/back\\\\slash"),
    ("usr/bin/\\\\*", "usr/bin/\\\\\\*"),
    # an escaped backslash followed by digits is not an octal escape
    ("usr/bin/x\\\\303", "usr/bin/x\\\\303"),
    ("usr/bin/tab\\there", "usr/bin/tab\there"),
    ("usr/bin/new\\nline", "usr/bin/new\nline"),
    ("usr/bin/c\\a\\b\\f\\r\\v", "usr/bin/c\a\b\f\r\v"),
    ("usr/bin/del\\177", "usr/bin/del\x7f"),
    # UTF-8 "café" under LANG=C, and the same name listed in a UTF-8 locale
    ("usr/bin/caf\\303\\251", "usr/bin/caf\u00e9"),
    ("usr/bin/caf\u00e9", "usr/bin/caf\u00e9"),
    # Latin-1 "été": not UTF-8, so surrogate escapes that the command line turns back into bytes 0xe9
    ("usr/share/\\351t\\351", "usr/share/\udce9t\udce9"),
    ("usr/bin/caf\\303\\251*", "usr/bin/caf\u00e9\\*"),
    ("", ""),
])
def test_member_pattern(listed: str, expected: str) -> None:
    assert member_pattern(listed) == expected


@pytest.mark.parametrize("names, verbose, expected", [
    ([], [], {}),
    (["usr/", "usr/bin/tool"], [
        "drwxr-xr-x  0 0      0           0 Nov 14  2023 usr/",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/tool",
    ], {}),
    # one archive holding most of the awkward names
    ([
        "usr/bin/tool", "usr/bin/my tool", "usr/bin/a: b", "usr/bin/x -> y", "usr/bin/sym", "usr/bin/hl",
        "usr/bin/hl2", "usr/bin/p link to q", "usr/bin/hl3", "usr/bin/r link to s", "usr/bin/caf\\303\\251",
        "usr/bin/hlu", "usr/bin/back\\\\slash", "usr/bin/tab\\there", "usr/bin/hlbs",
    ], [
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/tool",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/my tool",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/a: b",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/x -> y",
        "lrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/sym -> tool",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl link to usr/bin/tool",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl2 link to usr/bin/my tool",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/p link to q",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl3 link to usr/bin/p link to q",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/r link to s link to usr/bin/tool",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/caf\\303\\251",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hlu link to usr/bin/caf\\303\\251",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/back\\\\slash",
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/tab\\there",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hlbs link to usr/bin/back\\\\slash",
    ], {
        "usr/bin/hl": "usr/bin/tool",
        "usr/bin/hl2": "usr/bin/my tool",
        "usr/bin/hl3": "usr/bin/p link to q",
        "usr/bin/r link to s": "usr/bin/tool",
        "usr/bin/hlu": "usr/bin/caf\\303\\251",
        "usr/bin/hlbs": "usr/bin/back\\\\slash",
    }),
    # a symlink whose target says " link to ", a hard link to a name with "->", './' names, other owners
    (["usr/bin/sym", "usr/bin/x -> y", "usr/bin/hx", "usr/share/\\351t\\351", "./usr/lib/tool.so.1",
      "./usr/lib/tool.so"], [
        "lrwxrwxrwx  0 1000   1000        0 Nov 14  2023 usr/bin/sym -> x link to y",
        "-rwxr-xr-x  0 1000   1000        0 Nov 14  2023 usr/bin/x -> y",
        "hrwxrwxrwx  0 1000   1000        0 Nov 14  2023 usr/bin/hx link to usr/bin/x -> y",
        "-rwxr-xr-x  0 1000   1000        0 Nov 14  2023 usr/share/\\351t\\351",
        "-rwxr-xr-x  0 1000   1000        0 Nov 14  2023 ./usr/lib/tool.so.1",
        "hrwxrwxrwx  0 1000   1000        0 Nov 14  2023 ./usr/lib/tool.so link to ./usr/lib/tool.so.1",
    ], {"usr/bin/hx": "usr/bin/x -> y", "./usr/lib/tool.so": "./usr/lib/tool.so.1"}),
    # targets that repeat " NAME link to ", whether or not the tail after it is a listed member; names that
    # also occur among the fields before them
    (["c", "a", "d link to e", "e", "f", "2023", "usr/bin/ tool", "0"], [
        "-rw-r--r--  0 0      0           0 Nov 14  2023 c",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 a link to b a link to c",
        "-rw-r--r--  0 0      0           0 Nov 14  2023 d link to e",
        "-rw-r--r--  0 0      0           0 Nov 14  2023 e",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 f link to d link to e",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 2023 link to c",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/ tool link to c",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 0 link to 0 link to c",
    ], {"a": "b a link to c", "f": "d link to e", "2023": "c", "usr/bin/ tool": "c", "0": "0 link to c"}),
    # bsdtar prints absolute names as stored when listing
    (["/usr/abs hl"], ["hrw-r--r--  0 0      0           0 Nov 14  2023 /usr/abs hl link to /usr/missing"],
     {"/usr/abs hl": "/usr/missing"}),
    (["usr/bin/caf\u00e9", "usr/bin/hlu"], [
        "-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/caf\u00e9",
        "hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hlu link to usr/bin/caf\u00e9",
    ], {"usr/bin/hlu": "usr/bin/caf\u00e9"}),
])
def test_hardlink_targets(names: list[str], verbose: list[str], expected: dict[str, str]) -> None:
    assert hardlink_targets(names, verbose) == expected


@pytest.mark.parametrize("names, verbose, message", [
    (["usr/bin/tool", "usr/bin/hl"], ["-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/tool"],
     "sources: bsdtar listed 2 members, but 1 in its verbose listing"),
    ([], ["-rw-r--r--  0 0      0           1 Nov 14  2023 usr/bin/tool"],
     "sources: bsdtar listed 0 members, but 1 in its verbose listing"),
    # listings that went out of step
    (["usr/bin/hl"], ["hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl2 link to usr/bin/tool"],
     "sources: cannot read the hard link target of 'usr/bin/hl' from bsdtar's listing "
     "'hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl2 link to usr/bin/tool'"),
    (["usr/bin/hl"], ["hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl"],
     "sources: cannot read the hard link target of 'usr/bin/hl' from bsdtar's listing "
     "'hrw-r--r--  0 0      0           0 Nov 14  2023 usr/bin/hl'"),
])
def test_hardlink_targets_unreadable(names: list[str], verbose: list[str], message: str) -> None:
    with pytest.raises(SysextError) as raised:
        hardlink_targets(names, verbose)
    assert str(raised.value) == message


# `bsdtar -xpf bad.tar -C out --numeric-owner` of an archive with a symlinked usr/lib, a '..' member, hard
# links to missing members and an absolute member
BAD_TAR_STDERR = (
    "usr/lib/evil: x: Cannot extract through symlink usr/lib/evil: x: Success\n"
    "usr/../escape: Path contains '..': Unknown error -1\n"
    "usr/bin/hl: y: Hard-link target 'usr/bin/missing' does not exist.: No such file or directory\n"
    "bsdtar: Removing leading '/' from member names\n"
    "usr/bin/caf\\303\\251/x: Hard-link target 'nope' does not exist.: No such file or directory\n"
    "bsdtar: Error exit delayed from previous errors.\n"
)
BAD_TAR_MEMBERS = ["usr/", "usr/lib", "usr/lib/evil: x", "usr/../escape", "usr/bin/hl: y", "/usr/abs",
                   "usr/bin/caf\\303\\251/x"]


@pytest.mark.parametrize("stderr, members, expected", [
    ("", [], []),
    ("", ["usr/bin/tool"], []),
    ("bsdtar: usr/bin/nothere: Not found in archive\nbsdtar: Error exit delayed from previous errors.\n",
     ["usr/bin/nothere"], []),
    ("bsdtar: Removing leading '/' from member names\n", ["/usr/abs"], []),
    # lines without "NAME: " are not refusals
    ("Error exit delayed\n\n", [], []),
    (BAD_TAR_STDERR, BAD_TAR_MEMBERS, [
        ("usr/lib/evil: x", "Cannot extract through symlink usr/lib/evil: x"),
        ("usr/../escape", "Path contains '..'"),
        ("usr/bin/hl: y", "Hard-link target 'usr/bin/missing' does not exist.: No such file or directory"),
        ("usr/bin/caf\\303\\251/x", "Hard-link target 'nope' does not exist.: No such file or directory"),
    ]),
    # without the members, a name is read up to its first ": "
    (BAD_TAR_STDERR, [], [
        ("usr/lib/evil", "x: Cannot extract through symlink usr/lib/evil: x"),
        ("usr/../escape", "Path contains '..'"),
        ("usr/bin/hl", "y: Hard-link target 'usr/bin/missing' does not exist.: No such file or directory"),
        ("usr/bin/caf\\303\\251/x", "Hard-link target 'nope' does not exist.: No such file or directory"),
    ]),
    # bsdtar names an absolute member without its leading '/'
    ("bsdtar: Removing leading '/' from member names\n"
     "usr/abs hl: Hard-link target 'usr/missing' does not exist.: No such file or directory\n"
     "usr/tab\\there: Hard-link target 'usr/gone' does not exist.: No such file or directory\n"
     "bsdtar: Error exit delayed from previous errors.\n",
     ["/usr/abs hl", "usr/tab\\there"], [
         ("usr/abs hl", "Hard-link target 'usr/missing' does not exist.: No such file or directory"),
         ("usr/tab\\there", "Hard-link target 'usr/gone' does not exist.: No such file or directory"),
     ]),
    # the longest member that fits wins over a shorter one that is its prefix
    ("usr/bin/a: b: Cannot extract through symlink usr/bin/a: b: Success\n"
     "usr/bin/a: Path contains '..': Unknown error -1\n",
     ["usr/bin/a", "usr/bin/a: b"], [
         ("usr/bin/a: b", "Cannot extract through symlink usr/bin/a: b"),
         ("usr/bin/a", "Path contains '..'"),
     ]),
    # only a trailing strerror of "no errno" is dropped, not the same words inside a name
    ("usr/a: Success: x: Cannot extract through symlink usr/a: Success: x: Success\n",
     ["usr/a: Success: x"], [("usr/a: Success: x", "Cannot extract through symlink usr/a: Success: x")]),
    ("usr/x: Path contains '..': Unknown error -22\n", ["usr/x"], [("usr/x", "Path contains '..'")]),
    ("usr/x: Can't create 'usr/x': Read-only file system\n", ["usr/x"],
     [("usr/x", "Can't create 'usr/x': Read-only file system")]),
    # a member bsdtar names that was not asked about is still reported
    ("usr/y -> z: Cannot extract through symlink usr/y -> z: Success\n", ["usr/x"],
     [("usr/y -> z", "Cannot extract through symlink usr/y -> z")]),
    ("usr/bin/caf\u00e9: Path contains '..': Unknown error -1\r\n", ["usr/bin/caf\u00e9"],
     [("usr/bin/caf\u00e9", "Path contains '..'")]),
])
def test_bsdtar_refusals(stderr: str, members: list[str], expected: list[tuple[str, str]]) -> None:
    assert bsdtar_refusals(stderr, members) == expected


def test_bsdtar_refusals_reads_members_once() -> None:
    assert bsdtar_refusals("usr/a b: Path contains '..': Unknown error -1\n", iter(["usr/a b"])) == [
        ("usr/a b", "Path contains '..'")]


SOURCE = "/srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst"


def _refusals(count: int) -> list[tuple[str, str]]:
    return [("usr/bin/m%d" % number, "Path contains '..'") for number in range(1, count + 1)]


@pytest.mark.parametrize("refusals, limit, expected", [
    ([("usr/../escape", "Path contains '..'")], 10,
     "bsdtar refused to unpack a member of /srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst: usr/../escape (Path contains '..')"),
    ([("usr/lib/evil: x", "Cannot extract through symlink usr/lib/evil: x"),
      ("usr/bin/caf\\303\\251/x", "Hard-link target 'nope' does not exist.: No such file or directory")], 10,
     "bsdtar refused to unpack 2 members of /srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst: "
     "usr/lib/evil: x (Cannot extract through symlink usr/lib/evil: x); "
     "usr/bin/caf\\303\\251/x (Hard-link target 'nope' does not exist.: No such file or directory)"),
    (_refusals(10), 10,
     "bsdtar refused to unpack 10 members of /srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst: "
     "usr/bin/m1 (Path contains '..'); usr/bin/m2 (Path contains '..'); usr/bin/m3 (Path contains '..'); "
     "usr/bin/m4 (Path contains '..'); usr/bin/m5 (Path contains '..'); usr/bin/m6 (Path contains '..'); "
     "usr/bin/m7 (Path contains '..'); usr/bin/m8 (Path contains '..'); usr/bin/m9 (Path contains '..'); "
     "usr/bin/m10 (Path contains '..')"),
    (_refusals(12), 10,
     "bsdtar refused to unpack 12 members of /srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst: "
     "usr/bin/m1 (Path contains '..'); usr/bin/m2 (Path contains '..'); usr/bin/m3 (Path contains '..'); "
     "usr/bin/m4 (Path contains '..'); usr/bin/m5 (Path contains '..'); usr/bin/m6 (Path contains '..'); "
     "usr/bin/m7 (Path contains '..'); usr/bin/m8 (Path contains '..'); usr/bin/m9 (Path contains '..'); "
     "usr/bin/m10 (Path contains '..'); and 2 more"),
    (_refusals(3), 2,
     "bsdtar refused to unpack 3 members of /srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst: "
     "usr/bin/m1 (Path contains '..'); usr/bin/m2 (Path contains '..'); and 1 more"),
    (_refusals(2), 2,
     "bsdtar refused to unpack 2 members of /srv/pkgs/tool-1.0-1-x86_64.pkg.tar.zst: "
     "usr/bin/m1 (Path contains '..'); usr/bin/m2 (Path contains '..')"),
])
def test_refusal_problem(refusals: list[tuple[str, str]], limit: int, expected: str) -> None:
    assert refusal_problem(SOURCE, refusals, limit) == expected


def test_refusal_problem_default_limit_is_ten() -> None:
    assert refusal_problem(SOURCE, _refusals(11)).endswith("usr/bin/m10 (Path contains '..'); and 1 more")
