# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The exception types every module shares, and the one way they become fail_json() arguments."""

from __future__ import annotations

import typing as t


class ImmutableRootError(Exception):
    """A failure a module reports to the user; carries command details when a command failed."""

    def __init__(
        self,
        msg: str,
        cmd: t.Sequence[str] | None = None,
        rc: int | None = None,
        stdout: str = "",
        stderr: str = "",
        extra: t.Mapping[str, t.Any] | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.cmd = list(cmd) if cmd is not None else None
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.extra = dict(extra or {})

    def details(self) -> dict[str, t.Any]:
        """Keyword arguments for fail_json besides msg: the failed command, and any extra result keys."""
        details = dict(self.extra)
        if self.cmd is not None:
            details.update(cmd=self.cmd, rc=self.rc, stdout=self.stdout, stderr=self.stderr)
        return details


def failure(exc: ImmutableRootError | OSError) -> dict[str, t.Any]:
    """fail_json keyword arguments for an error a module reports (msg, and the details it carries)."""
    if isinstance(exc, ImmutableRootError):
        return dict(msg=exc.msg, **exc.details())
    return dict(msg="%s: %s" % (type(exc).__name__, exc))


class ParameterError(ImmutableRootError):
    """Bad input: raised before anything on the system is touched."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__("%s: %s" % (param, problem))
        self.param = param


class CommandError(ImmutableRootError):
    """A command exited non-zero (or could not be started)."""


class MountError(ImmutableRootError):
    """A mount operation failed or its result is not what was asked for."""
