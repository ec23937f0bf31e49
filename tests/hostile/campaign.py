# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hypothesis settings and strategies for the generated campaign.

The default profile is derandomized (a fixed seed) with small example counts, so the suite stays fast and
repeatable; `make hostile` selects the `hostile` profile (HYPOTHESIS_PROFILE=hostile) for a longer run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings, strategies as st

# Every class of odd character: separators the parsers split at, line breaks of str.splitlines(),
# escapes, quotes, specifiers, non-breaking and other Unicode spaces, controls, non-ASCII.
ODD_CHARACTERS = list(" \t\n\r\v\f\\\"'`$%#;=,\x1c\x1d\x1e\x85\u00a0\u2028\u2029\u3000\x7f\x01\xe9") + ["\u00ff"]

settings.register_profile("default", derandomize=True, max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], database=None)
settings.register_profile("hostile", derandomize=False, max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Host cases run the module itself (about a second each): a tenth of the pure cases.
HOST_EXAMPLES = max(4, settings().max_examples // 10)

odd_text = st.text(st.one_of(st.sampled_from(ODD_CHARACTERS), st.characters(blacklist_categories=("Cs",))),
                   max_size=40)
# A path component: no "/" and no NUL (the kernel's own limits); "." and ".." are not names.
component = st.text(st.one_of(st.sampled_from([c for c in ODD_CHARACTERS if c != "/"]),
                              st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0")),
                    min_size=1, max_size=12).filter(lambda name: name not in (".", ".."))

# Generated module runs (test_campaign_modules.py, three module runs each): a handful in make test, 2000 per module
# in make hostile; IMMUTABLE_ROOT_CAMPAIGN_EXAMPLES sets another count.
CAMPAIGN_EXAMPLES = int(os.environ.get("IMMUTABLE_ROOT_CAMPAIGN_EXAMPLES",
                                       2000 if os.environ.get("HYPOTHESIS_PROFILE") == "hostile" else 5))
