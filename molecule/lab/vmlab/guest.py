# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What runs inside a lab VM: the Debian trees it is made from and the files that make it a lab machine.

Measured on this machine kind (field notes, "QEMU on this machine kind"): under TCG every unit costs seconds,
so the guest is trimmed to what Ansible over SSH needs.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path

from vmlab.errors import LabError
from vmlab.rootfs import TreeSpec

HOSTNAME = "lab"
PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "zstd", "systemd-sysv", "udev", "dbus", "openssh-server", "python3",
    "btrfs-progs", "e2fsprogs", "pacman-package-manager", "iproute2", "procps",
    # The Arch design inside the VM: packages built by makepkg (as nobody, with fakeroot), turned into squashfs or
    # erofs extension images by sysext_build (bsdtar unpacks the packages).
    "makepkg", "fakeroot", "squashfs-tools", "erofs-utils", "libarchive-tools",
)
# MODULES=most gives a 37 MB initrd: ~9 s to unpack under TCG and slow to load through rEFInd's btrfs driver.
# The listed modules (with their dependencies) give ~8 MB and boot ext4 and btrfs roots on virtio disks.
# crc32c_generic is a soft dependency of ext4 and btrfs that module dependency resolution does not follow.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "ext4", "btrfs", "crc32c_generic")
INITRAMFS_MODULES_HOOK = f"""#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules {" ".join(INITRAMFS_MODULES)}
"""


def write_file_hook(relative: str, content: str, mode: int) -> str:
    """A tree hook (shell, "$1" is the tree) that writes one file."""
    path = f'"$1/{relative}"'
    return (f'mkdir -p "$(dirname {path})" && printf %s {shlex.quote(content)} > {path} && chmod {mode:o} {path}')


INITRAMFS_HOOK = " && ".join([
    write_file_hook("etc/initramfs-tools/conf.d/lab-modules.conf", "MODULES=list\n", 0o644),
    write_file_hook("etc/initramfs-tools/hooks/lab-modules", INITRAMFS_MODULES_HOOK, 0o755),
])
# debootstrap has no hook before the kernel's postinst builds the initrd, so split trees rebuild it afterwards.
REBUILD_INITRAMFS = 'mount -t proc proc "$1/proc" && chroot "$1" update-initramfs -u -k all && umount "$1/proc"'
ENABLE_NETWORKD = 'chroot "$1" systemctl enable systemd-networkd.service'

VM_TREE = TreeSpec(name="bookworm-vm", packages=PACKAGES, essential_hooks=(INITRAMFS_HOOK,),
                   customize_hooks=(ENABLE_NETWORKD,))
VM_SPLIT_USR_TREE = TreeSpec(name="bookworm-vm-split-usr", tool="debootstrap", merged_usr=False, packages=PACKAGES,
                             customize_hooks=(INITRAMFS_HOOK, REBUILD_INITRAMFS, ENABLE_NETWORKD))

# OpenRC as Alpine runs it, on Debian: sysvinit-core's /sbin/init is PID 1 and its inittab hands each runlevel to
# openrc.  systemd-networkd needs systemd as PID 1, so ifupdown and dhclient bring up the NIC.  dbus serves
# nothing here and would only cost boot time.
OPENRC_PACKAGES = tuple(package for package in PACKAGES if package not in ("systemd-sysv", "dbus")) + (
    "sysvinit-core", "openrc", "ifupdown", "isc-dhcp-client",
)
VM_OPENRC_TREE = TreeSpec(name="bookworm-vm-openrc", packages=OPENRC_PACKAGES, essential_hooks=(INITRAMFS_HOOK,))

# --- the trixie guest: systemd 257, and an initrd made by dracut whose /init is systemd ------------------------

# The bookworm guest's packages with dracut instead of initramfs-tools, plus what systemd 257 makes testable:
# systemd-repart (its own package since systemd 256) and cryptsetup-bin (veritysetup, for verity DDIs).
TRIXIE_PACKAGES = tuple(package for package in PACKAGES if package != "initramfs-tools") + (
    "dracut", "systemd-repart", "cryptsetup-bin",
)
# dracut's systemd-initrd module (and what it depends on: systemd, systemd-udevd, systemd-journald, ...) without
# dracut-systemd: /init is systemd, root= is read by systemd-fstab-generator and no dracut shell service runs, as
# with mkinitcpio's systemd hook.  Each of dracut-systemd's bash services would cost seconds under TCG.
DRACUT_MODULES = ("systemd-initrd", "kernel-modules")
# `drivers` makes kernel-modules install only these (and their dependencies) instead of every block, HID, USB and
# filesystem driver: hostonly="no" alone gives a generic initrd many times bigger, and unpacking it costs seconds
# under TCG.  crc32c_generic: see INITRAMFS_MODULES.
DRACUT_DRIVERS = ("virtio_pci", "virtio_blk", "virtio_scsi", "ext4", "crc32c_generic")
# systemd-modules-load loads virtio_blk early in the initrd, before udev's coldplug: otherwise the virtio device's
# modalias event waits behind about 1,100 coldplug events and /dev/vda appears seconds later under TCG.
# virtio_pci is built into Debian's kernel.
EARLY_MODULES_FILE = "etc/modules-load.d/lab-initrd.conf"
EARLY_MODULES = ("virtio_blk",)
EARLY_MODULES_CONF = ("# Loaded by systemd-modules-load before udev's coldplug, in the initrd too (dracut install_items).\n"
                      + "".join(f"{module}\n" for module in EARLY_MODULES))
# fsck for systemd-fsck-root in the initrd (the root's fstab pass is 1, as initramfs-tools checks it on bookworm).
DRACUT_INSTALL_ITEMS = ("fsck", "e2fsck", "fsck.ext4", f"/{EARLY_MODULES_FILE}")
DRACUT_CONF = f"""# The lab's initrd: generic (not host-only: the tree is built in a chroot), systemd as /init, virtio and ext4 only.
hostonly="no"
hostonly_cmdline="no"
dracutmodules=" {" ".join(DRACUT_MODULES)} "
drivers=" {" ".join(DRACUT_DRIVERS)} "
install_items+=" {" ".join(DRACUT_INSTALL_ITEMS)} "
early_microcode="no"
compress="zstd"
"""
DRACUT_CONF_FILE = "etc/dracut.conf.d/90-lab.conf"
# Before the non-essential packages: the kernel's postinst runs dracut with them.
DRACUT_HOOK = " && ".join([
    write_file_hook(DRACUT_CONF_FILE, DRACUT_CONF, 0o644),
    write_file_hook(EARLY_MODULES_FILE, EARLY_MODULES_CONF, 0o644),
])
# The tree is only a lab guest if every kernel has a dracut initrd whose /init is systemd.
CHECK_DRACUT_INITRD = """for initrd in "$1"/boot/initrd.img-*; do
  [ -e "$initrd" ] || { echo "no initrd in $1/boot" >&2; exit 1; }
  listing=$(chroot "$1" lsinitrd "/boot/${initrd##*/}") || exit 1
  printf '%s\\n' "$listing" | grep -Eq ' init -> /?usr/lib/systemd/systemd$' \\
    || { echo "${initrd##*/}: /init is not systemd" >&2; exit 1; }
done"""
# Units trixie adds to the boot that do nothing here: dracut-shutdown unpacks the initrd into /run/initramfs at
# every shutdown for dracut's shutdown module, which this initrd does not have (seconds per reboot under TCG);
# systemd-udev-load-credentials (systemd 256+) reads udev rules from credentials nobody passes, in front of udevd.
TRIXIE_MASKED_UNITS = ("dracut-shutdown.service", "dracut-shutdown-onfailure.service",
                       "systemd-udev-load-credentials.service")
# Generators all run before the first unit starts, each a cold process under TCG; these find nothing
# in the lab guest (no VSOCK CID - systemd-ssh-generator fails -, no GPT root disk, no resume device, no rc.local,
# no /system-update, no SysV-only scripts, no TPM).  A generator linked to /dev/null in /etc is disabled (man
# systemd.generator).  Kept: fstab (the /tmp tmpfs), getty (the serial console), debug (systemd.mask= on the kernel
# command line), run, and systemd-network-generator (a service, not a generator).
TRIXIE_DISABLED_GENERATORS = (
    "systemd-ssh-generator", "systemd-gpt-auto-generator", "systemd-hibernate-resume-generator",
    "systemd-rc-local-generator", "systemd-system-update-generator", "systemd-sysv-generator", "systemd-tpm2-generator",
)
# ConditionNeedsUpdate=/etc and /var hold while /usr is newer than /etc/.updated: ldconfig.service,
# systemd-journal-catalog-update and systemd-update-done then run on every boot of the pristine image (about 8 s of
# units in front of sysinit.target under TCG).  The stamps systemd-update-done would write, dated like /usr.
UPDATE_STAMP_FILES = ("etc/.updated", "var/.updated")
UPDATE_STAMP = """# This file was created by systemd-update-done. Its only
# purpose is to hold a timestamp of the time this directory
# was updated. See man:systemd-update-done.service(8).
TIMESTAMP_NSEC={nsec}
"""
TRIXIE_SUITES = ("trixie",)
# Trixie's 6.12 kernel panicked once in six boots on a loaded host with "IO-APIC + timer doesn't work!": under
# TCG the timer interrupt can miss the kernel's early check.  no_timer_check skips that check, as cloud images do.
TRIXIE_KERNEL_ARGS = "no_timer_check"

VM_TRIXIE_TREE = TreeSpec(name="trixie-vm", suite="trixie", packages=TRIXIE_PACKAGES, essential_hooks=(DRACUT_HOOK,),
                          customize_hooks=(ENABLE_NETWORKD, CHECK_DRACUT_INITRD))

# Kernel arguments from the field notes' tuned boot (41 s to SSH instead of 65-70 s).
KERNEL_TUNING = "console=ttyS0 quiet mitigations=off systemd.mask=e2scrub_reap.service"

# Units that cost CPU under TCG at boot and do nothing for a throwaway VM.  e2scrub_reap alone took 44 s.
MASKED_UNITS = (
    "e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
    "fstrim.timer", "systemd-networkd-wait-online.service", "systemd-pstore.service", "modprobe@drm.service",
    "modprobe@efi_pstore.service", "modprobe@dm_mod.service", "modprobe@fuse.service", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "dev-hugepages.mount", "getty@tty1.service",
)

READY_MARKER = "immutable-lab: ssh ready"
READY_UNIT = f"""[Unit]
Description=Tell the serial console that sshd is up (lab boot marker)
After=ssh.service
Requires=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "{READY_MARKER} uptime=$(cut -d" " -f1 /proc/uptime)" > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
"""

NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=ipv4
IPv6AcceptRA=no
LinkLocalAddressing=no
"""

# QEMU user networking answers DNS on 10.0.2.3; no resolver daemon runs in the guest.
RESOLV_CONF = "nameserver 10.0.2.3\n"
TMP_MOUNT = "tmpfs /tmp tmpfs nosuid,nodev,mode=1777 0 0\n"

# --- the OpenRC guest (sysvinit-core's /sbin/init runs /etc/init.d/rcS and rc, Debian openrc's wrappers) --------

INITS = ("systemd", "openrc")

# The same tuning without systemd's argument.
OPENRC_KERNEL_TUNING = "console=ttyS0 quiet mitigations=off"

# udev names the NIC eth0 (the kernel's name) when no .link file matches it: the predictable name (enp0sN) follows
# the NIC's PCI slot, which every extra --disk in front of it moves, and ifupdown needs an exact name.  Masking
# udev's default .link file, not net.ifnames=0, because a role that writes its own refind.conf (alpine_atomic_root)
# replaces the kernel command line.
MASKED_DEFAULT_LINK = "etc/systemd/network/99-default.link"

NETWORK_INTERFACES = """# ifupdown, started by OpenRC's `networking` (sysinit); QEMU user networking's DHCP gives 10.0.2.15/24.
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
"""

# dhclient-script sources its enter hooks, so this definition wins: resolv.conf stays the static one (the same
# 10.0.2.3 DHCP would give), which a read-only root could not have rewritten anyway.
DHCLIENT_KEEP_RESOLV_CONF = """# The lab's resolv.conf is static: never rewrite it.
make_resolv_conf() { :; }
"""

# Debian's inittab without its six gettys (root logs in over SSH only; each respawning getty costs CPU under
# TCG) and without the UPS power-fail hooks.
OPENRC_INITTAB = """# The lab's inittab: every runlevel goes to OpenRC through Debian openrc's /etc/init.d/rcS and rc.
id:2:initdefault:
si::sysinit:/etc/init.d/rcS
~~:S:wait:/sbin/sulogin --force
l0:0:wait:/etc/init.d/rc 0
l1:1:wait:/etc/init.d/rc 1
l2:2:wait:/etc/init.d/rc 2
l3:3:wait:/etc/init.d/rc 3
l4:4:wait:/etc/init.d/rc 4
l5:5:wait:/etc/init.d/rc 5
l6:6:wait:/etc/init.d/rc 6
z6:6:respawn:/sbin/sulogin --force
ca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now
"""

# Debian's `ssh` init script runs in the default runlevel; `need ssh` orders the marker after it, as
# After=/Requires=ssh.service does for READY_UNIT.
OPENRC_READY_SERVICE = f"""#!/sbin/openrc-run
description="Tell the serial console that sshd is up (lab boot marker)"

depend() {{
\tneed ssh
}}

start() {{
\techo "{READY_MARKER} uptime=$(cut -d" " -f1 /proc/uptime)" > /dev/ttyS0
}}
"""
OPENRC_READY_RUNLEVEL = "default"

# (runlevel, service) pairs the packages enable that do nothing in a throwaway VM; OpenRC runs them one after the
# other and each LSB script costs about 0.6 s under TCG (cgroups 3 s), measured from /dev/kmsg stamps per service.
# The kernel already set the clock from the RTC (hwclock.sh), a VM has no backlight, /etc/modules is empty (kmod),
# nothing uses configfs, cgroups (no systemd) or NFS, and /var/log/dmesg (bootlogs) is not worth a second.
# savecache (runlevel off) saves the dependency cache at shutdown, yet every boot recomputed it anyway, and on a
# read-only root it fails with an error.
# Only services nothing `need`s: OpenRC would start a needed one anyway (urandom, which networking needs, stays).
OPENRC_DISABLED_SERVICES = (
    ("sysinit", "hwclock.sh"), ("sysinit", "brightness"), ("sysinit", "kmod"), ("sysinit", "mount-configfs"),
    ("sysinit", "cgroups"), ("sysinit", "mountnfs.sh"), ("sysinit", "mountnfs-bootclean.sh"), ("default", "bootlogs"),
    ("off", "savecache"),
)


def kernel_tuning(init: str) -> str:
    return OPENRC_KERNEL_TUNING if init == "openrc" else KERNEL_TUNING


def key_material(init: str, suite: str = "bookworm") -> list[object]:
    """Everything `configure` writes for `init` and `suite` beyond the key, fstab and machine-id: part of the image key."""
    if init == "openrc":
        return [NETWORK_INTERFACES, MASKED_DEFAULT_LINK, DHCLIENT_KEEP_RESOLV_CONF, RESOLV_CONF, OPENRC_INITTAB, OPENRC_READY_SERVICE,
                OPENRC_READY_RUNLEVEL, [list(pair) for pair in OPENRC_DISABLED_SERVICES], TMP_MOUNT]
    # Exactly what the systemd images were keyed with before the OpenRC guest existed: their cache stays valid.
    material: list[object] = [NETWORK, RESOLV_CONF, READY_UNIT, list(MASKED_UNITS), TMP_MOUNT]
    if suite in TRIXIE_SUITES:
        material += [list(TRIXIE_MASKED_UNITS), list(TRIXIE_DISABLED_GENERATORS), list(UPDATE_STAMP_FILES), UPDATE_STAMP]
    return material


def fstab_ext4() -> str:
    return "/dev/vda / ext4 rw,errors=remount-ro 0 1\n" + TMP_MOUNT


# The separate-/usr variant: partition 1 is /, partition 2 is /usr.  Debian's initramfs-tools mounts /usr from
# the root's fstab before it starts init (its `init` script: read_fstab_entry /usr, mountfs /usr).
def fstab_ext4_separate_usr() -> str:
    return "/dev/vda1 / ext4 rw,errors=remount-ro 0 1\n/dev/vda2 /usr ext4 rw 0 2\n" + TMP_MOUNT


def fstab_btrfs_subvol(subvol: str) -> str:
    return f"PARTLABEL=ROOT / btrfs rw,subvol={subvol} 0 0\n" + TMP_MOUNT


def _inside(tree: Path, relative: str) -> Path:
    """Path of `relative` in `tree`, refusing any symlink on the way that leads out of the tree.

    A Debian tree has absolute symlinks (e.g. /etc/resolv.conf -> /run/...): followed from the host they
    would write to the host's own files.
    """
    real_tree = os.path.realpath(tree)
    target = tree / relative.lstrip("/")
    parent = os.path.realpath(target.parent)
    if os.path.commonpath([real_tree, parent]) != real_tree:
        raise LabError(f"{target.parent} leads outside the tree {tree}; refusing to write there")
    return Path(parent) / target.name


def write_file(tree: Path, relative: str, content: str, mode: int = 0o644) -> None:
    path = _inside(tree, relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(content)
    os.chmod(path, mode)


def symlink(tree: Path, relative: str, points_to: str) -> None:
    path = _inside(tree, relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    os.symlink(points_to, path)


def remove_link(tree: Path, relative: str) -> None:
    """Remove the symlink `relative` (e.g. a service in an OpenRC runlevel) if it is there."""
    path = _inside(tree, relative)
    if path.is_symlink():
        path.unlink()


def configure(tree: Path, *, public_key: str, fstab: str, init: str = "systemd", suite: str = "bookworm") -> None:
    """Turn an unpacked Debian tree into a lab guest (hostname, network, root's key, trimmed boot, boot marker)."""
    if init not in INITS:
        raise LabError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    write_file(tree, "etc/hostname", HOSTNAME + "\n")
    write_file(tree, "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    write_file(tree, "etc/resolv.conf", RESOLV_CONF)
    # A read-only root needs a machine-id in the image; mmdebstrap and debootstrap leave it empty.
    write_file(tree, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    write_file(tree, "etc/fstab", fstab)
    _inside(tree, "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(_inside(tree, "root/.ssh"), 0o700)
    write_file(tree, "root/.ssh/authorized_keys", public_key.strip() + "\n", 0o600)
    if init == "openrc":
        _configure_openrc(tree)
    else:
        _configure_systemd(tree)
        if suite in TRIXIE_SUITES:
            _configure_trixie(tree)


def _configure_systemd(tree: Path) -> None:
    write_file(tree, "etc/systemd/network/20-lab-wired.network", NETWORK)
    for unit in MASKED_UNITS:
        symlink(tree, f"etc/systemd/system/{unit}", "/dev/null")
    write_file(tree, "etc/systemd/system/lab-ready.service", READY_UNIT)
    symlink(tree, "etc/systemd/system/multi-user.target.wants/lab-ready.service", "/etc/systemd/system/lab-ready.service")


def _configure_trixie(tree: Path) -> None:
    for unit in TRIXIE_MASKED_UNITS:
        symlink(tree, f"etc/systemd/system/{unit}", "/dev/null")
    for generator in TRIXIE_DISABLED_GENERATORS:
        symlink(tree, f"etc/systemd/system-generators/{generator}", "/dev/null")
    usr = os.stat(_inside(tree, "usr"))
    for relative in UPDATE_STAMP_FILES:
        write_file(tree, relative, UPDATE_STAMP.format(nsec=usr.st_mtime_ns))
        os.utime(_inside(tree, relative), ns=(usr.st_mtime_ns, usr.st_mtime_ns))


def _configure_openrc(tree: Path) -> None:
    write_file(tree, "etc/network/interfaces", NETWORK_INTERFACES)
    symlink(tree, MASKED_DEFAULT_LINK, "/dev/null")
    write_file(tree, "etc/dhcp/dhclient-enter-hooks.d/lab-keep-resolv-conf", DHCLIENT_KEEP_RESOLV_CONF)
    write_file(tree, "etc/inittab", OPENRC_INITTAB)
    for runlevel, service in OPENRC_DISABLED_SERVICES:
        remove_link(tree, f"etc/runlevels/{runlevel}/{service}")
    # What `rc-update add lab-ready default` does, without running the tree's binaries.
    write_file(tree, "etc/init.d/lab-ready", OPENRC_READY_SERVICE, 0o755)
    symlink(tree, f"etc/runlevels/{OPENRC_READY_RUNLEVEL}/lab-ready", "/etc/init.d/lab-ready")


def kernel_and_initrd(tree: Path) -> tuple[Path, Path]:
    """The tree's only kernel and initrd (Debian's /boot/vmlinuz-<version>, /boot/initrd.img-<version>)."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError(f"expected exactly one kernel in {tree / 'boot'}, found {[k.name for k in kernels]}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    initrd = tree / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise LabError(f"kernel {version} has no initrd in {tree / 'boot'}")
    return kernels[0], initrd
