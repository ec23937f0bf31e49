# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bootable lab images, one cache entry per variant and content key.

- ext4:       merged-/usr Debian on an ext4 disk; QEMU boots the kernel and initrd stored next to it.
- split-usr:  the same from a debootstrap --no-merged-usr tree.
- split-usr-sepusr: the split tree with /usr on its own ext4 partition (GPT: ROOT, USR), direct kernel boot.
- btrfs-uefi: GPT with an ESP (rEFInd and its btrfs driver) and a btrfs partition named ROOT holding the
              root filesystem in subvolume @; OVMF boots it.
- btrfs-uefi-openrc: the btrfs-uefi layout and boot with OpenRC as init instead of systemd (sysvinit-core's
              /sbin/init, openrc, ifupdown with dhclient on eth0).
- ext4-trixie: Debian 13 (systemd 257) on an ext4 disk, direct kernel boot of an initrd made by dracut whose
              /init is systemd (guest.VM_TRIXIE_TREE).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from vmlab import guest, refind, rootfs, sshkey
from vmlab.cache import CacheEntry, cache_root, content_key
from vmlab.errors import LabError
from vmlab.gpt import GptLayout, copy_sparse_into, gpt_layout, linux_partitions, sgdisk_argv, sgdisk_partitions_argv
from vmlab.loopdev import release_loops
from vmlab.rootfs import TreeSpec
from vmlab.run import require_tools, run_logged

# Bump when a build step changes in a way the key fields do not capture.
IMAGE_BUILDER_VERSION = 1
IMAGE_FILE = "image.json"
DISK_FILE = "disk.qcow2"
STEP_TIMEOUT = 900.0
ESP_MIB = 64
# Separate /usr: the merge copies /bin, /sbin and /lib* (kernel modules included) across filesystems into /usr.
SEPUSR_ROOT_MIB = 1536
SEPUSR_USR_MIB = 3072
FILL_SCRIPT = Path(__file__).with_name("fill_btrfs.sh")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    tree: TreeSpec
    layout: str  # "ext4", "ext4-sepusr" or "btrfs-uefi"
    disk_gib: int
    description: str
    init: str = "systemd"  # or "openrc"; see guest.INITS
    kernel_args: str = ""  # direct boot only: stored with root= in image.json, part of the key when set

    def __post_init__(self) -> None:
        if self.init not in guest.INITS:
            raise ValueError(f"variant {self.name}: init must be one of {guest.INITS}, not {self.init!r}")
        if self.kernel_args and self.layout == "btrfs-uefi":
            raise ValueError(f"variant {self.name}: kernel_args need a direct-boot layout; rEFInd's configuration has its own")


VARIANTS: dict[str, Variant] = {
    "ext4": Variant("ext4", guest.VM_TREE, "ext4", 4, "bookworm, merged /usr, ext4 root, direct kernel boot"),
    "split-usr": Variant("split-usr", guest.VM_SPLIT_USR_TREE, "ext4", 4,
                         "bookworm from debootstrap --no-merged-usr, ext4 root, direct kernel boot"),
    "split-usr-sepusr": Variant("split-usr-sepusr", guest.VM_SPLIT_USR_TREE, "ext4-sepusr", 5,
                                "the split-usr tree with /usr on its own ext4 partition, direct kernel boot"),
    "btrfs-uefi": Variant("btrfs-uefi", guest.VM_TREE, "btrfs-uefi", 4,
                          "bookworm on btrfs subvolume @ (GPT partition ROOT), rEFInd on the ESP, OVMF boot"),
    "btrfs-uefi-openrc": Variant("btrfs-uefi-openrc", guest.VM_OPENRC_TREE, "btrfs-uefi", 4,
                                 "the btrfs-uefi layout and boot with sysvinit and OpenRC as init instead of systemd",
                                 init="openrc"),
    "ext4-trixie": Variant("ext4-trixie", guest.VM_TRIXIE_TREE, "ext4", 4,
                           "trixie (systemd 257), merged /usr, ext4 root, dracut initrd with systemd as /init, direct kernel boot",
                           kernel_args=guest.TRIXIE_KERNEL_ARGS),
}


@dataclasses.dataclass(frozen=True)
class Image:
    """A verified image entry as the runner needs it."""

    variant: str
    path: Path
    disk: Path
    boot: str  # "direct" or "uefi"
    kernel: Path | None
    initrd: Path | None
    root_args: str


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise LabError(f"unknown image variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def direct_root_args(layout: str = "ext4") -> str:
    return "root=/dev/vda1 rw" if layout == "ext4-sepusr" else "root=/dev/vda rw"


def uefi_kernel_args(init: str = "systemd") -> str:
    return f"root=PARTLABEL=ROOT rootflags=subvol=@ rw {guest.kernel_tuning(init)}"


def key_fields(spec: Variant, public_key: str, refind_digest: str | None) -> dict[str, object]:
    fields: dict[str, object] = {
        "kind": "image",
        "variant": spec.name,
        "layout": spec.layout,
        "disk_gib": spec.disk_gib,
        "tree": spec.tree.key(),
        "ssh_public_key": public_key,
        "guest": guest.key_material(spec.init, spec.tree.suite),
        "builder_version": IMAGE_BUILDER_VERSION,
    }
    if spec.init != "systemd":  # only then: the systemd variants keep the keys of their cached images
        fields["init"] = spec.init
    if spec.kernel_args:  # likewise
        fields["kernel_args"] = spec.kernel_args
    if spec.layout == "ext4-sepusr":
        fields["fstab"] = guest.fstab_ext4_separate_usr()
        fields["partitions_mib"] = [SEPUSR_ROOT_MIB, SEPUSR_USR_MIB]
    if spec.layout == "btrfs-uefi":
        fields["refind"] = refind_digest
        fields["refind_conf"] = refind.refind_conf(uefi_kernel_args(spec.init))
        fields["esp_mib"] = ESP_MIB
    return fields


def image_entry(name: str, cache: Path | None = None) -> CacheEntry:
    spec = variant(name)
    root = cache or cache_root()
    public_key = sshkey.public_key(sshkey.ensure_key(root))
    refind_digest = refind.digest(refind.ensure_refind(root)) if spec.layout == "btrfs-uefi" else None
    return CacheEntry(root, "images", spec.name, content_key(key_fields(spec, public_key, refind_digest)))


def ensure_image(name: str, *, cache: Path | None = None) -> Image:
    """The verified image of variant `name`, built first if missing or corrupt."""
    root = cache or cache_root()
    entry = image_entry(name, root)
    path = entry.ensure(lambda staging: _build(variant(name), root, staging, entry.log_path))
    return load_image(path)


def load_image(path: Path) -> Image:
    meta = json.loads((path / IMAGE_FILE).read_text())
    kernel = path / meta["kernel"] if meta.get("kernel") else None
    initrd = path / meta["initrd"] if meta.get("initrd") else None
    return Image(meta["variant"], path, path / meta["disk"], meta["boot"], kernel, initrd, meta.get("root_args", ""))


def _build(spec: Variant, cache: Path, staging: Path, log: Path) -> None:
    started = time.monotonic()
    tools = ["qemu-img", "tar"]
    btrfs_tools = ["mkfs.btrfs", "btrfs", "mkfs.vfat", "mcopy", "mmd", "sgdisk", "unshare", "mount", "losetup", "bash"]
    tools += {"ext4": ["mkfs.ext4"], "ext4-sepusr": ["mkfs.ext4", "sgdisk"]}.get(spec.layout, btrfs_tools)
    require_tools(tools)
    tarball = rootfs.ensure_tree(spec.tree, cache=cache)
    tree = staging / "tree"
    rootfs.extract_tree(tarball, tree)
    fstab = {"ext4": guest.fstab_ext4(), "ext4-sepusr": guest.fstab_ext4_separate_usr()}.get(
        spec.layout, guest.fstab_btrfs_subvol("@"))
    guest.configure(tree, public_key=sshkey.public_key(sshkey.ensure_key(cache)), fstab=fstab, init=spec.init,
                    suite=spec.tree.suite)
    kernel, initrd = guest.kernel_and_initrd(tree)
    kernel_version = kernel.name.removeprefix("vmlinuz-")
    raw = staging / "disk.raw"
    what = f"image {spec.name}"
    meta: dict[str, object] = {"variant": spec.name, "layout": spec.layout, "disk": DISK_FILE, "kernel_version": kernel_version,
                               "tree": tarball.parent.name}
    root_args = " ".join(filter(None, [direct_root_args(spec.layout), spec.kernel_args]))
    if spec.layout == "ext4-sepusr":
        shutil.copyfile(kernel, staging / "vmlinuz")
        shutil.copyfile(initrd, staging / "initrd.img")
        meta.update({"boot": "direct", "kernel": "vmlinuz", "initrd": "initrd.img", "root_args": root_args})
        _assemble_separate_usr(staging, tree, raw, log, what)
    elif spec.layout == "ext4":
        shutil.copyfile(kernel, staging / "vmlinuz")
        shutil.copyfile(initrd, staging / "initrd.img")
        meta.update({"boot": "direct", "kernel": "vmlinuz", "initrd": "initrd.img", "root_args": root_args})
        with raw.open("wb") as handle:
            handle.truncate(spec.disk_gib << 30)
        run_logged(["mkfs.ext4", "-q", "-F", "-L", "labroot", "-d", str(tree), str(raw)], log=log, timeout=STEP_TIMEOUT,
                   what=f"{what}: mkfs.ext4 -d")
    else:
        meta.update({"boot": "uefi", "init": spec.init, "kernel_args": uefi_kernel_args(spec.init)})
        _assemble_btrfs_uefi(spec, cache, staging, tree, raw, log)
    run_logged(["rm", "-rf", "--one-file-system", str(tree)], log=log, timeout=STEP_TIMEOUT, what=f"{what}: removing the staged tree")
    run_logged(["qemu-img", "convert", "-O", "qcow2", str(raw), str(staging / DISK_FILE)], log=log, timeout=STEP_TIMEOUT,
               what=f"{what}: qemu-img convert")
    raw.unlink()
    meta["build_seconds"] = round(time.monotonic() - started, 1)
    meta["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (staging / IMAGE_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _assemble_separate_usr(staging: Path, tree: Path, raw: Path, log: Path, what: str) -> None:
    """GPT with ROOT (the tree without /usr's content) and USR (/usr's content), both ext4."""
    usr_tree = staging / "usr-tree"
    (tree / "usr").rename(usr_tree)
    (tree / "usr").mkdir(mode=0o755)
    parts, sectors = linux_partitions([("ROOT", SEPUSR_ROOT_MIB), ("USR", SEPUSR_USR_MIB)])
    images: list[Path] = []
    for part, source, label in ((parts[0], tree, "labroot"), (parts[1], usr_tree, "labusr")):
        image = staging / f"{part.name.lower()}.img"
        with image.open("wb") as handle:
            handle.truncate(part.size_bytes)
        run_logged(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(source), str(image)], log=log, timeout=STEP_TIMEOUT,
                   what=f"{what}: mkfs.ext4 -d of {part.name}")
        images.append(image)
    with raw.open("wb") as handle:
        handle.truncate(sectors * 512)
    run_logged(sgdisk_partitions_argv(parts, raw), log=log, timeout=60, what=f"{what}: partitioning")
    for part, image in zip(parts, images):
        copy_sparse_into(image, raw, part.offset)
        image.unlink()
    run_logged(["rm", "-rf", "--one-file-system", str(usr_tree)], log=log, timeout=STEP_TIMEOUT,
               what=f"{what}: removing the staged /usr")


def fill_btrfs_subvolume(image: Path, tree: Path, mountpoint: Path, log: Path, what: str) -> None:
    """Copy `tree` into a new subvolume @ of the btrfs filesystem in `image`; no loop device survives, even on failure."""
    try:
        run_logged(["unshare", "--mount", "--propagation", "private", "bash", str(FILL_SCRIPT), str(image), str(tree),
                    str(mountpoint)], log=log, timeout=STEP_TIMEOUT, what=f"{what}: filling subvolume @")
    finally:
        release_loops(image)


def _assemble_btrfs_uefi(spec: Variant, cache: Path, staging: Path, tree: Path, raw: Path, log: Path) -> None:
    what = f"image {spec.name}"
    layout: GptLayout = gpt_layout(ESP_MIB, spec.disk_gib * 1024)
    esp = staging / "esp.img"
    refind.make_esp(esp, ESP_MIB, refind.ensure_refind(cache), refind.refind_conf(uefi_kernel_args(spec.init)))
    root = staging / "root.img"
    with root.open("wb") as handle:
        handle.truncate(layout.root_bytes)
    run_logged(["mkfs.btrfs", "-q", "-f", str(root)], log=log, timeout=STEP_TIMEOUT, what=f"{what}: mkfs.btrfs")
    fill_btrfs_subvolume(root, tree, staging / "mnt", log, what)
    run_logged(["btrfs", "check", "--readonly", str(root)], log=log, timeout=STEP_TIMEOUT, what=f"{what}: btrfs check")
    with raw.open("wb") as handle:
        handle.truncate(layout.total_bytes)
    run_logged(sgdisk_argv(layout, raw), log=log, timeout=60, what=f"{what}: partitioning")
    copy_sparse_into(esp, raw, layout.esp_offset)
    copy_sparse_into(root, raw, layout.root_offset)
    for leftover in (esp, root):
        leftover.unlink()
    (staging / "mnt").rmdir()
