# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one place where modules run external commands."""

from __future__ import annotations

import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError

# Parsed output (mount(8), btrfs(8), systemd-sysext(8) messages) must not depend on the locale.
C_LOCALE = {"LANG": "C", "LC_ALL": "C", "LC_MESSAGES": "C"}


class ModuleLike(t.Protocol):
    """The part of AnsibleModule the runner uses (a stand-in is enough for tests)."""

    def get_bin_path(self, arg: str, required: bool = False) -> str | None: ...

    def run_command(self, args: list[str], check_rc: bool = False, environ_update: dict[str, str] | None = None,
                    data: str | None = None, binary_data: bool = False) -> tuple[int, str, str]: ...


class CommandResult(t.NamedTuple):
    cmd: list[str]
    rc: int
    stdout: str
    stderr: str


class Runner:
    """Runs argv lists with LANG=C; binaries are resolved once through get_bin_path."""

    def __init__(self, module: ModuleLike, environ: dict[str, str] | None = None) -> None:
        self._module = module
        self._environ = dict(C_LOCALE)
        self._environ.update(environ or {})
        self._paths: dict[str, str] = {}

    def binary(self, name: str) -> str:
        """Absolute path of a required binary; fails clearly when it is not installed."""
        if name not in self._paths:
            path = self._module.get_bin_path(name, required=False)
            if not path:
                raise CommandError("required program %r was not found in PATH" % name)
            self._paths[name] = path
        return self._paths[name]

    def run(self, argv: t.Sequence[str], check: bool = True, environ: dict[str, str] | None = None,
            data: str | None = None) -> CommandResult:
        """Run argv (argv[0] is a program name); raise CommandError on rc != 0 when check is set."""
        cmd = [self.binary(argv[0])] + list(argv[1:])
        env = dict(self._environ)
        env.update(environ or {})
        rc, stdout, stderr = self._module.run_command(cmd, check_rc=False, environ_update=env, data=data,
                                                      binary_data=data is not None)
        result = CommandResult(cmd, rc, stdout, stderr)
        if check and rc != 0:
            message = (stderr or stdout).strip().splitlines()
            raise CommandError(
                "%s failed (rc=%d)%s" % (" ".join(cmd), rc, ": " + message[-1] if message else ""),
                cmd=cmd, rc=rc, stdout=stdout, stderr=stderr,
            )
        return result
