# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.module import bad_parameter


@pytest.mark.parametrize("value,expected", [
    ("plain", None),
    ("a\0b", ("p", "must not contain a NUL byte")),
    (["x", "y\0"], ("p[1]", "must not contain a NUL byte")),
    ({"k": "v", "w": ["ok", "\0"]}, ("p.w[1]", "must not contain a NUL byte")),
    (["\u00e9\u2028", "ab\ud800"], ("p[1]", "must be UTF-8 text ('\\ud800' at position 2 is a lone surrogate)")),
    ([{"a": 1}, {"b": None}, {"c": True}], None),
    (4, None),
    (None, None),
])
def test_bad_parameter_names_the_first_string_no_log_can_hold(
        value: object, expected: tuple[str, str] | None) -> None:
    assert bad_parameter(value, "p") == expected
