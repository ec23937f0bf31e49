# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mountinfo parsing against lines captured from this machine kind's kernel (6.18) in private namespaces."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountinfoError, escape, mount_containing, parse_line, parse_mountinfo, root_for, stack_at, unescape,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SHARED = parse_mountinfo((FIXTURES / "mountinfo_shared.txt").read_text())
PRIVATE = parse_mountinfo((FIXTURES / "mountinfo_private.txt").read_text())
PACMAN = "/tmp/cap/root/var/lib/pacman"


def test_fields_of_a_plain_line() -> None:
    entry = PRIVATE[0]
    assert (entry.mount_id, entry.parent_id, entry.device, entry.root, entry.mountpoint) == (43, 42, "254:0", "/", "/")
    assert entry.mount_options == ("rw", "relatime")
    assert entry.optional_fields == ()
    assert (entry.fstype, entry.source) == ("ext4", "/dev/vda")
    assert entry.super_options == ("rw", "discard", "resv_strict", "resuid=65534", "resgid=65534")
    assert entry.propagation == "private"
    assert not entry.read_only


def test_octal_escapes_in_paths_and_source() -> None:
    spaced = next(entry for entry in SHARED if entry.mount_id == 67)
    assert spaced.root == "/with space/dir"
    assert spaced.mountpoint == "/tmp/cap/root/with space/dir"
    tabbed = next(entry for entry in SHARED if entry.mount_id == 70)
    assert tabbed.source == "tab\tsrc"


@pytest.mark.parametrize("text", ["a b\tc\nd\\e", "/plain/path", ""])
def test_escape_round_trips(text: str) -> None:
    assert unescape(escape(text)) == text
    assert " " not in escape(text)


@pytest.mark.parametrize("mount_id, propagation", [(63, "shared"), (69, "slave"), (70, "shared"), (43, "private")])
def test_propagation_from_optional_fields(mount_id: int, propagation: str) -> None:
    entry = next(entry for entry in SHARED if entry.mount_id == mount_id)
    assert entry.propagation == propagation


def test_propagation_combinations() -> None:
    base = "1 0 0:1 / /x rw %s - tmpfs t rw"
    assert parse_line(base % "shared:3 master:1").propagation == "shared+slave"
    assert parse_line(base % "unbindable").propagation == "unbindable"
    assert parse_line(base % "shared:3 propagate_from:2").optional_fields == ("shared:3", "propagate_from:2")


def test_stack_follows_parent_ids_not_list_order() -> None:
    # Propagation on a shared mount created a third layer (66) listed after the ones stacked on it.
    stack = stack_at(SHARED, PACMAN)
    assert [entry.mount_id for entry in stack] == [66, 64, 65]
    assert stack[-1].read_only


def test_stack_private_with_foreign_on_top() -> None:
    stack = stack_at(PRIVATE, PACMAN)
    assert [entry.mount_id for entry in stack] == [64, 65, 66]
    assert stack[-1].fstype == "tmpfs" and stack[-1].source == "foreign"


def test_no_stack_on_a_plain_directory() -> None:
    assert stack_at(PRIVATE, "/tmp/cap/root/other") == ()


def test_mount_containing_picks_longest_prefix_and_top_of_stack() -> None:
    assert mount_containing(PRIVATE, "/tmp/cap/root/other/x").mount_id == 63
    assert mount_containing(PRIVATE, PACMAN + "/local").mount_id == 66
    assert mount_containing(PRIVATE, "/etc").mount_id == 43
    assert mount_containing(PRIVATE, "/tmp/cap/rootless").mount_id == 43
    assert mount_containing((), "/x") is None


def test_root_for_a_bind_of_a_subdirectory() -> None:
    capture = next(entry for entry in PRIVATE if entry.mount_id == 63)
    assert root_for(capture, PACMAN) == "/var/lib/pacman"
    assert root_for(capture, "/tmp/cap/root") == "/"
    locked = next(entry for entry in PRIVATE if entry.mount_id == 67)
    assert root_for(locked, "/tmp/cap/root/locked/sub") == "/locked/sub"


@pytest.mark.parametrize("line", [
    "63 43 0:39 / /x rw,relatime shared:1 tmpfs capture rw",  # no separator
    "x 43 0:39 / /x rw - tmpfs capture rw",  # id not a number
    "63 43 0:39 / /x rw -",  # missing fields after the separator
])
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(MountinfoError):
        parse_line(line)


def test_blank_lines_are_ignored() -> None:
    assert len(parse_mountinfo("\n" + (FIXTURES / "mountinfo_private.txt").read_text() + "\n\n")) == len(PRIVATE)
