# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking to a guest over the forwarded SSH port."""

from __future__ import annotations

import dataclasses
import shlex
import socket
import subprocess
from pathlib import Path

from vmlab.run import run_status
from vmlab.sshkey import SSH_OPTIONS

HOST = "127.0.0.1"
USER = "root"


@dataclasses.dataclass(frozen=True)
class SshTarget:
    port: int
    key: Path
    host: str = HOST
    user: str = USER


def ssh_argv(target: SshTarget, remote: str | None = None, connect_timeout: int = 10) -> list[str]:
    """ssh's command line; `remote` is one string for the guest's shell, as ssh itself passes it."""
    argv = ["ssh", *SSH_OPTIONS, "-o", f"ConnectTimeout={connect_timeout}", "-i", str(target.key), "-p", str(target.port),
            f"{target.user}@{target.host}"]
    if remote:
        argv += ["--", remote]
    return argv


def banner_ready(port: int, host: str = HOST, timeout: float = 5.0) -> bool:
    """True when sshd itself answers.  QEMU's user network accepts the TCP connection for the forwarded port
    before anything listens in the guest and then closes it, so a connect alone proves nothing."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def run_in_guest(target: SshTarget, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `command` (an argv, quoted here for the guest's shell) in the guest; never raises for the remote exit status."""
    return run_status(ssh_argv(target, shlex.join(command)), timeout=timeout)


def boot_id(target: SshTarget, timeout: float = 30.0) -> str | None:
    """The guest kernel's boot id, or None when the guest does not answer."""
    result = run_in_guest(target, ["cat", "/proc/sys/kernel/random/boot_id"], timeout)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None
