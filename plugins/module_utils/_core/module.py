# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AnsibleModule every module of the collection builds: it refuses a NUL byte or a lone surrogate (text that
is no UTF-8) by naming the parameter, where Ansible's invocation log would fail naming none or crash."""

from __future__ import annotations

import typing as t

from ansible.module_utils.basic import AnsibleModule


def text_problem(text: str) -> str | None:
    if "\0" in text:
        return "must not contain a NUL byte"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return "must be UTF-8 text (%r at position %d is a lone surrogate)" % (text[error.start], error.start)
    return None


def bad_parameter(value: t.Any, name: str) -> tuple[str, str] | None:
    """(name with list index or dict key, problem) of the first string under value that no log can hold, or None."""
    if isinstance(value, str):
        problem = text_problem(value)
        return (name, problem) if problem else None
    if isinstance(value, (list, tuple)):
        items: t.Iterable[tuple[str, t.Any]] = (("%s[%d]" % (name, index), item) for index, item in enumerate(value))
    elif isinstance(value, dict):
        items = (("%s.%s" % (name, key), item) for key, item in value.items())
    else:
        return None
    for inner_name, item in items:
        found = bad_parameter(item, inner_name)
        if found:
            return found
    return None


class ImmutableRootModule(AnsibleModule):
    """AnsibleModule whose invocation log first refuses text it cannot hold, naming the parameter.

    Without this, syslog refuses a NUL byte with a message that names no parameter, and a lone surrogate crashes
    the log's UTF-8 encoding with a traceback."""

    def _log_invocation(self) -> None:
        for name, value in sorted(self.params.items()):
            found = bad_parameter(value, name)
            if found:
                self.fail_json(msg="%s %s" % found)
        super()._log_invocation()
