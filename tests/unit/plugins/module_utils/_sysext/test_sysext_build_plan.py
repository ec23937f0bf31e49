# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build's pure parts: what goes into an image, the release data, the digest, the plan."""

from __future__ import annotations

import dataclasses
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_model import (
    BuildObserved, BuildRequest, DIGEST_KEY, ExistingImage, Source,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_plan import (
    compose_release,
    default_release,
    digest,
    image_path,
    membership,
    normalize_member,
    plan_build,
    source_kind,
    validate_compression,
    validate_compression_level,
    validate_name,
    validate_release,
    with_digest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import SysextError

HIERARCHIES = ("/usr", "/opt")


@pytest.mark.parametrize("path, expected", [
    ("usr", "include"), ("usr/bin/tool", "include"), ("opt/x/y", "include"), ("etc/tool.conf", "drop"),
    (".PKGINFO", "drop"), (".MTREE", "drop"), ("usrx/y", "drop"), ("usr/lib/os-release", "forbidden"),
    ("usr/lib/extension-release.d/extension-release.other", "drop"), ("usr/lib/extension-release.d", "include"),
])
def test_membership(path: str, expected: str) -> None:
    assert membership(path, HIERARCHIES) == expected


def test_os_release_is_forbidden_only_where_it_would_be_merged() -> None:
    assert membership("usr/lib/os-release", ("/usr/lib",)) == "forbidden"
    assert membership("usr/lib/os-release", ("/opt",)) == "drop"
    assert membership("etc/os-release", HIERARCHIES) == "drop"


def test_membership_of_a_narrow_hierarchy() -> None:
    assert membership("usr", ("/usr/local/bin",)) == "parent"
    assert membership("usr/local", ("/usr/local/bin",)) == "parent"
    assert membership("usr/local/bin/x", ("/usr/local/bin",)) == "include"
    assert membership("usr/bin/x", ("/usr/local/bin",)) == "drop"


@pytest.mark.parametrize("member, expected", [("./usr/bin/x", "usr/bin/x"), ("usr/", "usr"), ("/opt//a/", "opt/a"),
                                              ("./", ""), (".PKGINFO", ".PKGINFO")])
def test_normalize_member(member: str, expected: str) -> None:
    assert normalize_member(member) == expected


def test_member_climbing_out_is_refused() -> None:
    with pytest.raises(SysextError, match="climbs out"):
        normalize_member("usr/../../etc/passwd")


@pytest.mark.parametrize("path, is_dir, is_file, kind", [
    ("/p/tool-1-1-x86_64.pkg.tar.zst", False, True, "package"), ("/p/a.pkg.tar.xz", False, True, "package"),
    ("/p/a.tar.gz", False, True, "package"), ("/p/a.tgz", False, True, "package"), ("/p/tree", True, False, "directory"),
])
def test_source_kind(path: str, is_dir: bool, is_file: bool, kind: str) -> None:
    assert source_kind(path, is_dir, is_file) == kind


@pytest.mark.parametrize("path, is_dir, is_file", [("/p/notes.txt", False, True), ("/p/fifo.tar", False, False),
                                                   ("/p/a.zip", False, True)])
def test_source_that_is_neither(path: str, is_dir: bool, is_file: bool) -> None:
    with pytest.raises(ParameterError, match="^sources: %s is neither a package or tarball" % path):
        source_kind(path, is_dir, is_file)


def test_names_and_compression() -> None:
    assert validate_name("tools-1.2") == "tools-1.2"
    with pytest.raises(ParameterError, match="^name: "):
        validate_name("../x")
    assert validate_compression("squashfs", None) == "zstd"
    assert validate_compression("erofs", None) == "lz4hc"
    assert validate_compression("directory", None) == "none"
    assert validate_compression("erofs", "none") == "none"
    with pytest.raises(ParameterError, match="^compression: 'zstd' is not available for format erofs"):
        validate_compression("erofs", "zstd")


@pytest.mark.parametrize("fields, message", [
    ({"VERSON_ID": "12"}, "unknown key 'VERSON_ID'"),
    ({DIGEST_KEY: "x"}, "is written by this module"),
    ({"ID": "Debian"}, "ID='Debian': use lower-case"),
    ({"ARCHITECTURE": "amd64"}, "ARCHITECTURE='amd64' is not a systemd architecture name"),
    ({"SYSEXT_SCOPE": "system everywhere"}, "SYSEXT_SCOPE='system everywhere'"),
    ({"SYSEXT_SCOPE": " "}, "SYSEXT_SCOPE=' '"),
    ({"NAME": "two\nlines"}, "NAME must be a single line"),
    ({"NAME": ["a"]}, "NAME must be a string"),
    ({"IMAGE_VERSION": True}, "IMAGE_VERSION must be a string"),
])
def test_bad_release_fields(fields: dict, message: str) -> None:
    with pytest.raises(ParameterError, match="^release: ") as raised:
        validate_release(fields)
    assert message in raised.value.msg


def test_release_fields() -> None:
    assert validate_release({"ID": "_any", "ARCHITECTURE": None, "IMAGE_VERSION": 3, "SYSEXT_SCOPE": "initrd system"}) \
        == {"ID": "_any", "ARCHITECTURE": None, "IMAGE_VERSION": "3", "SYSEXT_SCOPE": "initrd system"}
    assert default_release({"ID": "debian", "VERSION_ID": "12"}, "x86-64") == {
        "ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": "x86-64"}
    assert default_release({"ID": "debian", "VERSION_ID": "12", "SYSEXT_LEVEL": "1"}, "arm64") == {
        "ID": "debian", "SYSEXT_LEVEL": "1", "ARCHITECTURE": "arm64"}
    assert default_release({"ID": "arch"}, "x86-64") == {"ID": "arch", "ARCHITECTURE": "x86-64"}
    composed = compose_release({"ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": "x86-64"},
                               {"ARCHITECTURE": None, "NAME": "tools", "SYSEXT_SCOPE": "system"})
    assert list(composed.items()) == [("ID", "debian"), ("VERSION_ID", "12"), ("SYSEXT_SCOPE", "system"),
                                      ("NAME", "tools")]
    with pytest.raises(ParameterError, match="^release: no ID"):
        compose_release({"ID": "", "ARCHITECTURE": "x86-64"}, {})
    assert with_digest({"ID": "a"}, "sha256:1") == {"ID": "a", DIGEST_KEY: "sha256:1"}


def request(**changes: t.Any) -> BuildRequest:
    base = BuildRequest("tools", "/", "/var/lib/extensions", "squashfs", (Source("/p/a.pkg.tar.zst", "package"),),
                        HIERARCHIES, {}, "zstd")
    return dataclasses.replace(base, **changes)


def test_digest_covers_every_input_but_not_source_paths() -> None:
    release = {"ID": "debian"}
    base = digest(request(), release, ["aa"])
    assert base.startswith("sha256:") and len(base) == 71
    assert digest(request(sources=(Source("/elsewhere/a.pkg.tar.zst", "package"),)), release, ["aa"]) == base
    for changed in (digest(request(name="other"), release, ["aa"]), digest(request(format="erofs"), release, ["aa"]),
                    digest(request(compression="xz"), release, ["aa"]), digest(request(), {"ID": "arch"}, ["aa"]),
                    digest(request(hierarchies=("/usr",)), release, ["aa"]), digest(request(), release, ["ab"])):
        assert changed != base


def observed(existing: t.Sequence[ExistingImage] = (), stale: t.Sequence[str] = ()) -> BuildObserved:
    return BuildObserved({"ID": "debian"}, "sha256:new", 3, (".PKGINFO",), tuple(existing), tuple(stale))


RAW = "/var/lib/extensions/tools.raw"
DIR = "/var/lib/extensions/tools"


@pytest.mark.parametrize("changes, existing, stale, expected", [
    ({}, [], [], [("build", RAW), ("install", RAW)]),
    ({}, [ExistingImage(RAW, "raw", "sha256:new")], [], []),
    ({}, [ExistingImage(RAW, "raw", "sha256:new", merged=True)], [], []),
    ({}, [ExistingImage(RAW, "raw", "sha256:old", merged=True)], [], [("build", RAW), ("install", RAW)]),
    ({}, [ExistingImage(RAW, "raw", "sha256:new")], ["/var/lib/.#sysext-build.tools.x"],
     [("remove_stale", "/var/lib/.#sysext-build.tools.x")]),
    ({}, [ExistingImage(DIR, "directory", "sha256:old"), ExistingImage(RAW, "raw", "sha256:new")], [],
     [("build", RAW), ("remove", DIR), ("install", RAW)]),
    ({"format": "directory"}, [ExistingImage(DIR, "directory", None)], [], [("build", DIR), ("install", DIR)]),
])
def test_plan_truth_table(changes: dict, existing: list, stale: list, expected: list) -> None:
    actions = plan_build(request(**changes), observed(existing, stale))
    assert [(action.action, action.target) for action in actions] == expected


def test_install_details() -> None:
    details = [plan_build(request(), observed(existing))[-1].detail for existing in (
        [], [ExistingImage(RAW, "raw", "sha256:old")], [ExistingImage(RAW, "raw", None)])]
    assert details == ["new image", "replaces the image built from sha256:old", "replaces an image of unknown origin"]


def test_a_merged_directory_image_is_never_replaced() -> None:
    with pytest.raises(SysextError, match="^name: the directory image /var/lib/extensions/tools is merged"):
        plan_build(request(format="directory"), observed([ExistingImage(DIR, "directory", "sha256:old", True)]))
    with pytest.raises(SysextError, match="is merged right now"):
        plan_build(request(), observed([ExistingImage(DIR, "directory", "sha256:old", True)]))


def test_image_path() -> None:
    assert image_path(request()) == RAW
    assert image_path(request(format="directory", dest="/x/")) == "/x/tools"


def test_compression_levels() -> None:
    assert validate_compression_level("squashfs", "zstd", None) == 3
    assert validate_compression_level("squashfs", "zstd", 19) == 19
    assert validate_compression_level("squashfs", "gzip", None) is None
    assert validate_compression_level("erofs", "lz4hc", 12) == 12
    assert validate_compression_level("squashfs", "xz", None) is None
    with pytest.raises(ParameterError, match="^compression_level: 23 is out of range for squashfs zstd"):
        validate_compression_level("squashfs", "zstd", 23)
    with pytest.raises(ParameterError, match="^compression_level: squashfs with xz compression takes no level"):
        validate_compression_level("squashfs", "xz", 3)
    assert digest(request(compression_level=3), {"ID": "a"}, ["x"]) != digest(request(), {"ID": "a"}, ["x"])
