# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import (
    parse_fstab, render_entry, rewrite, same_entry,
)

FSTAB = """\
# /etc/fstab: static file system information.
UUID=b9ff5e7b-e128-4e64-861a-2fdd794a9828 / btrfs subvol=/snapshots/x/@,ro,noatime 0 0

tmpfs /tmp tmpfs mode=1777,noatime,nosuid,nodev,size=2G 0 0
/srv/my\\040db /srv/my\\040db none bind,ro
broken line
UUID=1 /x ext4 defaults zero 1
"""


def test_parse_skips_comments_blanks_and_malformed_lines() -> None:
    entries = parse_fstab(FSTAB)
    assert [entry.mountpoint for entry in entries] == ["/", "/tmp", "/srv/my db"]
    root = entries[0]
    assert (root.line_number, root.fstype, root.options[0], root.freq, root.passno) == (2, "btrfs", "subvol=/snapshots/x/@", 0, 0)
    assert entries[2].spec == "/srv/my db" and entries[2].freq == 0 and entries[2].passno == 0


def test_render_escapes_and_same_entry_ignores_spacing() -> None:
    line = render_entry("/srv/my db", "/srv/my db", "none", ("bind", "ro"))
    assert line == "/srv/my\\040db /srv/my\\040db none bind,ro 0 0"
    assert same_entry(parse_fstab(FSTAB)[2], line)
    assert not same_entry(parse_fstab(FSTAB)[1], line)


def test_rewrite_replaces_deletes_and_appends_keeping_the_rest() -> None:
    text = "a\nb\nc\n"
    assert rewrite(text, {2: "B"}) == "a\nB\nc\n"
    assert rewrite(text, {1: None, 3: None}, ["d"]) == "b\nd\n"
    assert rewrite("", {}, ["x"]) == "x\n"
    assert rewrite("no newline at end", {}) == "no newline at end\n"


def test_rewrite_keeps_every_byte_it_does_not_own() -> None:
    """Regression: splitlines() turned CRLF into LF and split at form feeds, so 'byte-exact' was not."""
    text = "# edited on\r\nwindows\r\n# a form\x0cfeed and a \x1c separator\nUUID=1 / ext4 ro 0 1\nlast-no-newline"
    assert rewrite(text, {}) == text + "\n"
    assert [entry.line_number for entry in parse_fstab(text)] == [4]
    assert rewrite(text, {4: "UUID=2 / ext4 ro 0 1"}) == text.replace("UUID=1", "UUID=2") + "\n"
    assert rewrite(text, {}, ["tmpfs /tmp tmpfs defaults 0 0"]) == text + "\ntmpfs /tmp tmpfs defaults 0 0\n"
    assert rewrite(text, {5: None}) == text[:text.rindex("\n") + 1]
    assert rewrite("a\nb", {2: "B"}) == "a\nB\n"
