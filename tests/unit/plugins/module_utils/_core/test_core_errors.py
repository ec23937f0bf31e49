# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    CommandError, ImmutableRootError, ParameterError, failure,
)


def test_parameter_errors_start_with_the_parameter() -> None:
    error = ParameterError("root", "must be an absolute path")
    assert failure(error) == {"msg": "root: must be an absolute path"} and error.param == "root"


def test_command_errors_carry_the_command_and_extra_keys() -> None:
    error = CommandError("mount failed", cmd=["mount", "/x"], rc=32, stdout="", stderr="not mounted",
                         extra={"mount": {"layers": 0}})
    assert failure(error) == {"msg": "mount failed", "cmd": ["mount", "/x"], "rc": 32, "stdout": "",
                              "stderr": "not mounted", "mount": {"layers": 0}}
    assert failure(ImmutableRootError("verification failed", extra={"differing": ["/bin/sh"]})) == {
        "msg": "verification failed", "differing": ["/bin/sh"]}


def test_os_errors_name_their_type() -> None:
    assert failure(FileNotFoundError(2, "No such file or directory", "/etc/fstab")) == {
        "msg": "FileNotFoundError: [Errno 2] No such file or directory: '/etc/fstab'"}
