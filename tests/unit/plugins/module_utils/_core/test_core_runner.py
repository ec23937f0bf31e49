# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner


class FakeModule:
    def __init__(self, result: tuple[int, str, str], binaries: t.Sequence[str] = ("mount",)) -> None:
        self.result = result
        self.binaries = binaries
        self.calls: list[dict[str, t.Any]] = []

    def get_bin_path(self, arg: str, required: bool = False) -> str | None:
        return "/usr/bin/" + arg if arg in self.binaries else None

    def run_command(self, args: list[str], check_rc: bool = False, environ_update: dict[str, str] | None = None,
                    data: str | None = None, binary_data: bool = False) -> tuple[int, str, str]:
        self.calls.append(dict(args=args, environ_update=environ_update, data=data))
        return self.result


def test_runs_with_c_locale_and_resolved_binary() -> None:
    module = FakeModule((0, "out", ""))
    result = Runner(module, {"EXTRA": "1"}).run(["mount", "--bind", "/a", "/a"])
    assert result.cmd == ["/usr/bin/mount", "--bind", "/a", "/a"] and result.stdout == "out"
    env = module.calls[0]["environ_update"]
    assert env["LANG"] == "C" and env["LC_ALL"] == "C" and env["EXTRA"] == "1"


def test_failure_raises_with_command_details() -> None:
    module = FakeModule((32, "", "mount: /a: not mounted.\n"))
    with pytest.raises(CommandError) as error:
        Runner(module).run(["mount", "/a"])
    assert error.value.rc == 32 and error.value.cmd == ["/usr/bin/mount", "/a"]
    assert error.value.msg.endswith("mount: /a: not mounted.")
    assert error.value.details()["stderr"] == "mount: /a: not mounted.\n"
    assert Runner(module).run(["mount", "/a"], check=False).rc == 32


def test_missing_binary_is_named() -> None:
    with pytest.raises(CommandError, match="'btrfs' was not found"):
        Runner(FakeModule((0, "", ""))).run(["btrfs", "subvolume", "list", "/"])
