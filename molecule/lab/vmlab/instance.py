# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lab instances: one QEMU per name, all its state in one directory, teardown that leaves nothing behind.

<state root>/<name>/ holds instance.json, overlay.qcow2 (on the cached image), disk-N.qcow2 (extra blank disks),
vars.fd (UEFI variables), console.log, qemu.pid and qmp.sock.  `up` tears all of it down before it raises.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmlab import guest, images, kvm, qemu, sshkey
from vmlab.cache import cache_root, locked
from vmlab.errors import BootFailed, CommandFailed, LabError
from vmlab.guestssh import SshTarget, banner_ready, boot_id, run_in_guest
from vmlab.run import note, require_tools, run, tail_lines

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
STATE_FILE = "instance.json"
DEFAULT_BOOT_TIMEOUT = 600.0
DEFAULT_MEMORY_MIB = 1024
DEFAULT_CPUS = 2
PORT_ATTEMPTS = 5
CONSOLE_TAIL_LINES = 40
SIZE_PATTERN = re.compile(r"^(\d+)([KMGT]?)i?B?$", re.IGNORECASE)
PANIC_MARKERS = ("Kernel panic - not syncing", "end Kernel panic")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>c]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def state_root(explicit: Path | None = None, cache: Path | None = None) -> Path:
    """--state-dir, else $IMMUTABLE_LAB_STATE, else <cache>/instances."""
    # Absolute, because QEMU gets these paths and `down` recognises its QEMU by them from any directory.
    if explicit is not None:
        return explicit.absolute()
    if os.environ.get("IMMUTABLE_LAB_STATE"):
        return Path(os.environ["IMMUTABLE_LAB_STATE"]).absolute()
    return ((cache or cache_root()) / "instances").absolute()


def parse_size(text: str) -> int:
    """'2G', '512M', '1GiB', '4096' -> bytes."""
    match = SIZE_PATTERN.match(text.strip())
    if not match:
        raise LabError(f"bad disk size {text!r}: use a number with an optional K, M, G or T suffix, e.g. 2G")
    number, unit = int(match.group(1)), match.group(2).upper()
    size = number << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]
    if size < 1 << 20:
        raise LabError(f"disk size {text!r} is below 1 MiB")
    return size


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise LabError(f"instance name {name!r} must match {NAME_PATTERN.pattern}")
    return name


def clean_console(text: str) -> str:
    """Serial output without terminal escapes and carriage returns, readable in an error message."""
    return _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def console_tail(path: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 256 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no console output: QEMU never opened the console log)"
    return tail_lines(clean_console(text), lines) or "(the console log is empty)"


@dataclasses.dataclass
class Instance:
    name: str
    variant: str
    state_dir: Path
    image: Path
    accel: str
    cpus: int
    memory_mib: int
    ssh_port: int
    ssh_key: Path
    console_log: Path
    pidfile: Path
    qmp_socket: Path
    overlays: list[Path]
    disks: list[dict[str, Any]]
    qemu_argv: list[str]
    pid: int | None = None
    pid_start_ticks: int | None = None
    started_at: float = 0.0
    boot_seconds: float | None = None
    status: str = "starting"

    @property
    def target(self) -> SshTarget:
        return SshTarget(self.ssh_port, self.ssh_key)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["overlays"] = [str(path) for path in self.overlays]
        data["ssh"] = {"host": self.target.host, "port": self.ssh_port, "user": self.target.user, "key": str(self.ssh_key)}
        # One entry of molecule's instance_config.yml, from which the delegated driver writes its SSH inventory.
        data["molecule_instance_config"] = {"instance": self.name, "address": self.target.host, "port": self.ssh_port,
                                            "user": self.target.user, "identity_file": str(self.ssh_key)}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instance:
        fields = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        for key in ("state_dir", "image", "ssh_key", "console_log", "pidfile", "qmp_socket"):
            values[key] = Path(values[key])
        values["overlays"] = [Path(path) for path in values["overlays"]]
        return cls(**values)

    def save(self) -> None:
        tmp = self.state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.state_dir / STATE_FILE)

    def alive(self) -> bool:
        return self.pid is not None and qemu.is_our_qemu(self.pid, self.pidfile, self.pid_start_ticks)


def load(state_dir: Path) -> Instance | None:
    try:
        return Instance.from_json(json.loads((state_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find(name: str, root: Path) -> Instance:
    inst = load(root / check_name(name))
    if inst is None:
        raise LabError(f"no lab instance {name!r} in {root}")
    return inst


def instances(root: Path) -> Iterator[Instance]:
    if root.is_dir():
        for directory in sorted(root.iterdir()):
            inst = load(directory) if directory.is_dir() and not directory.name.startswith(".") else None
            if inst is not None:
                yield inst


def our_qemu_pids(state_dir: Path) -> list[int]:
    """Every live QEMU whose -pidfile lies in `state_dir`: also finds one started just before a crash lost its pid."""
    prefix = str(state_dir) + os.sep
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        argv = qemu.read_cmdline(int(proc.name))
        if not argv or not os.path.basename(argv[0]).startswith("qemu-system") or "-pidfile" not in argv:
            continue
        position = argv.index("-pidfile") + 1
        if position < len(argv) and argv[position].startswith(prefix) and not qemu.is_zombie_or_gone(int(proc.name)):
            found.append(int(proc.name))
    return found


def teardown(state_dir: Path, keep_console_as: Path | None = None) -> None:
    """Stop every QEMU of this state directory (only ours, checked by /proc/PID/cmdline), then delete the directory."""
    for pid in our_qemu_pids(state_dir):
        argv = qemu.read_cmdline(pid) or []
        pidfile = Path(argv[argv.index("-pidfile") + 1]) if "-pidfile" in argv else state_dir / "qemu.pid"
        qemu.terminate(pid, pidfile, None)
    remaining = our_qemu_pids(state_dir)
    if remaining:
        raise LabError(f"QEMU processes {remaining} of {state_dir} survived teardown")
    if keep_console_as is not None and (state_dir / "console.log").is_file():
        keep_console_as.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state_dir / "console.log", keep_console_as)
    shutil.rmtree(state_dir, ignore_errors=True)
    if state_dir.exists():
        raise LabError(f"could not remove {state_dir}")


def _ports_of_instances(root: Path) -> set[int]:
    return {inst.ssh_port for inst in instances(root)}


def free_port(exclude: set[int]) -> int:
    """A port the kernel just handed out on 127.0.0.1; QEMU binds it moments later, under our port lock."""
    for _attempt in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise LabError("no free TCP port on 127.0.0.1")


def up(name: str, variant: str, *, root: Path | None = None, cache: Path | None = None, disks: list[str] | None = None,
       memory_mib: int = DEFAULT_MEMORY_MIB, cpus: int = DEFAULT_CPUS, boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
       accel: str | None = None, kernel_args: str = "") -> Instance:
    """Boot instance `name` from image `variant` and wait for SSH; on any failure nothing of it remains.

    `kernel_args` are appended to a direct-boot kernel command line (UEFI images boot what rEFInd's static
    configuration says).
    """
    check_name(name)
    sizes = [parse_size(size) for size in disks or []]
    cache = cache or cache_root()
    root = state_root(root, cache)
    state_dir = root / name
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".locks" / f"{name}.lock", f"instance {name}", timeout=boot_timeout + 600):
        existing = load(state_dir)
        if existing is not None and existing.alive():
            raise LabError(f"instance {name} is already running (pid {existing.pid}, ssh port {existing.ssh_port}); "
                           f"run `labctl down {name}` first")
        if state_dir.exists():
            note(f"removing leftovers of an earlier {name} in {state_dir}")
            teardown(state_dir)
        image = images.ensure_image(variant, cache=cache)
        if kernel_args and image.boot != "direct":
            raise LabError(f"--kernel-args needs a direct-boot image; {variant} boots through rEFInd")
        accel = accel or kvm.choose_accel(image, cache)
        key = sshkey.ensure_key(cache)
        require_tools([qemu.QEMU, "qemu-img"])
        state_dir.mkdir()
        try:
            inst = _start(name, image, state_dir, root, key, sizes, memory_mib, cpus, accel, kernel_args)
            inst.boot_seconds = round(wait_ssh(inst, boot_timeout), 1)
            inst.status = "running"
            inst.save()
            note(f"{name}: SSH answered {inst.boot_seconds} s after QEMU started ({accel}, {variant})")
            return inst
        except BaseException:
            failed_console = root / ".failed" / f"{name}.console.log"
            teardown(state_dir, keep_console_as=failed_console)
            raise


def _start(name: str, image: images.Image, state_dir: Path, root: Path, key: Path, sizes: list[int], memory_mib: int,
           cpus: int, accel: str, kernel_args: str) -> Instance:
    overlay = state_dir / "overlay.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "qcow2", str(overlay)], timeout=60)
    drives = [qemu.Drive(overlay, "lab-root")]
    disk_info = []
    for number, size in enumerate(sizes, 1):
        path = state_dir / f"disk-{number}.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], timeout=60)
        serial = f"lab-disk-{number}"
        drives.append(qemu.Drive(path, serial))
        disk_info.append({"path": str(path), "size_bytes": size, "serial": serial, "by_id": f"/dev/disk/by-id/virtio-{serial}"})
    overlays = [drive.path for drive in drives]
    boot: qemu.DirectBoot | qemu.UefiBoot
    if image.boot == "direct" and image.kernel and image.initrd:
        boot = qemu.DirectBoot(image.kernel, image.initrd, " ".join(filter(None, [image.root_args, guest.KERNEL_TUNING, kernel_args])))
    else:
        if not qemu.OVMF_CODE.is_file() or not qemu.OVMF_VARS.is_file():
            raise LabError(f"UEFI firmware {qemu.OVMF_CODE} is missing: install the Debian package ovmf")
        shutil.copyfile(qemu.OVMF_VARS, state_dir / "vars.fd")
        overlays.append(state_dir / "vars.fd")
        boot = qemu.UefiBoot(qemu.OVMF_CODE, state_dir / "vars.fd")
    with locked(root / ".locks" / "ports.lock", "an SSH port", timeout=300):
        for attempt in range(1, PORT_ATTEMPTS + 1):
            cfg = qemu.VmConfig(name=name, accel=accel, cpus=cpus, memory_mib=memory_mib, boot=boot, drives=tuple(drives),
                                ssh_port=free_port(_ports_of_instances(root)), console_log=state_dir / "console.log",
                                pidfile=state_dir / "qemu.pid", qmp_socket=state_dir / "qmp.sock")
            inst = Instance(name=name, variant=image.variant, state_dir=state_dir, image=image.path, accel=accel, cpus=cpus,
                            memory_mib=memory_mib, ssh_port=int(cfg.ssh_port or 0), ssh_key=key, console_log=cfg.console_log,
                            pidfile=cfg.pidfile, qmp_socket=state_dir / "qmp.sock", overlays=overlays, disks=disk_info,
                            qemu_argv=qemu.qemu_argv(cfg))
            inst.save()
            try:
                # -daemonize: QEMU returns once the VM is set up (port bound, files open) or with its error.
                run(inst.qemu_argv, timeout=120, what=f"starting QEMU for {name}")
                break
            except CommandFailed as exc:
                # Another program may take the port between our check and QEMU's bind.
                if "host forwarding" not in exc.tail or attempt == PORT_ATTEMPTS:
                    raise
    inst.pid = int(inst.pidfile.read_text().strip())
    inst.pid_start_ticks = qemu.start_ticks(inst.pid)
    inst.started_at = time.time()
    inst.status = "booting"
    inst.save()
    return inst


def wait_ssh(inst: Instance, timeout: float, previous_boot: str | None = None) -> float:
    """Seconds until sshd in the guest accepts our key (in a new boot, if `previous_boot` is given).

    Fails early when QEMU exits or the guest kernel panics, else after `timeout`; the error carries the console tail.
    """
    started = time.monotonic()
    deadline = started + timeout
    console_start = inst.console_log.stat().st_size if inst.console_log.exists() else 0
    login_error = ""
    while True:
        if not inst.alive():
            raise BootFailed(f"{inst.name}: QEMU (pid {inst.pid}) exited before SSH answered",
                             console_tail(inst.console_log), str(inst.console_log))
        if _console_since(inst.console_log, console_start, PANIC_MARKERS):
            raise BootFailed(f"{inst.name}: the guest kernel panicked", console_tail(inst.console_log), str(inst.console_log))
        if banner_ready(inst.ssh_port):
            result = run_in_guest(inst.target, ["cat", "/proc/sys/kernel/random/boot_id"],
                                  timeout=max(5.0, min(30.0, deadline - time.monotonic())))
            current = result.stdout.strip() if result.returncode == 0 else ""
            if current and current != previous_boot:
                return time.monotonic() - started
            login_error = result.stderr.strip()
        if time.monotonic() > deadline:
            detail = f"; sshd answered but the login failed: {login_error}" if login_error else ""
            raise BootFailed(f"{inst.name}: no SSH answer within {timeout:.0f} s (port {inst.ssh_port}, {inst.accel}){detail}",
                             console_tail(inst.console_log), str(inst.console_log))
        time.sleep(1.0)


def _console_since(path: Path, offset: int, markers: tuple[str, ...]) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return False
    return any(marker in text for marker in markers)


def reboot(inst: Instance, timeout: float = DEFAULT_BOOT_TIMEOUT) -> float:
    """Reboot from inside (`reboot`); seconds until SSH answers in the new boot."""
    old = boot_id(inst.target)
    if old is None:
        raise LabError(f"{inst.name} does not answer SSH, so it cannot reboot itself; try power-cycle")
    started = time.monotonic()
    # /sbin/reboot is systemctl under systemd and sysvinit's (shutdown -r, runlevel 6 -> OpenRC) in the OpenRC guest.
    run_in_guest(inst.target, ["reboot"], timeout=30)  # the connection may drop: exit status ignored
    wait_ssh(inst, timeout, previous_boot=old)
    return time.monotonic() - started


def power_cycle(inst: Instance, timeout: float = DEFAULT_BOOT_TIMEOUT) -> float:
    """Hard reset from the host (QMP system_reset: like the reset button, the guest gets no warning)."""
    if not inst.alive():
        raise LabError(f"{inst.name} is not running")
    old = boot_id(inst.target, timeout=10)
    started = time.monotonic()
    qemu.qmp(inst.qmp_socket, "system_reset")
    wait_ssh(inst, timeout, previous_boot=old)
    return time.monotonic() - started


def down(name: str, root: Path) -> bool:
    """Stop and delete instance `name`; False if there was nothing to remove."""
    state_dir = root / check_name(name)
    if not state_dir.exists() and not our_qemu_pids(state_dir):
        return False
    teardown(state_dir)
    return True
