# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The --mutable mode read from overlay options and the image policy read from systemd-analyze (pure)."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext.image_policy import (
    PolicyTableError, parse_analysis,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import (
    ImageContent, SearchEntry, judge,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.mutable import (
    effective_mode, mutable_dir, observed_mode,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import HostRelease

DIR = "/var/lib/extensions.mutable/usr"
LOWER = "lowerdir=/run/systemd/sysext/meta/usr:/run/systemd/sysext/extensions/a/usr:/usr"
LOWER_IMPORT = "lowerdir=/run/systemd/sysext/meta/usr:%s:/run/systemd/sysext/extensions/a/usr:/usr" % DIR
EPHEMERAL = "upperdir=/run/systemd/sysext/mh_workspace/usr/usr"


# Super options as systemd-sysext 257 mounted them on a Debian 13 VM, one per --mutable value.
@pytest.mark.parametrize("options, mode", [
    (("ro", LOWER, "redirect_dir=on"), "no"),
    (("ro", LOWER_IMPORT, "redirect_dir=on"), "import"),
    (("rw", LOWER, "upperdir=" + DIR, "workdir=/var/lib/extensions.mutable/.systemd-usr-workdir"), "yes"),
    (("rw", LOWER, EPHEMERAL, "workdir=/run/systemd/sysext/mh_workspace/usr/.systemd-usr-workdir"), "ephemeral"),
    (("rw", LOWER_IMPORT, EPHEMERAL), "ephemeral-import"),
])
def test_observed_mode(options: tuple[str, ...], mode: str) -> None:
    assert observed_mode(options, DIR) == mode


@pytest.mark.parametrize("requested, exists, mode", [
    ("no", True, "no"), ("yes", False, "yes"), ("ephemeral", True, "ephemeral"),
    ("auto", True, "yes"), ("auto", False, "no"),
    ("import", True, "import"), ("import", False, "no"),
    ("ephemeral-import", True, "ephemeral-import"), ("ephemeral-import", False, "ephemeral"),
])
def test_effective_mode(requested: str, exists: bool, mode: str) -> None:
    assert effective_mode(requested, exists) == mode


def test_mutable_dir() -> None:
    assert mutable_dir("/usr") == DIR and mutable_dir("/opt") == "/var/lib/extensions.mutable/opt"
    with pytest.raises(ValueError):
        effective_mode("sometimes", True)


def table(root_mode: str) -> str:
    # The shape of `systemd-analyze image-policy` output (systemd 257).
    return ("Analyzing policy: x\n       Long form: x\n\nPARTITION       MODE        READ-ONLY GROWFS\n"
            "root            %s      -         -\nusr             ignore      -         -\n"
            "root-verity     unprotected -         -\n" % root_mode)


@pytest.mark.parametrize("root_mode, plain_allowed, described", [
    ("signed", False, "signed"),
    ("verity+signed", False, "signed+verity"),
    ("verity+unprotected", True, "unprotected+verity"),
    ("open", True, "encrypted+signed+unprotected+verity"),
    ("ignore", False, "unused or absent"),
    ("absent", False, "unused or absent"),
    ("-", False, "unused or absent"),
])
def test_policy_root_row(root_mode: str, plain_allowed: bool, described: str) -> None:
    policy = parse_analysis("p", table(root_mode))
    assert policy.allows_plain_file_system is plain_allowed and policy.describe_root() == described


@pytest.mark.parametrize("output", ["", table("sealed")])
def test_policy_table_that_cannot_be_read(output: str) -> None:
    with pytest.raises(PolicyTableError):
        parse_analysis("p", output)


@pytest.mark.parametrize("kind, root_mode, force, verdict", [
    ("raw", "signed", False, "invalid"),
    ("raw", "signed", True, "invalid"),  # --force does not bypass the policy
    ("raw", "unprotected", False, "compatible"),
    ("directory", "signed", False, "compatible"),  # directories are not dissected
])
def test_judge_applies_the_policy_to_raw_images_only(kind: str, root_mode: str, force: bool, verdict: str) -> None:
    entry = SearchEntry("/var/lib/extensions", "a.raw" if kind == "raw" else "a", "/x/a", kind)  # type: ignore[arg-type]
    content = ImageContent(fstype="squashfs" if kind == "raw" else None, release={"ID": "debian", "VERSION_ID": "13"},
                           release_path="usr/lib/extension-release.d/extension-release.a", hierarchies=("/usr",))
    judged = judge(entry, content, HostRelease("debian", "13"), "x86-64", force=force,
                   policy=parse_analysis("root=%s" % root_mode, table(root_mode)))
    assert judged.verdict == verdict
    if verdict == "invalid":
        assert "image_policy 'root=signed'" in (judged.reason or "") and "whole merge" in (judged.reason or "")
