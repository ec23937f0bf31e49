# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""systemd-sysext 252's rules, checked against systemd's own C code and its documented examples.

The two .jsonl fixtures were produced by compiling strverscmp_improved() and parse_env_file_internal()
from the systemd v252 sources (string-util-fundamental.c, env-file.c) unchanged, and feeding them
hand-written and random inputs: every line is (input, what systemd's C code returned).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    ARCHITECTURES,
    HostRelease,
    ReleaseSyntaxError,
    extension_release_problem,
    module_name_problem,
    parse_boolean,
    parse_env_pairs,
    strverscmp_improved,
    systemd_architecture,
    systemd_image_name_is_valid,
    version_sorted,
    version_ties,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def jsonl(name: str) -> list[list]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def test_strverscmp_agrees_with_systemd_c_code_on_every_captured_pair() -> None:
    cases = jsonl("strverscmp_252.jsonl")
    assert len(cases) > 4000
    wrong = [(a, b, expected, strverscmp_improved(a, b)) for a, b, expected in cases
             if strverscmp_improved(a, b) != expected]
    assert wrong == []


def test_version_sort_matches_the_documented_order() -> None:
    # The order listed in strverscmp_improved()'s comment, oldest first.
    documented = ["122.1", "123~rc1-1", "123", "123-a", "123-a.1", "123-1", "123-1.1", "123^post1", "123.a-1",
                  "123.1-1", "123a-1", "124-1"]
    assert version_sorted(reversed(documented)) == documented
    # What systemd-sysext 252 mounted when measured: lowerdir=…/c10/usr:…/c9/usr:…/b/usr:…/a/usr (top first).
    assert version_sorted(["c10", "a", "c9", "b"]) == ["a", "b", "c9", "c10"]


def test_version_ties_are_reported() -> None:
    assert version_ties(["foo", "foo_", "bar"]) == [("foo", "foo_")]
    assert version_ties(["a", "b"]) == []


def test_env_pairs_agree_with_systemd_c_code_on_every_captured_input() -> None:
    cases = jsonl("env_pairs_252.jsonl")
    assert len(cases) > 600
    wrong = [(text, expected, parse_env_pairs(text.encode())) for text, expected in cases
             if parse_env_pairs(text.encode()) != expected]
    assert wrong == []


@pytest.mark.parametrize("data, expected", [
    (b'ID=debian\nVERSION_ID="12"\n', {"ID": "debian", "VERSION_ID": "12"}),
    (b"ID=a\nID=b\n", {"ID": "b"}),
    (b"ID=arch\0VERSION_ID=1\n", {"ID": "arch"}),
    (b"NAME=\xc3\xa9t\xc3\xa9\n", {"NAME": "\u00e9t\u00e9"}),
])
def test_env_pairs_examples(data: bytes, expected: dict) -> None:
    assert parse_env_pairs(data) == expected


def test_invalid_utf8_fails_the_whole_file() -> None:
    with pytest.raises(ReleaseSyntaxError, match="invalid UTF-8"):
        parse_env_pairs(b"ID=debian\nNAME=\xff\n", "x")


HOST = HostRelease("debian", "12")


@pytest.mark.parametrize("release, host, problem", [
    ({}, HOST, "carries no extension-release data"),
    ({"ID": "debian", "VERSION_ID": "12"}, HOST, None),
    ({"ID": "debian", "VERSION_ID": "12", "SYSEXT_SCOPE": "portable"}, HOST, "not suitable for scope system"),
    ({"ID": "debian", "VERSION_ID": "12", "SYSEXT_SCOPE": "initrd system"}, HOST, None),
    ({"ID": "debian", "VERSION_ID": "12", "SYSEXT_SCOPE": ""}, HOST, "not suitable for scope system"),
    ({"ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": "arm64"}, HOST, "is for architecture 'arm64'"),
    ({"ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": "x86-64"}, HOST, None),
    ({"ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": "_any"}, HOST, None),
    ({"ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": ""}, HOST, None),
    ({"VERSION_ID": "12"}, HOST, "does not contain ID"),
    ({"ID": "", "VERSION_ID": "12"}, HOST, "does not contain ID"),
    ({"ID": "_any"}, HOST, None),
    ({"ID": "_any", "ARCHITECTURE": "s390x"}, HOST, "is for architecture 's390x'"),
    ({"ID": "fedora", "VERSION_ID": "12"}, HOST, "is for OS 'fedora', but deployed on top of 'debian'"),
    ({"ID": "arch"}, HostRelease("arch"), None),
    ({"ID": "arch", "VERSION_ID": "99"}, HostRelease("arch"), None),
    ({"ID": "debian"}, HOST, "does not contain VERSION_ID"),
    ({"ID": "debian", "VERSION_ID": "11"}, HOST, "is for OS version '11', but deployed on top of '12'"),
    ({"ID": "debian", "SYSEXT_LEVEL": "1.0", "VERSION_ID": "99"}, HostRelease("debian", "12", "1.0"), None),
    ({"ID": "debian", "SYSEXT_LEVEL": "2"}, HostRelease("debian", "12", "1.0"), "sysext API level '2'"),
    ({"ID": "debian", "VERSION_ID": "12"}, HostRelease("debian", "12", "1.0"), None),
    ({"ID": "debian", "VERSION_ID": "11"}, HostRelease("debian", "12", "1.0"), "OS version '11'"),
    # Host with SYSEXT_LEVEL only: an extension without a level passes without any version check (252).
    ({"ID": "debian"}, HostRelease("debian", "", "1.0"), None),
    ({"ID": "debian", "SYSEXT_LEVEL": "1.0"}, HostRelease("debian", "12"), "does not contain VERSION_ID"),
])
def test_extension_release_truth_table(release: dict, host: HostRelease, problem: str | None) -> None:
    found = extension_release_problem(release, host, "x86-64")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_initrd_scope() -> None:
    release = {"ID": "debian", "VERSION_ID": "12"}
    assert extension_release_problem(release, HOST, "x86-64", scope="initrd") is not None
    assert extension_release_problem(dict(release, SYSEXT_SCOPE="initrd"), HOST, "x86-64", scope="initrd") is None


def test_architecture_names() -> None:
    assert systemd_architecture("x86_64") == "x86-64"
    assert systemd_architecture("aarch64") == "arm64"
    assert systemd_architecture("ppc64le") == "ppc64-le"
    assert systemd_architecture("unknown") is None
    assert "x86-64" in ARCHITECTURES and "mips-le" in ARCHITECTURES


@pytest.mark.parametrize("name, systemd_valid, module_ok", [
    ("foo", True, True),
    ("v1.2_3-4", True, True),
    ("foo.raw", True, True),
    ("a:b", True, False),
    ("bad name", True, False),
    (".hidden", True, False),
    ("-dash", True, False),
    (".#tmp", False, False),
    ("", False, False),
    (".", False, False),
    ("..", False, False),
    ("a/b", False, False),
    ("tab\there", False, False),
    ("x" * 256, False, False),
    ("x" * 255, True, True),
    ("bad\udcffutf8", False, False),
])
def test_names(name: str, systemd_valid: bool, module_ok: bool) -> None:
    assert systemd_image_name_is_valid(name) is systemd_valid
    assert (module_name_problem(name) is None) is module_ok


@pytest.mark.parametrize("value, expected", [("0", False), ("false", False), ("OFF", False), ("yes", True),
                                             ("t", True), ("maybe", None), ("", None)])
def test_parse_boolean(value: str, expected: bool | None) -> None:
    assert parse_boolean(value) is expected


def test_host_release_from_os_release_pairs() -> None:
    assert HostRelease.from_pairs({"ID": "arch", "NAME": "Arch Linux"}) == HostRelease("arch")
    assert HostRelease.from_pairs({"ID": "debian", "VERSION_ID": "12", "SYSEXT_LEVEL": "1"}) == HostRelease(
        "debian", "12", "1")
