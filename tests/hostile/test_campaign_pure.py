# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Generated inputs for the pure parts: fstab rewriting, mountinfo fields, unit values, the release parser."""

from __future__ import annotations

import posixpath

from hypothesis import given, strategies as st

from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import lines_of, parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import escape, parse_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import render_release
from ansible_collections.immutable.root.plugins.module_utils._linux.units import unit_value_problem
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.render import (
    desired_fstab_line, fstab_text, is_own_fstab_entry, unit_text,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    ReleaseSyntaxError, parse_env_pairs,
)

from campaign import component, odd_text

NEEDS_ROOT = False

paths = st.lists(component, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
fstab_lines = st.one_of(odd_text, odd_text.map(lambda text: "# " + text),
                        st.just("UUID=1 / ext4 defaults 0 1"), st.just("tmpfs /tmp tmpfs defaults 0 0\r"))
fstab_texts = st.lists(fstab_lines, max_size=8).map(lambda lines: "".join(line + "\n" for line in lines))


@given(fstab_texts, paths)
def test_fstab_rewrite_keeps_every_other_byte_and_round_trips(text: str, path: str) -> None:
    text = "".join(line + "\n" for line in lines_of(text) if not any(
        is_own_fstab_entry(entry, path) for entry in parse_fstab(line)))
    present = fstab_text(text, path, True)
    assert present == text + desired_fstab_line(path) + "\n"
    ours = [entry for entry in parse_fstab(present) if is_own_fstab_entry(entry, path)]
    assert len(ours) == 1 and ours[0].mountpoint == path
    assert fstab_text(present, path, True) == present
    assert fstab_text(present, path, False) == text
    # Only "\n" separates lines: the entries of the text are those of its lines, one by one.
    assert len(parse_fstab(present)) == len(parse_fstab(text)) + 1


@given(paths, paths)
def test_mountinfo_fields_round_trip(root: str, mountpoint: str) -> None:
    fields = (escape(root), escape(mountpoint), escape(root))
    line = "36 25 0:32 %s %s rw,relatime shared:1 - ext4 /dev/x%s rw" % fields
    (entry,) = parse_mountinfo(line + "\n" + "37 36 0:33 / /y ro - tmpfs none ro\n")[:1]
    assert (entry.root, entry.mountpoint, entry.source) == (root, mountpoint, "/dev/x" + root)
    assert entry.optional_fields == ("shared:1",) and entry.fstype == "ext4"


@given(paths)
def test_unit_values_are_refused_or_written_verbatim(path: str) -> None:
    problem = unit_value_problem(path)
    text = unit_text(path)
    if problem is None:
        (what,) = [line for line in text.split("\n") if line.startswith("What=")]
        assert what[len("What="):].replace("%%", "%") == path
        assert "\n" not in path and not path.endswith("\\")
    else:
        assert "\n" in path or "\r" in path or path.endswith("\\") or path != path.strip(" \t\v\f")
    assert posixpath.isabs(path)


keys = st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z")
release_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\n\r"), max_size=30)


@given(st.dictionaries(keys, release_values, max_size=6))
def test_release_data_round_trips_through_render_and_parse(pairs: dict[str, str]) -> None:
    parsed = parse_env_pairs(render_release(pairs).encode("utf-8")) if pairs else {}
    # systemd strips whitespace around an unquoted value only; render_release quotes anything unusual.
    assert parsed == pairs


@given(st.binary(max_size=200))
def test_release_parser_refuses_only_with_its_own_error(data: bytes) -> None:
    try:
        pairs = parse_env_pairs(data)
    except ReleaseSyntaxError:
        return
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in pairs.items())
