# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Is KVM usable here?  A short test boot decides, once per host and boot kind; the verdict is cached.

/dev/kvm on this machine kind is kvm_pvm, a software hypervisor that needs a PVM guest kernel: a stock Debian
kernel sits in its decompressor for minutes and OVMF dies early (field notes, "QEMU on this machine kind").
So a file's presence proves nothing; only reaching a console marker within a bound does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from vmlab import qemu
from vmlab.cache import locked
from vmlab.errors import LabError
from vmlab.images import Image
from vmlab.run import note, run, spawn

PROBE_TIMEOUT = 30.0
# Direct boot: the kernel has decompressed itself and starts the initramfs (under real KVM in about 1 s).
# UEFI: OVMF's boot manager has started (it prints BdsDxe lines or enters its shell with no disk attached).
MARKERS = {"direct": ("Run /init as init process",), "uefi": ("BdsDxe", "Shell>", "UEFI Interactive Shell")}
ENV_OVERRIDE = "IMMUTABLE_LAB_ACCEL"


@dataclasses.dataclass(frozen=True)
class Verdict:
    usable: bool
    reason: str
    seconds: float
    fingerprint: dict[str, object]


def host_fingerprint() -> dict[str, object]:
    """What a verdict depends on; a change (new kernel, kvm module, QEMU) triggers a new probe."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    version = run([qemu.QEMU, "--version"], timeout=30).splitlines()[0] if shutil.which(qemu.QEMU) else "none"
    return {
        "kernel": os.uname().release,
        "kvm_modules": sorted(p.name for p in Path("/sys/module").glob("kvm*")),
        "cpu_virtualization": sorted(flags & {"vmx", "svm"}),
        "qemu": version,
    }


def choose_accel(image: Image, cache: Path) -> str:
    """"kvm" or "tcg" for booting `image`; $IMMUTABLE_LAB_ACCEL overrides the probe."""
    forced = os.environ.get(ENV_OVERRIDE, "").strip()
    if forced:
        if forced not in ("tcg", "kvm"):
            raise LabError(f"{ENV_OVERRIDE} must be 'tcg' or 'kvm', not {forced!r}")
        return forced
    return "kvm" if verdict(image, cache).usable else "tcg"


def verdict(image: Image, cache: Path, force: bool = False) -> Verdict:
    """The cached verdict for this host and boot kind, probing first (one prober at a time) when there is none."""
    with locked(cache / "locks" / f"kvm-probe-{image.boot}.lock", "the KVM probe", timeout=PROBE_TIMEOUT * 10):
        return _cached_or_probed(image, cache, force)


def _cached_or_probed(image: Image, cache: Path, force: bool) -> Verdict:
    path = cache / "kvm" / f"verdict-{image.boot}.json"
    fingerprint = host_fingerprint()
    if not force and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("fingerprint") == fingerprint:
                return Verdict(bool(data["usable"]), str(data["reason"]), float(data["seconds"]), fingerprint)
        except (ValueError, KeyError):
            pass  # unreadable: probe again
    result = probe(image, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    os.replace(tmp, path)
    note(f"KVM probe ({image.boot} boot): {'usable' if result.usable else 'not usable'} - {result.reason}")
    return result


def probe(image: Image, fingerprint: dict[str, object]) -> Verdict:
    started = time.monotonic()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Verdict(False, "/dev/kvm is missing or not accessible", 0.0, fingerprint)
    with tempfile.TemporaryDirectory(prefix="lab-kvm-probe-") as tmp:
        work = Path(tmp)
        boot: qemu.DirectBoot | qemu.UefiBoot
        if image.boot == "direct" and image.kernel and image.initrd:
            boot = qemu.DirectBoot(image.kernel, image.initrd, "console=ttyS0 panic=-1")
        else:
            shutil.copyfile(qemu.OVMF_VARS, work / "vars.fd")
            boot = qemu.UefiBoot(qemu.OVMF_CODE, work / "vars.fd")
        cfg = qemu.VmConfig(name="kvm-probe", accel="kvm", cpus=1, memory_mib=512, boot=boot, drives=(), ssh_port=None,
                            console_log=work / "console.log", pidfile=work / "qemu.pid", qmp_socket=None, daemonize=False)
        argv = [*qemu.qemu_argv(cfg), "-no-reboot"]
        markers = MARKERS[image.boot]
        note(f"probing KVM with a {PROBE_TIMEOUT:.0f} s test boot ({image.boot})")
        proc = spawn(argv, log=work / "qemu.log")
        try:
            reason = _watch(proc, work / "console.log", work / "qemu.log", markers)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        elapsed = round(time.monotonic() - started, 1)
        if reason is None:
            return Verdict(True, f"reached {markers[0]!r} in {elapsed} s", elapsed, fingerprint)
        qemu_output = (work / "qemu.log").read_text(errors="replace").strip().splitlines()[-3:]
        return Verdict(False, reason + (f"; QEMU said: {' | '.join(qemu_output)}" if qemu_output else ""), elapsed, fingerprint)


def _watch(proc: subprocess.Popen[bytes], console: Path, qemu_log: Path, markers: tuple[str, ...]) -> str | None:
    """None once a marker shows on the console, else why not."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    while time.monotonic() < deadline:
        text = console.read_text(errors="replace") if console.exists() else ""
        if any(marker in text for marker in markers):
            return None
        if proc.poll() is not None:
            return f"QEMU exited with rc {proc.returncode} before the console showed {markers[0]!r}"
        # On an internal error QEMU pauses the VM instead of exiting; waiting longer cannot help.
        if "KVM internal error" in qemu_log.read_text(errors="replace"):
            return "KVM internal error"
        time.sleep(0.5)
    return f"no {markers[0]!r} on the console within {PROBE_TIMEOUT:.0f} s"
