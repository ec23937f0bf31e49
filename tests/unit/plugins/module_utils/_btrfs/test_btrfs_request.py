# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation options: every refusal names its parameter, before anything is touched."""

from __future__ import annotations

import pathlib
import time
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._btrfs import request
from ansible_collections.immutable.root.plugins.module_utils._btrfs.request import fresh_stamp, validate_options
from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import DEFAULT_COMMONS
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError


def params(**changes: t.Any) -> dict[str, t.Any]:
    values: dict[str, t.Any] = {"top": "/", "device": None, "state": "pruned", "name": None, "from": None,
                                "source": None, "slots": 4, "keep": 4, "pinned": [], "commons": list(DEFAULT_COMMONS),
                                "fstab_template": None, "root": "/"}
    values.update(changes)
    return values


REFUSALS = [
    (dict(top="relative"), "top: must be an absolute path"),
    (dict(top="/nonexistent/top"), "top: /nonexistent/top does not exist"),
    (dict(top="/etc/hostname"), "top: /etc/hostname is not a directory"),
    (dict(top=None, device="/dev/../dev/null"), "device: must not contain '..'"),
    (dict(root="/proc/.."), "root: must not contain '..'"),
    (dict(state="present", name="a/b"), "name: must be a single name without '/' or '..'"),
    (dict(state="present", name="x", **{"from": ".."}), "from: must be a single name"),
    (dict(state="current"), "name: state=current needs the name of a generation"),
    (dict(state="absent"), "name: state=absent needs"),
    (dict(name="x"), "name: is not used by state=pruned"),
    (dict(state="current", name="x", **{"from": "y"}), "from: is only used by state=present"),
    (dict(state="current", name="x", source="/"), "source: is only used by state=initialized and state=present"),
    (dict(state="present", source="/nonexistent/tree"), "source: /nonexistent/tree does not exist"),
    (dict(slots=0), "slots: must be between 1 and 64, got 0"),
    (dict(slots=65), "slots: must be between 1 and 64, got 65"),
    (dict(keep=0), "keep: must be at least 1, got 0"),
    (dict(keep=-3), "keep: must be at least 1, got -3"),
    (dict(pinned=["ok", "../x"]), "pinned: must be a single name"),
    (dict(commons=["@home", "var"]), "commons: each entry must look like @home"),
    (dict(commons=["@home", "@home"]), "commons: lists a name twice"),
    (dict(tentative=True), "tentative: is only used by state=current"),
    (dict(fill_commons=True), "fill_commons: is only used by state=initialized"),
    (dict(state="initialized", fill_commons=True), "fill_commons: needs source"),
    (dict(state="initialized", fstab_template="#" * (1 << 20) + "\n"),
     "fstab_template: is 1048577 bytes; at most 1048576 bytes (1 MiB)"),
    (dict(state="initialized", fstab_template="\xe9" * (1 << 19) + "\n"), "fstab_template: is 1048577 bytes"),
]


@pytest.mark.parametrize("changes, message", REFUSALS, ids=[row[1] for row in REFUSALS])
def test_refusals_name_the_parameter(changes: dict, message: str) -> None:
    with pytest.raises(ParameterError) as error:
        validate_options(params(**changes))
    assert error.value.msg.startswith(message), error.value.msg


def test_accepted_options_are_normalised(tmp_path: pathlib.Path) -> None:
    checked = validate_options(params(state="present", name="v1.2", source=str(tmp_path), pinned=["a", "b"],
                                      commons=["@home"], keep=1, slots=1))
    assert checked["pinned"] == ("a", "b") and checked["commons"] == ("@home",) and checked["source"] == str(tmp_path)
    assert validate_options(params(top=None, device="/dev/null"))["device"] == "/dev/null"


def test_fresh_stamps_avoid_taken_names(monkeypatch: pytest.MonkeyPatch) -> None:
    first = fresh_stamp(set())
    assert len(first) == 22 and first[:14].isdigit() and first[14:].isalpha()

    class Replayed:
        """The letters a taken stamp has, twice over, and only then others: a stamp that ignored `taken`
        would return the taken one."""

        def __init__(self) -> None:
            self.letters = iter("A" * 16 + "B" * 8)

        def choice(self, _alphabet: str) -> str:
            return next(self.letters)

    monkeypatch.setattr(request.random, "SystemRandom", Replayed)
    monkeypatch.setattr(request.time, "gmtime", lambda: time.struct_time((2026, 11, 23, 19, 45, 41, 0, 327, 0)))
    assert fresh_stamp({"20261123194541AAAAAAAA"}) == "20261123194541BBBBBBBB"


def test_fill_sources_are_the_real_directories_below_source(tmp_path: pathlib.Path) -> None:
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "var/cache").symlink_to("/var/cache")  # a symlink is never followed out of source
    checked = validate_options(params(state="initialized", source=str(tmp_path), fill_commons=True))
    assert request.fill_sources(checked) == {"@home": str(tmp_path / "home"), "@var@log": str(tmp_path / "var/log")}
    assert request.fill_sources(dict(checked, fill_commons=False)) == {}
