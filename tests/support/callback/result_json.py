# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only stdout callback: prints every task result, diff included, as one JSON document per line."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: result_json
type: stdout
short_description: One JSON line per task result, including diff and warnings (tests only)
description:
  - Used by the collection's host tests to read module results exactly as Ansible produced them.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "result_json"

    def _emit(self, result, status: str) -> None:
        data = dict(result._result)
        data["_status"] = status
        data.setdefault("failed", status in ("failed", "unreachable"))
        data["_task"] = result._task.get_name()
        self._display.display(json.dumps(data, default=str))

    def v2_runner_on_ok(self, result) -> None:
        self._emit(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._emit(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._emit(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._emit(result, "unreachable")
