# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""labctl: build cached Debian images and run lab VMs with QEMU.

    python3 molecule/lab/labctl.py build ext4                       # or split-usr, split-usr-sepusr, btrfs-uefi,
                                                                    #    btrfs-uefi-openrc (OpenRC as init),
                                                                    #    ext4-trixie (systemd 257, dracut initrd)
    python3 molecule/lab/labctl.py tree minbase                     # host-test trees: minbase, split-usr
    python3 molecule/lab/labctl.py up box1 --variant ext4 --disk 2G # prints the instance as JSON
    python3 molecule/lab/labctl.py ssh box1 -- systemctl is-system-running   # OpenRC guest: rc-status
    python3 molecule/lab/labctl.py reboot box1
    python3 molecule/lab/labctl.py power-cycle box1
    python3 molecule/lab/labctl.py list
    python3 molecule/lab/labctl.py down box1
    python3 molecule/lab/labctl.py cache [list|prune]              # prune: entries superseded by a newer key

Cache: ${IMMUTABLE_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/immutable-root}; instance state: --state-dir, else
$IMMUTABLE_LAB_STATE, else <cache>/instances.  $IMMUTABLE_LAB_ACCEL=tcg|kvm skips the KVM probe.
Progress goes to stderr, results (JSON, paths) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from vmlab import housekeeping, images, instance, kvm, rootfs
from vmlab.cache import cache_root
from vmlab.errors import LabError
from vmlab.guestssh import ssh_argv

TREES = {"minbase": rootfs.MINBASE_TREE, "split-usr": rootfs.SPLIT_USR_TREE}


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (e.g. from a timing-out Ansible task) must unwind through `finally` so a booting VM is torn down.
    raise SystemExit(128 + signum)


def _emit(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def cmd_build(args: argparse.Namespace) -> int:
    result = {}
    for name in args.variants:
        image = images.ensure_image(name, cache=args.cache_dir)
        meta = json.loads((image.path / images.IMAGE_FILE).read_text())
        result[name] = {"path": str(image.path), "disk": str(image.disk), "boot": image.boot,
                        "disk_bytes": image.disk.stat().st_size, "entry_bytes_on_disk": _disk_usage(image.path),
                        "build_seconds": meta.get("build_seconds")}
    _emit(result)
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    result = {}
    for name in args.trees:
        tarball = rootfs.ensure_tree(TREES[name], cache=args.cache_dir)
        meta = json.loads((tarball.parent / "tree.json").read_text())
        result[name] = {"tarball": str(tarball), "bytes": tarball.stat().st_size, "build_seconds": meta.get("build_seconds")}
    _emit(result)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    inst = instance.up(args.name, args.variant, root=args.state_dir, cache=args.cache_dir, disks=args.disk,
                       memory_mib=args.memory, cpus=args.cpus, boot_timeout=args.boot_timeout, accel=args.accel,
                       kernel_args=args.kernel_args)
    _emit(inst.to_json())
    return 0


def _root(args: argparse.Namespace) -> Path:
    return instance.state_root(args.state_dir, args.cache_dir)


def cmd_wait_ssh(args: argparse.Namespace) -> int:
    seconds = instance.wait_ssh(instance.find(args.name, _root(args)), args.timeout)
    _emit({"name": args.name, "seconds": round(seconds, 1)})
    return 0


def cmd_reboot(args: argparse.Namespace) -> int:
    inst = instance.find(args.name, _root(args))
    seconds = instance.power_cycle(inst, args.timeout) if args.command == "power-cycle" else instance.reboot(inst, args.timeout)
    _emit({"name": args.name, "action": args.command, "seconds": round(seconds, 1)})
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    root = _root(args)
    names = [inst.name for inst in instance.instances(root)] if args.all else args.names
    if not names and not args.all:
        raise LabError("name an instance, or use --all")
    _emit({name: ("removed" if instance.down(name, root) else "absent") for name in names})
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = [{"name": inst.name, "variant": inst.variant, "status": inst.status if inst.alive() else "dead",
             "pid": inst.pid, "ssh_port": inst.ssh_port, "state_dir": str(inst.state_dir)} for inst in instance.instances(_root(args))]
    if args.json:
        _emit(rows)
    else:
        for row in rows:
            sys.stdout.write("{name:20} {variant:17} {status:8} pid={pid} port={ssh_port} {state_dir}\n".format(**row))
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    inst = instance.find(args.name, _root(args))
    command = args.remote[1:] if args.remote[:1] == ["--"] else args.remote
    # Like ssh itself: the words are joined with spaces for the guest's shell, so `-- 'a; b'` works.
    argv = ssh_argv(inst.target, " ".join(command) or None)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 0  # not reached: exec replaced this process


def cmd_kvm_probe(args: argparse.Namespace) -> int:
    image = images.ensure_image(args.variant, cache=args.cache_dir)
    result = kvm.verdict(image, args.cache_dir, force=args.force)
    _emit({"boot": image.boot, "usable": result.usable, "reason": result.reason, "seconds": result.seconds,
           "fingerprint": result.fingerprint})
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    if args.action == "prune":
        _emit({"removed": [str(path) for path in housekeeping.prune(args.cache_dir)]})
        return 0
    _emit([{"kind": info.kind, "name": info.name, "status": info.status, "bytes_on_disk": info.bytes_on_disk,
            "path": str(info.path)} for info in housekeeping.entries(args.cache_dir)])
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="labctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--cache-dir", type=Path, default=None, help="cache root (default: %(default)s -> see above)")
    top.add_argument("--state-dir", type=Path, default=None, help="directory holding instance state")
    sub = top.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build (or verify) cached images")
    build.add_argument("variants", nargs="+", choices=sorted(images.VARIANTS))
    build.set_defaults(func=cmd_build)

    tree = sub.add_parser("tree", help="build (or verify) cached Debian trees for host tests")
    tree.add_argument("trees", nargs="+", choices=sorted(TREES))
    tree.set_defaults(func=cmd_tree)

    start = sub.add_parser("up", help="boot an instance and wait for SSH; prints the instance JSON")
    start.add_argument("name")
    start.add_argument("--variant", default="ext4", choices=sorted(images.VARIANTS))
    start.add_argument("--disk", action="append", default=[], metavar="SIZE", help="extra blank disk, e.g. 2G (repeatable)")
    start.add_argument("--memory", type=int, default=instance.DEFAULT_MEMORY_MIB, metavar="MIB")
    start.add_argument("--cpus", type=int, default=instance.DEFAULT_CPUS)
    start.add_argument("--boot-timeout", type=float, default=instance.DEFAULT_BOOT_TIMEOUT, metavar="SECONDS")
    start.add_argument("--accel", choices=("tcg", "kvm"), default=None, help="skip the KVM probe")
    start.add_argument("--kernel-args", default="", help="appended to the kernel command line (direct-boot images)")
    start.set_defaults(func=cmd_up)

    for name, helptext in (("wait-ssh", "wait until SSH answers"), ("reboot", "reboot from inside, wait for SSH"),
                           ("power-cycle", "hard reset from the host, wait for SSH")):
        action = sub.add_parser(name, help=helptext)
        action.add_argument("name")
        action.add_argument("--timeout", type=float, default=instance.DEFAULT_BOOT_TIMEOUT, metavar="SECONDS")
        action.set_defaults(func=cmd_wait_ssh if name == "wait-ssh" else cmd_reboot)

    stop = sub.add_parser("down", help="stop instances and delete their overlays and state")
    stop.add_argument("names", nargs="*")
    stop.add_argument("--all", action="store_true")
    stop.set_defaults(func=cmd_down)

    listing = sub.add_parser("list", help="list instances")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    shell = sub.add_parser("ssh", help="ssh into an instance: labctl ssh NAME [-- COMMAND...]")
    shell.add_argument("name")
    shell.add_argument("remote", nargs=argparse.REMAINDER)
    shell.set_defaults(func=cmd_ssh)

    housekeeping_cmd = sub.add_parser("cache", help="list cache entries, or prune the ones a newer key superseded")
    housekeeping_cmd.add_argument("action", choices=("list", "prune"), nargs="?", default="list")
    housekeeping_cmd.set_defaults(func=cmd_cache)

    probe = sub.add_parser("kvm-probe", help="show (or with --force redo) the cached KVM verdict")
    probe.add_argument("--variant", default="ext4", choices=sorted(images.VARIANTS))
    probe.add_argument("--force", action="store_true")
    probe.set_defaults(func=cmd_kvm_probe)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.cache_dir = args.cache_dir or cache_root()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    try:
        return int(args.func(args))
    except LabError as exc:
        sys.stderr.write(f"labctl: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("labctl: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
