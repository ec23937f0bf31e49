# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU: the command line (a pure function), the QMP control socket, and telling our QEMU from any other process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, BinaryIO

from vmlab.errors import LabError

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@dataclasses.dataclass(frozen=True)
class DirectBoot:
    kernel: Path
    initrd: Path
    cmdline: str


@dataclasses.dataclass(frozen=True)
class UefiBoot:
    code: Path
    variables: Path


@dataclasses.dataclass(frozen=True)
class Drive:
    path: Path
    serial: str
    fmt: str = "qcow2"


@dataclasses.dataclass(frozen=True)
class VmConfig:
    name: str
    accel: str  # "tcg" or "kvm"
    cpus: int
    memory_mib: int
    boot: DirectBoot | UefiBoot
    drives: tuple[Drive, ...]
    ssh_port: int | None
    console_log: Path
    pidfile: Path
    qmp_socket: Path | None
    daemonize: bool = True


def _opt(value: object) -> str:
    """QEMU's option syntax doubles a comma inside a value."""
    return str(value).replace(",", ",,")


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        # -cpu host alone aborts on some hosts ("failed to set MSR 0x10a"); see field notes, QEMU section.
        return ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
    if accel == "tcg":
        # A bigger translation cache and two vCPUs (multi-threaded TCG): 41 s to SSH instead of 65-70 s.
        return ["-accel", "tcg,tb-size=256", "-cpu", "max"]
    raise ValueError(f"accelerator must be 'tcg' or 'kvm', not {accel!r}")


def qemu_argv(cfg: VmConfig) -> list[str]:
    argv = [QEMU, "-name", f"lab-{_opt(cfg.name)}", "-machine", "q35", *accel_args(cfg.accel),
            "-smp", str(cfg.cpus), "-m", str(cfg.memory_mib),
            # -nodefaults: no VGA, CD-ROM or default NIC; OVMF and the kernel talk to the serial console only.
            "-nodefaults", "-display", "none", "-monitor", "none", "-serial", f"file:{cfg.console_log}",
            "-pidfile", str(cfg.pidfile)]
    if cfg.qmp_socket is not None:
        argv += ["-qmp", f"unix:{_opt(cfg.qmp_socket)},server=on,wait=off"]
    if cfg.daemonize:
        argv.append("-daemonize")
    if isinstance(cfg.boot, DirectBoot):
        argv += ["-kernel", str(cfg.boot.kernel), "-initrd", str(cfg.boot.initrd), "-append", cfg.boot.cmdline]
    else:
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(cfg.boot.code)}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={_opt(cfg.boot.variables)}"]
    # cache=unsafe: overlays are throwaway and QEMU keeps running across guest reboots and resets, so
    # ignoring guest flushes costs nothing but time saved (field notes).
    for number, drive in enumerate(cfg.drives):
        argv += ["-drive", f"file={_opt(drive.path)},if=none,id=drive{number},format={drive.fmt},cache=unsafe,discard=unmap",
                 "-device", f"virtio-blk-pci,drive=drive{number},serial={_opt(drive.serial)}"]
    if cfg.ssh_port is not None:
        # 127.0.0.1 only: the guest's root login must not be reachable from the network.
        argv += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{cfg.ssh_port}-:22", "-device", "virtio-net-pci,netdev=net0"]
    else:
        argv += ["-nic", "none"]
    argv += ["-device", "virtio-rng-pci"]
    return argv


# --- our process, and only ours -------------------------------------------------------------------------------

def read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0")[:-1]]


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time since boot): a PID reused by another process gets another value."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def is_zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def is_our_qemu(pid: int, pidfile: Path, ticks: int | None) -> bool:
    """True only for a live QEMU started with our pidfile (and, when known, the start time we recorded)."""
    argv = read_cmdline(pid)
    if not argv or not os.path.basename(argv[0]).startswith("qemu-system"):
        return False
    if "-pidfile" not in argv or argv[argv.index("-pidfile") + 1:argv.index("-pidfile") + 2] != [str(pidfile)]:
        return False
    if ticks is not None and start_ticks(pid) != ticks:
        return False
    return not is_zombie_or_gone(pid)


def terminate(pid: int, pidfile: Path, ticks: int | None, grace: float = 15.0) -> bool:
    """Stop our QEMU: SIGTERM, then SIGKILL after `grace` seconds.  False if `pid` is not our QEMU (any more)."""
    if not is_our_qemu(pid, pidfile, ticks):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if is_zombie_or_gone(pid):
                return True
            time.sleep(0.2)
    raise LabError(f"QEMU pid {pid} survived SIGKILL for 10 s")


# --- QMP ------------------------------------------------------------------------------------------------------

def qmp(socket_path: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Run one QMP command and return its "return" value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        with sock.makefile("rb") as reader:
            _qmp_read(reader)  # greeting
            reply: dict[str, Any] = {}
            for request in ({"execute": "qmp_capabilities"}, {"execute": command, **({"arguments": arguments} if arguments else {})}):
                sock.sendall(json.dumps(request).encode() + b"\n")
                reply = _qmp_read(reader)
                if "error" in reply:
                    raise LabError(f"QMP {request['execute']} failed: {reply['error']}")
        return reply.get("return")


def _qmp_read(reader: BinaryIO) -> dict[str, Any]:
    while True:
        line = reader.readline()
        if not line:
            raise LabError("QMP connection closed")
        message: dict[str, Any] = json.loads(line)
        if "event" not in message:  # asynchronous events may arrive between replies
            return message
