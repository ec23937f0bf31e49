# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Power cuts inside lab VMs, at every step boundary of an operation (`make powercut`).

A module run is traced once to list its step boundaries; then, for each boundary, the same operation runs with the
machine reset there (IMMUTABLE_ROOT_RESET_AT, sysrq b: nothing synced, nothing unmounted - what a power cut
leaves), the VM boots whatever its disk holds, the invariants are checked from inside, and a rerun of the operation
must finish the job. Each campaign prints its counts: boundaries, resets, boots that came up, invariants held.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import typing as t

import pytest

from support.modules import collections_path
from vmlab import instance
from vmlab.guestssh import boot_id, run_in_guest

pytestmark = [pytest.mark.vm, pytest.mark.powercut]

REPO = pathlib.Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 900.0
PLAY_TIMEOUT = 1800.0
TRACE = "/run/powercut-trace"  # on tmpfs: the converted root is read-only
# ansible-playbook's exit status when a host became unreachable: the reset, not a failure of the operation.
UNREACHABLE = 4


@dataclasses.dataclass
class Counts:
    boundaries: int = 0
    resets: int = 0
    boots: int = 0
    invariants_held: int = 0
    reruns_converged: int = 0

    def line(self, campaign: str) -> str:
        return ("powercut %s: %d boundaries, %d resets, %d boots came up, invariants held %d/%d, reruns converged %d/%d"
                % (campaign, self.boundaries, self.resets, self.boots, self.invariants_held, self.resets,
                   self.reruns_converged, self.resets))


class Lab:
    """One lab VM and the ansible-playbook runs against it."""

    def __init__(self, inst: instance.Instance, workdir: pathlib.Path) -> None:
        self.inst = inst
        self.workdir = workdir
        self.inventory = workdir / "inventory.json"
        target = inst.target
        host = {"ansible_host": target.host, "ansible_port": target.port, "ansible_user": target.user,
                "ansible_ssh_private_key_file": str(target.key), "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                           "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"}
        self.inventory.write_text(json.dumps({"lab": {"hosts": {inst.name: host}}}))

    def playbook(self, name: str, plays: list[dict[str, t.Any]]) -> pathlib.Path:
        path = self.workdir / ("%s.yml" % name)
        path.write_text(json.dumps(plays, indent=1))  # JSON is YAML
        return path

    def play(self, playbook: pathlib.Path, extra: dict[str, t.Any] | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="True")
        argv = [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory), str(playbook)]
        if extra:
            argv += ["--extra-vars", json.dumps(extra)]
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=PLAY_TIMEOUT, check=False)

    def play_ok(self, playbook: pathlib.Path, extra: dict[str, t.Any] | None = None) -> str:
        result = self.play(playbook, extra)
        assert result.returncode == 0, "%s exited %d\n%s\n%s" % (
            playbook.name, result.returncode, result.stdout[-6000:], result.stderr[-2000:])
        return result.stdout

    def sh(self, script: str, timeout: float = 300.0) -> str:
        result = run_in_guest(self.inst.target, ["sh", "-euc", script], timeout)
        assert result.returncode == 0, "%r failed in the guest: %s" % (script, result.stderr)
        return result.stdout.strip()

    def trace(self, playbook: pathlib.Path, extra: dict[str, t.Any]) -> list[str]:
        """Run the operation once with the step trace on; the boundaries it passed, in order."""
        self.sh("rm -f %s" % TRACE)
        self.play_ok(playbook, dict(extra, powercut_env={"IMMUTABLE_ROOT_STEP_TRACE": TRACE}))
        lines = self.sh("cat %s" % TRACE).splitlines()
        return [line.split(" ", 1)[1] for line in lines]

    def cut(self, playbook: pathlib.Path, extra: dict[str, t.Any], boundary: int, counts: Counts) -> None:
        """The operation with the machine reset at `boundary`; returns once the VM answers in a new boot."""
        before = boot_id(self.inst.target)
        result = self.play(playbook, dict(extra, powercut_env={"IMMUTABLE_ROOT_RESET_AT": str(boundary)}))
        assert result.returncode == UNREACHABLE, "reset at boundary %d: ansible-playbook exited %d, not %d\n%s" % (
            boundary, result.returncode, UNREACHABLE, result.stdout[-4000:])
        counts.resets += 1
        instance.wait_ssh(self.inst, BOOT_TIMEOUT, previous_boot=before)
        counts.boots += 1


def module_play(task: dict[str, t.Any], gather: bool = False) -> list[dict[str, t.Any]]:
    """One play running one module task, with the environment the campaign passes in (trace or reset)."""
    return [{"name": "powercut operation", "hosts": "lab", "gather_facts": gather,
             "environment": "{{ powercut_env | default({}) }}", "tasks": [task]}]


@pytest.fixture
def lab_factory(state_root: pathlib.Path, tmp_path: pathlib.Path) -> t.Iterator[t.Callable[[str, str], Lab]]:
    started: list[str] = []

    def start(name: str, variant: str) -> Lab:
        inst = instance.up(name, variant, root=state_root, boot_timeout=BOOT_TIMEOUT)
        started.append(name)
        workdir = tmp_path / name
        workdir.mkdir()
        return Lab(inst, workdir)

    yield start
    for name in started:
        instance.down(name, state_root)


# --- btrfs_generation state=current on the btrfs-uefi VM, booted through rEFInd from /current/N/@ -------------------

ALPINE_SCENARIO = REPO / "molecule" / "alpine_atomic_root"
BOOT_FILES = ["/vmlinuz", "/initrd.img"]


def booted_and_current(lab: Lab) -> tuple[str, str]:
    """The generation the running root is (from its mount source) and the one `current` names (through the links)."""
    booted = lab.sh("findmnt -no FSROOT / | sed -n 's#^/snapshots/\\([^/]*\\)/@$#\\1#p'")
    current = lab.sh("top=$(mktemp -d); mount -o subvolid=5 /dev/disk/by-partlabel/ROOT \"$top\";"
                     " readlink \"$top/current/0\" | sed -n 's#^.*/snapshots/\\([^/]*\\)$#\\1#p';"
                     " umount \"$top\"; rmdir \"$top\"")
    return booted, current


def test_power_cut_at_every_boundary_of_the_current_switch(lab_factory: t.Callable[[str, str], Lab]) -> None:
    lab = lab_factory("pc-btrfs", "btrfs-uefi")
    prepare = ALPINE_SCENARIO / "prepare.yml"
    lab.play_ok(prepare)
    convert = lab.playbook("convert", [{
        "name": "convert", "hosts": "lab", "gather_facts": False,
        "vars_files": [str(ALPINE_SCENARIO / "vars" / "lab.yml")],
        "roles": ["immutable.root.alpine_atomic_root"]}])
    lab.play_ok(convert)
    first, current = booted_and_current(lab)
    assert first and first == current, (first, current)
    second = "powercut-second"
    lab.play_ok(lab.playbook("second", module_play({"immutable.root.btrfs_generation": {
        "device": "/dev/disk/by-partlabel/ROOT", "state": "present", "name": second, "from": first}})))
    switch = lab.playbook("switch", module_play({"immutable.root.btrfs_generation": {
        "device": "/dev/disk/by-partlabel/ROOT", "state": "current", "name": "{{ powercut_target }}", "slots": 4,
        "boot_files": BOOT_FILES}}))

    # current alternates between the two generations: each operation switches to the one it does not name.
    boundaries = lab.trace(switch, {"powercut_target": second})
    assert any(name == "btrfs_generation.switch.renamed" for name in boundaries), boundaries
    counts = Counts(boundaries=len(boundaries))
    problems: list[str] = []
    for number, name in enumerate(boundaries, start=1):
        old = booted_and_current(lab)[1]
        new = first if old == second else second
        lab.cut(switch, {"powercut_target": new}, number, counts)
        booted, current = booted_and_current(lab)
        state = lab.sh("systemctl is-system-running --wait || true")
        held = booted in (old, new) and current in (old, new) and state in ("running", "degraded")
        # Before the rename, nothing may point at the new generation yet.
        if number < boundaries.index("btrfs_generation.switch.renamed") + 1:
            held = held and booted == old and current == old
        if held:
            counts.invariants_held += 1
        else:
            problems.append("boundary %d (%s): booted %r, current %r, system %s (old %s, new %s)"
                            % (number, name, booted, current, state, old, new))
        lab.play_ok(switch, {"powercut_target": new})
        after_rerun = booted_and_current(lab)[1]
        if after_rerun == new:
            counts.reruns_converged += 1
        else:
            problems.append("boundary %d (%s): the rerun left current at %s" % (number, name, after_rerun))
    print(counts.line("btrfs_generation state=current"))
    assert problems == [], "\n".join(problems)


# --- usrmerge_symlinks on the split-usr VM: a fresh VM for each cut, since a rerun merges it ----------------------

MERGED = "for d in bin sbin lib lib64; do printf '%s=%s\\n' \"$d\" \"$(readlink /$d || echo dir)\"; done"
MERGED_EXPECTED = "bin=usr/bin\nsbin=usr/sbin\nlib=usr/lib\nlib64=usr/lib64"


def sample(boundaries: list[str]) -> list[int]:
    """The first and the last boundary of each kind (its name up to the path it acted on), 1-based and in order.

    A merge passes one boundary per moved entry (hundreds); a cut costs two boots, so one VM per boundary of each
    kind where it starts and where it ends stands for the rest of its kind.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for number, name in enumerate(boundaries, start=1):
        kind = name.split(" ", 1)[0]
        first.setdefault(kind, number)
        last[kind] = number
    return sorted(set(first.values()) | set(last.values()))


def test_power_cut_at_each_kind_of_boundary_of_the_usr_merge(lab_factory: t.Callable[[str, str], Lab]) -> None:
    merge = module_play({"immutable.root.usrmerge_symlinks": {}, "register": "powercut_merge"})
    traced = lab_factory("pc-usr-trace", "split-usr")
    boundaries = traced.trace(traced.playbook("merge", merge), {})
    assert traced.sh(MERGED) == MERGED_EXPECTED
    chosen = sample(boundaries)
    counts = Counts(boundaries=len(boundaries))
    problems: list[str] = []
    for number in chosen:
        lab = lab_factory("pc-usr-%d" % number, "split-usr")
        playbook = lab.playbook("merge", merge)
        lab.cut(playbook, {}, number, counts)
        state = lab.sh("systemctl is-system-running --wait || true")
        if state in ("running", "degraded"):
            counts.invariants_held += 1
        else:
            problems.append("boundary %d (%s): the system is %s after the cut" % (number, boundaries[number - 1], state))
        lab.play_ok(playbook)
        again = lab.play_ok(playbook)
        if lab.sh(MERGED) == MERGED_EXPECTED and "changed=0" in again:
            counts.reruns_converged += 1
        else:
            problems.append("boundary %d (%s): the rerun left %r" % (number, boundaries[number - 1], lab.sh(MERGED)))
        instance.down(lab.inst.name, lab.inst.state_dir.parent)
    print(counts.line("usrmerge_symlinks (cut at %d of %d boundaries: %s)" % (len(chosen), len(boundaries), chosen)))
    assert problems == [], "\n".join(problems)


# --- sysext_merge and the arch_sysext pacman lock on the ext4 VM, the role converged ---------------------------------

ARCH_SCENARIO = REPO / "molecule" / "arch_sysext"
LOCK_UNIT = "/etc/systemd/system/var-lib-pacman.mount"
# One line per fact: the extension visible in /usr, the lock's mount options, its unit's load state and enablement,
# the options of every mount on /usr (the root and the overlay; "ro" when all are read-only).
SYSEXT_STATE = ("echo merged=$(test -e /usr/lib/extension-release.d/extension-release.hello-sysext && echo yes || echo no);"
                " echo lock=$(findmnt -n -o OPTIONS --mountpoint /var/lib/pacman | cut -d, -f1);"
                " echo unit=$(test -e %s && systemctl show -P LoadState var-lib-pacman.mount || echo none);"
                " echo enabled=$(systemctl is-enabled var-lib-pacman.mount 2>/dev/null || true);"
                " echo usr=$(findmnt -n -o OPTIONS --target /usr | cut -d, -f1 | sort -u | paste -sd,);"
                " echo system=$(systemctl is-system-running --wait || true)" % LOCK_UNIT)


def sysext_state(lab: Lab) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lab.sh(SYSEXT_STATE).splitlines())


def lock_consistent(state: dict[str, str]) -> bool:
    """Seed 000's hard block after a boot: with the lock's unit enabled, merged exactly when locked, and a unit
    systemd can load; with no unit or one not enabled (a cut between writing and enabling it, or between disabling
    and removing it: the boot sees the state before or after the operation), no lock at all. /usr is read-only
    either way and the boot came up."""
    if state["enabled"] == "enabled":
        locked_right = state["unit"] == "loaded" and (state["merged"] == "yes") == (state["lock"] == "ro")
    else:
        locked_right = state["lock"] == ""
    return locked_right and state["usr"] == "ro" and state["system"] in ("running", "degraded")


def test_power_cut_at_every_boundary_of_the_merge_and_the_lock(lab_factory: t.Callable[[str, str], Lab]) -> None:
    lab = lab_factory("pc-sysext", "ext4")
    lab.play_ok(lab.playbook("converge", [{
        "name": "converge", "hosts": "lab", "gather_facts": False,
        "tasks": [
            {"name": "pacman database", "ansible.builtin.command": {"cmd": "pacman -Q", "creates": "/var/lib/pacman/local"},
             "register": "init", "failed_when": "init.rc not in [0, 1]"},
            {"name": "role", "ansible.builtin.include_role": {"name": "immutable.root.arch_sysext"},
             "vars": {"arch_sysext_extensions": [{"name": "hello-sysext",
                                                  "pkgbuild": str(ARCH_SCENARIO / "files" / "hello-sysext")}]}}]}]))
    converged = sysext_state(lab)
    assert lock_consistent(converged) and converged["merged"] == "yes", converged
    # Each operation in both directions; every cut starts from the state its direction leaves.
    operations = {
        "ro_bind lock": (lab.playbook("lock", module_play({"immutable.root.ro_bind": {
            "path": "/var/lib/pacman", "persist": "systemd", "bound_to": "systemd-sysext.service",
            "state": "{{ powercut_state }}"}})), ("absent", "present")),
        "sysext_merge": (lab.playbook("merge", module_play({"immutable.root.sysext_merge": {
            "state": "{{ powercut_state }}", "hierarchies": ["/usr"]}})), ("unmerged", "merged")),
    }
    counts = Counts()
    problems: list[str] = []
    for label, (playbook, states) in operations.items():
        for start, goal in (states, states[::-1]):
            lab.play_ok(playbook, {"powercut_state": start})
            boundaries = lab.trace(playbook, {"powercut_state": goal})
            counts.boundaries += len(boundaries)
            for number, name in enumerate(boundaries, start=1):
                where = "%s %s -> %s, boundary %d (%s)" % (label, start, goal, number, name)
                lab.play_ok(playbook, {"powercut_state": start})
                lab.cut(playbook, {"powercut_state": goal}, number, counts)
                state = sysext_state(lab)
                if lock_consistent(state):
                    counts.invariants_held += 1
                else:
                    problems.append("%s: after the boot %s" % (where, state))
                lab.play_ok(playbook, {"powercut_state": goal})
                if "changed=0" in lab.play_ok(playbook, {"powercut_state": goal}):
                    counts.reruns_converged += 1
                else:
                    problems.append("%s: the rerun did not converge" % where)
    print(counts.line("sysext_merge and the arch_sysext lock"))
    assert problems == [], "\n".join(problems)
