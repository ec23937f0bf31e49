# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's exceptions: one base type whose message is what a user needs to read."""

from __future__ import annotations

from collections.abc import Sequence


class LabError(Exception):
    """Anything the lab cannot do; the message says what failed and what to look at."""


class MissingTool(LabError):
    """A host command the lab needs is not installed; names the Debian package that ships it."""

    def __init__(self, missing: Sequence[tuple[str, str]]) -> None:
        self.missing = list(missing)
        tools = ", ".join(f"{tool} (Debian package {package})" for tool, package in self.missing)
        packages = " ".join(sorted({package for _tool, package in self.missing}))
        super().__init__(f"missing host tools: {tools}; install them with: apt-get install {packages}")


class CommandFailed(LabError):
    """A command exited non-zero or ran out of time; carries the command, rc and output tail."""

    def __init__(self, what: str, cmd: Sequence[str], rc: int | None, tail: str, log: str | None = None) -> None:
        self.cmd = list(cmd)
        self.rc = rc
        self.tail = tail
        self.log = log
        status = "timed out" if rc is None else f"failed with rc {rc}"
        where = f" (full log: {log})" if log else ""
        super().__init__(f"{what} {status}{where}\n--- last output ---\n{tail}".rstrip())


class BootFailed(LabError):
    """A VM did not become reachable; the message ends with the serial console tail."""

    def __init__(self, reason: str, console_tail: str, console_log: str) -> None:
        self.reason = reason
        # Stripped here, not only in the message, so the message always contains the attribute verbatim.
        self.console_tail = console_tail.rstrip()
        self.console_log = console_log
        super().__init__(f"{reason}\n--- serial console tail ({console_log}) ---\n{self.console_tail}")
