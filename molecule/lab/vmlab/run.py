# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every command the lab starts goes through here: C locale, bounded time, logged output, progress lines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vmlab.errors import CommandFailed, MissingTool

# Seconds between "still running" lines of a long build; CI logs go quiet for minutes otherwise.
PROGRESS_INTERVAL = 20.0
TAIL_LINES = 25
REDACTED = "<host apt mirror>"

# Host command -> Debian package that ships it, so a missing tool is reported by package name.
TOOL_PACKAGES: Mapping[str, str] = {
    "mmdebstrap": "mmdebstrap",
    "debootstrap": "debootstrap",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "btrfs": "btrfs-progs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "sgdisk": "gdisk",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "unshare": "util-linux",
    "losetup": "mount",
    "mount": "mount",
    "tar": "tar",
    "zstd": "zstd",
    "bash": "bash",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
}

# Root's sbin directories are missing from PATH in some CI shells, yet mkfs.* and losetup live there.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def note(message: str) -> None:
    """Tell the user what the lab is doing (stderr, so stdout stays machine-readable)."""
    sys.stderr.write(f"lab: {message}\n")
    sys.stderr.flush()


def which(tool: str) -> str | None:
    return shutil.which(tool, path=_SEARCH_PATH)


def require_tools(tools: Iterable[str]) -> None:
    """Fail with the Debian package names of every missing tool at once."""
    missing = [(tool, TOOL_PACKAGES.get(tool, "?")) for tool in tools if which(tool) is None]
    if missing:
        raise MissingTool(missing)


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PATH": _SEARCH_PATH, "DEBIAN_FRONTEND": "noninteractive"})
    env.update(extra or {})
    return env


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def redact_all(cmd: Sequence[str], secrets: Sequence[str]) -> list[str]:
    return [redact(arg, secrets) for arg in cmd]


def tail_lines(text: str, count: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-count:])


def tail_of_file(path: Path, count: int = TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return tail_lines(data.decode("utf-8", "replace").replace("\r", ""), count)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The command runs in its own session so its helpers (dpkg, chroot'ed postinsts) die with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(cmd: Sequence[str], *, timeout: float, what: str | None = None, env: Mapping[str, str] | None = None,
        stdin: bytes | None = None, secrets: Sequence[str] = ()) -> str:
    """Run a short command and return its stdout; raise CommandFailed with its output on failure."""
    label = what or os.path.basename(cmd[0])
    proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=command_env(env), start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CommandFailed(redact(label, secrets), redact_all(cmd, secrets), None, f"(no result within {timeout:.0f} s)") from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        output = (out + err).decode("utf-8", "replace")
        raise CommandFailed(redact(label, secrets), redact_all(cmd, secrets), proc.returncode, redact(tail_lines(output), secrets))
    return out.decode("utf-8", "replace")


def run_status(cmd: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command whose exit status the caller judges (e.g. ssh to a guest that may be rebooting); rc 255 on timeout."""
    try:
        return subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              env=command_env(), check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(cmd), 255, "", f"no result within {timeout:.0f} s")


def spawn(cmd: Sequence[str], *, log: Path) -> subprocess.Popen[bytes]:
    """Start a background command (its own session, output to `log`); the caller owns and reaps it."""
    with log.open("ab") as handle:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                env=command_env(), start_new_session=True)


def run_logged(cmd: Sequence[str], *, log: Path, timeout: float, what: str, env: Mapping[str, str] | None = None,
               secrets: Sequence[str] = ()) -> None:
    """Run a long command with its output appended to `log`, printing a progress line every PROGRESS_INTERVAL."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    note(f"{what}: started (log: {log})")
    with log.open("ab") as handle:
        handle.write(("$ " + " ".join(redact_all(cmd, secrets)) + "\n").encode())
        handle.flush()
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                env=command_env(env), start_new_session=True)
    next_report = started + PROGRESS_INTERVAL
    try:
        while True:
            try:
                proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - started > timeout:
                _kill_group(proc)
                raise CommandFailed(what, redact_all(cmd, secrets), None, redact(tail_of_file(log), secrets), str(log))
            if now >= next_report:
                last = redact(tail_of_file(log, 1), secrets)[:120]
                note(f"{what}: still running, {now - started:.0f} s elapsed; last output: {last}")
                next_report = now + PROGRESS_INTERVAL
    except BaseException:
        if proc.returncode is None:
            _kill_group(proc)
        raise
    if proc.returncode != 0:
        raise CommandFailed(what, redact_all(cmd, secrets), proc.returncode, redact(tail_of_file(log), secrets), str(log))
    note(f"{what}: done in {time.monotonic() - started:.1f} s")
