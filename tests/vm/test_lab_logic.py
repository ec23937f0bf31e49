# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure logic of the VM lab: content keys, manifests, apt sources, command lines, sizes, layouts. No root, no VM."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from vmlab import aptsources, cache, gpt, guest, images, instance, qemu, refind, rootfs
from vmlab.errors import BootFailed, LabError, MissingTool
from vmlab.run import redact, require_tools

from support.ansible_log import DIGEST_WIDTH, failure_digest
from support.wait import wait_for

# --- content keys ---------------------------------------------------------------------------------------------


def test_content_key_ignores_dict_order_and_sees_every_value() -> None:
    assert cache.content_key({"a": 1, "b": [1, 2]}) == cache.content_key({"b": [1, 2], "a": 1})
    assert cache.content_key({"a": 1, "b": [1, 2]}) != cache.content_key({"a": 1, "b": [2, 1]})
    assert len(cache.content_key({})) == 64


@pytest.mark.parametrize("change", [
    {"tool": "debootstrap"}, {"suite": "trixie"}, {"variant": "apt"}, {"packages": ("perl",)}, {"merged_usr": False},
    {"customize_hooks": ("true",)},
])
def test_tree_key_changes_with_each_spec_field(change: dict[str, object]) -> None:
    base = rootfs.TreeSpec(name="t")
    changed = rootfs.TreeSpec(**{"name": "t", **change})  # type: ignore[arg-type]
    assert base.key() != changed.key()


def test_tree_key_ignores_package_order_and_duplicates_but_not_the_builder_version(monkeypatch: pytest.MonkeyPatch) -> None:
    one = rootfs.TreeSpec(name="t", packages=("b", "a"))
    assert one.key() == rootfs.TreeSpec(name="t", packages=("a", "b", "a")).key()
    before = one.key()
    monkeypatch.setattr(rootfs, "TREE_BUILDER_VERSION", rootfs.TREE_BUILDER_VERSION + 1)
    assert one.key() != before


def test_tree_spec_rejects_what_its_tool_cannot_do() -> None:
    with pytest.raises(ValueError, match="essential hooks need mmdebstrap"):
        rootfs.TreeSpec(name="t", tool="debootstrap", essential_hooks=("true",))
    with pytest.raises(ValueError, match="tool must be one of"):
        rootfs.TreeSpec(name="t", tool="cdebootstrap")
    with pytest.raises(ValueError, match="non-empty file name"):
        rootfs.TreeSpec(name="a/b")


def test_image_key_follows_ssh_key_tree_and_refind() -> None:
    spec = images.VARIANTS["btrfs-uefi"]
    base = cache.content_key(images.key_fields(spec, "ssh-ed25519 AAAA one", "r1"))
    assert base != cache.content_key(images.key_fields(spec, "ssh-ed25519 AAAA two", "r1"))
    assert base != cache.content_key(images.key_fields(spec, "ssh-ed25519 AAAA one", "r2"))
    ext4 = images.VARIANTS["ext4"]
    assert "refind" not in images.key_fields(ext4, "k", None)
    assert images.key_fields(ext4, "k", None)["tree"] != images.key_fields(images.VARIANTS["split-usr"], "k", None)["tree"]


def test_systemd_variants_keep_the_image_keys_of_their_cached_images() -> None:
    # The OpenRC variant added fields only for itself: these are the fields the systemd images were keyed with.
    legacy_guest = [guest.NETWORK, guest.RESOLV_CONF, guest.READY_UNIT, list(guest.MASKED_UNITS), guest.TMP_MOUNT]
    for name in ("ext4", "split-usr", "split-usr-sepusr", "btrfs-uefi"):
        fields = images.key_fields(images.VARIANTS[name], "k", "r")
        assert fields["guest"] == legacy_guest and "init" not in fields
    assert images.uefi_kernel_args() == f"root=PARTLABEL=ROOT rootflags=subvol=@ rw {guest.KERNEL_TUNING}"


def test_openrc_variant_is_btrfs_uefi_with_its_own_tree_guest_and_kernel_args() -> None:
    openrc, systemd = images.VARIANTS["btrfs-uefi-openrc"], images.VARIANTS["btrfs-uefi"]
    assert (openrc.layout, openrc.disk_gib, openrc.init) == (systemd.layout, systemd.disk_gib, "openrc")
    fields = images.key_fields(openrc, "k", "r")
    assert fields["init"] == "openrc" and fields["guest"] == guest.key_material("openrc")
    assert fields["tree"] == guest.VM_OPENRC_TREE.key() != images.key_fields(systemd, "k", "r")["tree"]
    assert guest.OPENRC_KERNEL_TUNING in fields["refind_conf"] and "systemd." not in fields["refind_conf"]
    assert {"sysvinit-core", "openrc", "ifupdown", "isc-dhcp-client"} <= set(guest.VM_OPENRC_TREE.packages)
    assert not {"systemd-sysv", "dbus"} & set(guest.VM_OPENRC_TREE.packages)
    assert guest.VM_OPENRC_TREE.essential_hooks == (guest.INITRAMFS_HOOK,)


@pytest.mark.parametrize("change", [
    ("OPENRC_DISABLED_SERVICES", (("sysinit", "hwclock.sh"),)), ("NETWORK_INTERFACES", "auto lo\n"),
    ("OPENRC_INITTAB", "id:2:initdefault:\n"), ("OPENRC_READY_SERVICE", "#!/sbin/openrc-run\n"),
    ("OPENRC_KERNEL_TUNING", "console=ttyS0"), ("DHCLIENT_KEEP_RESOLV_CONF", ""), ("MASKED_DEFAULT_LINK", "x.link"),
])
def test_openrc_image_key_follows_each_guest_file(monkeypatch: pytest.MonkeyPatch, change: tuple[str, object]) -> None:
    spec = images.VARIANTS["btrfs-uefi-openrc"]
    before = cache.content_key(images.key_fields(spec, "k", "r"))
    systemd_before = cache.content_key(images.key_fields(images.VARIANTS["btrfs-uefi"], "k", "r"))
    monkeypatch.setattr(guest, *change)
    assert cache.content_key(images.key_fields(spec, "k", "r")) != before
    assert cache.content_key(images.key_fields(images.VARIANTS["btrfs-uefi"], "k", "r")) == systemd_before


def test_trixie_variant_is_ext4_on_a_trixie_tree_with_dracut_instead_of_initramfs_tools() -> None:
    trixie, ext4 = images.VARIANTS["ext4-trixie"], images.VARIANTS["ext4"]
    assert (trixie.layout, trixie.disk_gib, trixie.init) == (ext4.layout, ext4.disk_gib, "systemd")
    assert trixie.tree is guest.VM_TRIXIE_TREE and trixie.tree.suite == "trixie" and trixie.tree.tool == "mmdebstrap"
    packages = set(trixie.tree.packages)
    assert {"openssh-server", "python3", "btrfs-progs", "squashfs-tools", "erofs-utils", "pacman-package-manager", "makepkg",
            "systemd-repart", "cryptsetup-bin", "dracut"} <= packages
    assert set(guest.PACKAGES) - packages == {"initramfs-tools"}  # dracut conflicts with it
    assert trixie.tree.essential_hooks == (guest.DRACUT_HOOK,)
    assert trixie.tree.customize_hooks == (guest.ENABLE_NETWORKD, guest.CHECK_DRACUT_INITRD)
    fields = images.key_fields(trixie, "k", None)
    assert fields["guest"] == guest.key_material("systemd", "trixie") != guest.key_material("systemd")
    assert "init" not in fields and "refind" not in fields and fields["tree"] == guest.VM_TRIXIE_TREE.key()
    assert cache.content_key(fields) != cache.content_key(images.key_fields(ext4, "k", None))
    assert images.direct_root_args(trixie.layout) == "root=/dev/vda rw"
    assert fields["kernel_args"] == trixie.kernel_args == "no_timer_check"
    assert not any("kernel_args" in images.key_fields(spec, "k", "r") for spec in images.VARIANTS.values() if spec is not trixie)
    with pytest.raises(ValueError, match="kernel_args need a direct-boot layout"):
        images.Variant("x", guest.VM_TREE, "btrfs-uefi", 4, "x", kernel_args="quiet")


@pytest.mark.parametrize("change", [
    ("TRIXIE_MASKED_UNITS", ("x.service",)), ("TRIXIE_DISABLED_GENERATORS", ("x-generator",)), ("UPDATE_STAMP", "x"),
])
def test_trixie_image_key_follows_its_guest_trims_and_leaves_bookworm_alone(
        monkeypatch: pytest.MonkeyPatch, change: tuple[str, object]) -> None:
    trixie, ext4 = images.VARIANTS["ext4-trixie"], images.VARIANTS["ext4"]
    before = cache.content_key(images.key_fields(trixie, "k", None))
    ext4_before = cache.content_key(images.key_fields(ext4, "k", None))
    monkeypatch.setattr(guest, *change)
    assert cache.content_key(images.key_fields(trixie, "k", None)) != before
    assert cache.content_key(images.key_fields(ext4, "k", None)) == ext4_before


def test_variants_and_configure_refuse_an_unknown_init(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        images.Variant("x", guest.VM_TREE, "ext4", 4, "x", init="runit")
    with pytest.raises(LabError, match="unknown init 'runit'"):
        guest.configure(tmp_path, public_key="k", fstab="", init="runit")


def test_cache_root_precedence() -> None:
    assert cache.cache_root({"IMMUTABLE_ROOT_CACHE": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"}) == pathlib.Path("/c")
    assert cache.cache_root({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == pathlib.Path("/x/immutable-root")
    assert cache.cache_root({"HOME": "/h"}) == pathlib.Path("/h/.cache/immutable-root")


# --- manifests and entries ------------------------------------------------------------------------------------

def test_manifest_round_trip_is_sha256sum_format() -> None:
    sums = {"disk.qcow2": "a" * 64, "sub/x": "0123456789abcdef" * 4}
    text = cache.format_manifest(sums)
    assert text.splitlines()[0] == f"{'a' * 64}  disk.qcow2"
    assert cache.parse_manifest(text) == sums


@pytest.mark.parametrize("text, problem", [
    ("", "empty manifest"),
    ("abc  file\n", "is not"),
    (f"{'A' * 64}  file\n", "is not"),
    (f"{'a' * 64} file\n", "is not"),
    (f"{'a' * 64}  ../escape\n", "outside the entry"),
    (f"{'a' * 64}  /abs\n", "outside the entry"),
    (f"{'a' * 64}  x\n{'b' * 64}  x\n", "repeats"),
])
def test_manifest_parser_rejects_garbage(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        cache.parse_manifest(text)


def _entry(tmp_path: pathlib.Path) -> pathlib.Path:
    entry = tmp_path / "entry"
    (entry / "sub").mkdir(parents=True)
    (entry / "a").write_bytes(b"alpha")
    (entry / "sub" / "b").write_bytes(b"beta")
    cache.write_manifest(entry)
    return entry


def test_verify_entry_accepts_intact_and_names_each_kind_of_damage(tmp_path: pathlib.Path) -> None:
    entry = _entry(tmp_path)
    assert cache.verify_entry(entry) is None
    assert cache.verify_entry(tmp_path / "nothing") == "missing"
    (entry / "sub" / "b").write_bytes(b"betA")
    assert cache.verify_entry(entry) == "checksum mismatch for sub/b"
    (entry / "sub" / "b").unlink()
    assert "missing ['sub/b']" in str(cache.verify_entry(entry))
    (entry / "sub" / "b").write_bytes(b"beta")
    (entry / "stray").write_bytes(b"")
    assert "unexpected ['stray']" in str(cache.verify_entry(entry))
    (entry / "stray").unlink()
    (entry / cache.MANIFEST).unlink()
    assert cache.verify_entry(entry) == "no SHA256SUMS"


def test_ensure_builds_once_then_reuses_and_rebuilds_a_corrupt_entry(tmp_path: pathlib.Path) -> None:
    builds: list[pathlib.Path] = []

    def build(staging: pathlib.Path) -> None:
        builds.append(staging)
        (staging / "payload").write_text(f"build {len(builds)}")

    entry = cache.CacheEntry(tmp_path, "things", "demo", "f" * 64)
    path = entry.ensure(build)
    assert path == tmp_path / "things" / f"demo-{'f' * 16}" and (path / "payload").read_text() == "build 1"
    assert entry.ensure(build) == path and len(builds) == 1
    (path / "payload").write_text("bit rot")
    assert entry.ensure(build) == path and (path / "payload").read_text() == "build 2"
    assert not list(path.parent.glob(".staging-*")) and not list(path.parent.glob(".trash-*"))


def test_a_failed_build_publishes_nothing_and_leaves_no_staging(tmp_path: pathlib.Path) -> None:
    def build(staging: pathlib.Path) -> None:
        (staging / "half").write_text("half")
        raise LabError("builder broke")

    entry = cache.CacheEntry(tmp_path, "things", "demo", "e" * 64)
    with pytest.raises(LabError, match="builder broke"):
        entry.ensure(build)
    assert not entry.path.exists() and not list(entry.path.parent.glob(".staging-*"))


def test_staging_left_by_a_dead_builder_is_removed_by_the_next(tmp_path: pathlib.Path) -> None:
    entry = cache.CacheEntry(tmp_path, "things", "demo", "d" * 64)
    stale = entry.path.with_name(f".staging-{entry.path.name}-999999")
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")

    def build(staging: pathlib.Path) -> None:
        (staging / "ok").write_text("ok")

    entry.ensure(build)
    assert not stale.exists() and cache.verify_entry(entry.path) is None


# --- host apt sources (no mirror names here: file: URIs only) ----------------------------------------------------

DEB822 = """# the host's sources
Types: deb
URIs: file:/srv/mirror/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: file:/srv/mirror/security
Suites: bookworm-security
Components: main contrib

Enabled: no
Types: deb
URIs: file:/srv/disabled
Suites: trixie
Components: main
"""


def test_deb822_parsing_handles_comments_lists_and_enabled_flag() -> None:
    sources = aptsources.parse_deb822(DEB822)
    assert [s.uris for s in sources] == [("file:/srv/mirror/debian",), ("file:/srv/mirror/security",), ("file:/srv/disabled",)]
    assert sources[0].serves("bookworm") and sources[0].serves("bookworm-updates") and not sources[0].serves("trixie")
    assert not sources[2].serves("trixie")  # Enabled: no
    assert sources[1].types == ("deb", "deb-src")


def test_one_line_parsing_skips_options_comments_and_deb_src() -> None:
    text = "# comment\ndeb [signed-by=/k.gpg arch=amd64] file:/srv/m bookworm main contrib\ndeb-src file:/srv/m bookworm main\n\n"
    sources = aptsources.parse_one_line(text)
    assert sources[0].uris == ("file:/srv/m",) and sources[0].suites == ("bookworm",) and sources[0].serves("bookworm")
    assert not sources[1].serves("bookworm")


def test_mirror_and_source_files_come_from_the_given_root(tmp_path: pathlib.Path) -> None:
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text("# empty\n")
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "etc/apt/sources.list.d/other.list.disabled").write_text("deb file:/nope bookworm main\n")
    assert aptsources.mirror_uri("bookworm", tmp_path) == "file:/srv/mirror/debian"
    assert aptsources.files_serving("bookworm", tmp_path) == [tmp_path / "etc/apt/sources.list.d/debian.sources"]
    with pytest.raises(LabError, match="no apt source for 'sid' main"):
        aptsources.mirror_uri("sid", tmp_path)


def _host_root(tmp_path: pathlib.Path, sources: str = DEB822, codename: str = "bookworm") -> pathlib.Path:
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(sources)
    (tmp_path / "etc/os-release").write_text(f'PRETTY_NAME="Debian"\nVERSION_CODENAME={codename}\nID=debian\n')
    return tmp_path


def test_a_suite_the_host_does_not_list_comes_from_the_mirrors_of_the_hosts_release(tmp_path: pathlib.Path) -> None:
    root = _host_root(tmp_path)
    assert aptsources.host_codename(root) == "bookworm"
    text = aptsources.derived_sources("trixie", root)
    assert aptsources.parse_deb822(text) == [
        aptsources.AptSource(("deb",), ("file:/srv/mirror/debian",), ("trixie", "trixie-updates"), ("main",),
                             signed_by="/usr/share/keyrings/debian-archive-keyring.gpg"),
        aptsources.AptSource(("deb",), ("file:/srv/mirror/security",), ("trixie-security",), ("main",)),
    ]  # the disabled trixie stanza is not revived, and deb-src is dropped
    scratch = tmp_path / "scratch"
    assert aptsources.mmdebstrap_mirrors("trixie", scratch, root) == [scratch / "trixie.sources"]
    assert (scratch / "trixie.sources").read_text() == text
    # A suite the host lists is served from the host's own files, and nothing is written.
    assert aptsources.mmdebstrap_mirrors("bookworm", tmp_path / "unused", root) == [root / "etc/apt/sources.list.d/debian.sources"]
    assert not (tmp_path / "unused").exists()


def test_deriving_a_suite_needs_the_hosts_codename_and_a_source_for_it(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LabError, match="no VERSION_CODENAME"):
        aptsources.derived_sources("trixie", _host_root(tmp_path / "a", codename=""))
    with pytest.raises(LabError, match=r"none serving the host's own release \(bullseye\)"):
        aptsources.derived_sources("trixie", _host_root(tmp_path / "b", codename="bullseye"))
    assert aptsources.renamed_suite("bookworm-backports", "bookworm", "trixie") == "trixie-backports"
    assert aptsources.renamed_suite("bookwormish", "bookworm", "trixie") is None


def test_signed_by_is_kept_from_both_source_formats_but_not_an_inline_key() -> None:
    one_line = aptsources.parse_one_line("deb [arch=amd64 signed-by=/k.gpg] file:/srv/m bookworm main\n")
    assert one_line[0].signed_by == "/k.gpg" and one_line[0].uris == ("file:/srv/m",)
    inline = "Types: deb\nURIs: file:/m\nSuites: bookworm\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n"
    assert aptsources.parse_deb822(inline)[0].signed_by == ""


def test_printed_commands_hide_the_mirror() -> None:
    assert redact("debootstrap bookworm /t file:/srv/m", ["file:/srv/m"]) == "debootstrap bookworm /t <host apt mirror>"


# --- builder command lines ------------------------------------------------------------------------------------

def test_mmdebstrap_argv() -> None:
    spec = rootfs.TreeSpec(name="t", packages=("b", "a"), merged_usr=False, essential_hooks=("e",), customize_hooks=("c",))
    argv = rootfs.mmdebstrap_argv(spec, pathlib.Path("/out/rootfs.tar"), ["/etc/apt/sources.list.d/debian.sources"])
    assert argv[:3] == ["mmdebstrap", "--mode=root", "--variant=minbase"]
    assert "--include=a,b" in argv and f"--hook-dir={rootfs.MMDEBSTRAP_NO_MERGED_USR_HOOK}" in argv
    assert "--essential-hook=e" in argv and "--customize-hook=c" in argv
    assert argv[-3:] == ["bookworm", "/out/rootfs.tar", "/etc/apt/sources.list.d/debian.sources"]


def test_debootstrap_argv_for_the_split_usr_host_tree() -> None:
    argv = rootfs.debootstrap_argv(rootfs.SPLIT_USR_TREE, pathlib.Path("/t"), "file:/srv/m")
    assert argv == ["debootstrap", "--variant=minbase", "--no-merged-usr", "--include=libfile-find-rule-perl,perl",
                    "bookworm", "/t", "file:/srv/m"]


def test_builders_run_in_a_private_mount_namespace(needs_root: None, tmp_path: pathlib.Path) -> None:
    """Run the wrapped command for real: a mount it makes is in another namespace and never reaches ours."""
    target = tmp_path / "mnt"
    target.mkdir()
    script = 'readlink /proc/self/ns/mnt && mount -t tmpfs lab-test "$1" && grep -c " %s " /proc/self/mountinfo' % target
    result = subprocess.run(rootfs.in_private_namespace(["sh", "-c", script, "sh", str(target)]),
                            capture_output=True, text=True, check=True)
    namespace, mounted = result.stdout.split()
    assert namespace != os.readlink("/proc/self/ns/mnt") and mounted == "1"
    assert " %s " % target not in pathlib.Path("/proc/self/mountinfo").read_text()


def _cfg(tmp: pathlib.Path, accel: str = "tcg", boot: qemu.DirectBoot | qemu.UefiBoot | None = None) -> qemu.VmConfig:
    return qemu.VmConfig(
        name="box,1", accel=accel, cpus=2, memory_mib=1024,
        boot=boot or qemu.DirectBoot(tmp / "vmlinuz", tmp / "initrd.img", "root=/dev/vda rw quiet"),
        drives=(qemu.Drive(tmp / "a,b.qcow2", "lab-root"), qemu.Drive(tmp / "d.qcow2", "lab-disk-1")),
        ssh_port=2222, console_log=tmp / "console.log", pidfile=tmp / "qemu.pid", qmp_socket=tmp / "qmp.sock")


def test_qemu_argv_tcg_direct_boot(tmp_path: pathlib.Path) -> None:
    argv = qemu.qemu_argv(_cfg(tmp_path))
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64" and "-daemonize" in argv and "-nodefaults" in argv
    assert "-accel tcg,tb-size=256 -cpu max -smp 2 -m 1024" in joined
    assert argv[argv.index("-append") + 1] == "root=/dev/vda rw quiet"
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined  # loopback only
    assert f"file={tmp_path}/a,,b.qcow2,if=none,id=drive0" in joined  # comma doubled
    assert joined.index("serial=lab-root") < joined.index("serial=lab-disk-1")  # the root disk is vda
    assert argv[argv.index("-pidfile") + 1] == str(tmp_path / "qemu.pid")


def test_qemu_argv_kvm_uefi(tmp_path: pathlib.Path) -> None:
    argv = qemu.qemu_argv(_cfg(tmp_path, "kvm", qemu.UefiBoot(pathlib.Path("/fw/CODE.fd"), tmp_path / "vars.fd")))
    joined = " ".join(argv)
    assert "-accel kvm -cpu host,-arch-capabilities" in joined and "-kernel" not in argv
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in joined
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/vars.fd" in joined
    with pytest.raises(ValueError):
        qemu.accel_args("hvf")


def test_qemu_process_check_refuses_processes_that_are_not_our_qemu(tmp_path: pathlib.Path) -> None:
    assert not qemu.is_our_qemu(os.getpid(), tmp_path / "qemu.pid", None)
    assert not qemu.terminate(os.getpid(), tmp_path / "qemu.pid", None)  # and so it is not signalled


def test_start_ticks_reads_field_22_even_behind_a_tricky_command_name(tmp_path: pathlib.Path) -> None:
    """Checked against ps(1)'s elapsed seconds, with ') (' in the command name that ends the comm field."""
    tricky = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", tricky)
    child = subprocess.Popen([str(tricky), "30"])
    try:
        wait_for(lambda: pathlib.Path("/proc/%d/comm" % child.pid).read_text().strip() == tricky.name[:15],
                 "the child to exec", timeout=10)
        ticks = qemu.start_ticks(child.pid)
        assert ticks is not None
        uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
        elapsed = int(subprocess.run(["ps", "-o", "etimes=", "-p", str(child.pid)], capture_output=True, text=True,
                                     check=True).stdout)
        assert abs((uptime - ticks / os.sysconf("SC_CLK_TCK")) - elapsed) <= 2
    finally:
        child.kill()
        child.wait()
    assert qemu.start_ticks(child.pid) is None  # reaped: gone


# --- instance helpers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [("1G", 1 << 30), ("512M", 512 << 20), ("2GiB", 2 << 30), ("1048576", 1 << 20), ("1t", 1 << 40)])
def test_parse_size(text: str, size: int) -> None:
    assert instance.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "1.5G", "1P", "-1G", "1K"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(LabError):
        instance.parse_size(text)


@pytest.mark.parametrize("name, ok", [("box1", True), ("lab_smoke-1.a", True), ("Box", False), ("-x", False), ("a/b", False),
                                      ("x" * 41, False)])
def test_instance_names(name: str, ok: bool) -> None:
    if ok:
        assert instance.check_name(name) == name
    else:
        with pytest.raises(LabError):
            instance.check_name(name)


def test_console_text_is_cleaned_of_terminal_escapes() -> None:
    raw = "\x1b[2J\x1b[01;01HBdsDxe: loading\r\n\x1b[1m\x1b[37mrEFInd\x1b[0m\r\nlab login: \x07"
    assert instance.clean_console(raw) == "BdsDxe: loading\nrEFInd\nlab login: "


@pytest.mark.parametrize("tail", ["lab login: ", "lab login:", "last line\n\n", "(the console log is empty)"])
def test_boot_failed_message_contains_its_console_tail_verbatim(tail: str) -> None:
    # CI once failed because the message was stripped but the attribute kept the prompt's trailing blank.
    error = BootFailed("box: no SSH answer within 60 s", tail, "/x/console.log")
    assert error.console_tail == tail.rstrip() and str(error).endswith("---\n" + error.console_tail)


def test_instance_json_round_trip(tmp_path: pathlib.Path) -> None:
    inst = instance.Instance(name="b", variant="ext4", state_dir=tmp_path, image=tmp_path / "img", accel="tcg", cpus=2,
                             memory_mib=1024, ssh_port=2222, ssh_key=tmp_path / "k", console_log=tmp_path / "c",
                             pidfile=tmp_path / "p", qmp_socket=tmp_path / "q", overlays=[tmp_path / "o"], disks=[],
                             qemu_argv=["qemu-system-x86_64"], pid=42, pid_start_ticks=7)
    data = inst.to_json()
    assert data["ssh"] == {"host": "127.0.0.1", "port": 2222, "user": "root", "key": str(tmp_path / "k")}
    assert instance.Instance.from_json(data) == inst


# --- disk layout and guest files ------------------------------------------------------------------------------

def test_gpt_layout_is_aligned_and_leaves_room_for_the_backup_table() -> None:
    layout = gpt.gpt_layout(64, 4096)
    assert layout.esp_start == 2048 and layout.root_start == layout.esp_end + 1 and layout.root_start % 2048 == 0
    assert layout.total_sectors - layout.root_end - 1 >= 33
    assert layout.root_bytes == 4096 << 20
    argv = gpt.sgdisk_argv(layout, pathlib.Path("/d.raw"))
    assert "--change-name=2:ROOT" in argv and "--typecode=1:ef00" in argv
    with pytest.raises(ValueError):
        gpt.gpt_layout(16, 4096)


def test_copy_sparse_into_writes_data_at_the_offset_and_keeps_holes(tmp_path: pathlib.Path) -> None:
    source, disk = tmp_path / "part", tmp_path / "disk"
    with source.open("wb") as handle:
        handle.truncate(8 << 20)
        handle.seek(5 << 20)
        handle.write(b"payload")
    with disk.open("wb") as handle:
        handle.truncate(16 << 20)
    gpt.copy_sparse_into(source, disk, 1 << 20)
    data = disk.read_bytes()
    assert data[(6 << 20):(6 << 20) + 7] == b"payload" and data.count(0) == len(data) - 7
    assert disk.stat().st_blocks * 512 < 2 << 20


def test_refind_conf_boots_subvolume_at_of_partition_root() -> None:
    conf = refind.refind_conf(images.uefi_kernel_args())
    assert "scanfor manual" in conf and "volume  ROOT" in conf and "loader  /@/vmlinuz" in conf
    assert 'options "root=PARTLABEL=ROOT rootflags=subvol=@ rw ' in conf


def test_guest_files_never_follow_a_symlink_out_of_the_tree(tmp_path: pathlib.Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "host-run"
    (tree / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "resolv.conf").write_text("host's own\n")
    os.symlink(outside / "resolv.conf", tree / "etc/resolv.conf")  # as Debian's absolute /run/... link would
    os.symlink(outside, tree / "root")
    guest.write_file(tree, "etc/resolv.conf", guest.RESOLV_CONF)
    assert (outside / "resolv.conf").read_text() == "host's own\n"
    assert not (tree / "etc/resolv.conf").is_symlink() and (tree / "etc/resolv.conf").read_text() == guest.RESOLV_CONF
    with pytest.raises(LabError, match="leads outside the tree"):
        guest.write_file(tree, "root/.ssh/authorized_keys", "key")
    assert list(outside.iterdir()) == [outside / "resolv.conf"]


def test_configure_makes_a_lab_guest(tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc/systemd/system").mkdir(parents=True)
    guest.configure(tree, public_key="ssh-ed25519 AAAA lab", fstab=guest.fstab_ext4())
    assert (tree / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA lab\n"
    assert (tree / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
    assert len((tree / "etc/machine-id").read_text().strip()) == 32
    assert os.readlink(tree / "etc/systemd/system/e2scrub_reap.service") == "/dev/null"
    assert "tmpfs /tmp tmpfs" in (tree / "etc/fstab").read_text()
    assert (tree / "etc/systemd/system/multi-user.target.wants/lab-ready.service").is_symlink()


def test_configure_trims_the_trixie_guest_and_dates_the_update_stamps_like_usr(tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr").mkdir(parents=True)
    (tree / "var").mkdir()
    os.utime(tree / "usr", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    guest.configure(tree, public_key="ssh-ed25519 AAAA lab", fstab=guest.fstab_ext4(), suite="trixie")
    assert os.readlink(tree / "etc/systemd/system/e2scrub_reap.service") == "/dev/null"  # the bookworm trims too
    for unit in guest.TRIXIE_MASKED_UNITS:
        assert os.readlink(tree / "etc/systemd/system" / unit) == "/dev/null"
    assert sorted(p.name for p in (tree / "etc/systemd/system-generators").iterdir()) == sorted(guest.TRIXIE_DISABLED_GENERATORS)
    assert all(os.readlink(p) == "/dev/null" for p in (tree / "etc/systemd/system-generators").iterdir())
    assert {"systemd-fstab-generator", "systemd-getty-generator", "systemd-debug-generator"}.isdisjoint(
        guest.TRIXIE_DISABLED_GENERATORS)
    for stamp in ("etc/.updated", "var/.updated"):
        # ConditionNeedsUpdate= is false while /usr is not newer than the stamp.
        assert (tree / stamp).stat().st_mtime_ns == (tree / "usr").stat().st_mtime_ns
        assert (tree / stamp).read_text().endswith("TIMESTAMP_NSEC=1700000000123456789\n")


def test_bookworm_guests_get_none_of_the_trixie_trims(tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr").mkdir(parents=True)
    guest.configure(tree, public_key="k", fstab=guest.fstab_ext4())
    assert not (tree / "etc/systemd/system-generators").exists() and not (tree / "etc/.updated").exists()
    assert not (tree / "etc/systemd/system/dracut-shutdown.service").is_symlink()


def _openrc_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """The runlevel links the Debian packages leave, as in the real tree."""
    tree = tmp_path / "tree"
    for runlevel, service in (("sysinit", "hwclock.sh"), ("sysinit", "udev"), ("sysinit", "cgroups"),
                              ("default", "ssh"), ("default", "bootlogs")):
        (tree / "etc/runlevels" / runlevel).mkdir(parents=True, exist_ok=True)
        os.symlink(f"/etc/init.d/{service}", tree / "etc/runlevels" / runlevel / service)
    return tree


def test_configure_makes_an_openrc_guest(tmp_path: pathlib.Path) -> None:
    tree = _openrc_tree(tmp_path)
    guest.configure(tree, public_key="ssh-ed25519 AAAA lab", fstab=guest.fstab_btrfs_subvol("@"), init="openrc")
    assert (tree / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA lab\n"
    assert (tree / "etc/resolv.conf").read_text() == guest.RESOLV_CONF and "tmpfs /tmp" in (tree / "etc/fstab").read_text()
    assert "iface eth0 inet dhcp" in (tree / "etc/network/interfaces").read_text()
    assert os.readlink(tree / "etc/systemd/network/99-default.link") == "/dev/null"  # the NIC keeps the name eth0
    assert "make_resolv_conf() { :; }" in (tree / "etc/dhcp/dhclient-enter-hooks.d/lab-keep-resolv-conf").read_text()
    inittab = (tree / "etc/inittab").read_text()
    assert "si::sysinit:/etc/init.d/rcS" in inittab and "l2:2:wait:/etc/init.d/rc 2" in inittab and "getty" not in inittab
    ready = tree / "etc/init.d/lab-ready"
    assert os.access(ready, os.X_OK) and os.readlink(tree / "etc/runlevels/default/lab-ready") == "/etc/init.d/lab-ready"
    assert sorted(p.name for p in (tree / "etc/runlevels/sysinit").iterdir()) == ["udev"]
    assert sorted(p.name for p in (tree / "etc/runlevels/default").iterdir()) == ["lab-ready", "ssh"]
    assert [p.name for p in (tree / "etc/systemd").rglob("*") if not p.is_dir()] == ["99-default.link"]


def test_openrc_ready_service_is_shell_that_needs_ssh_and_prints_the_marker() -> None:
    script = guest.OPENRC_READY_SERVICE
    assert script.startswith("#!/sbin/openrc-run\n") and "\tneed ssh\n" in script and guest.READY_MARKER in script
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0


def test_initramfs_hook_writes_the_module_list(tmp_path: pathlib.Path) -> None:
    from vmlab.run import run

    run(["sh", "-euc", guest.INITRAMFS_HOOK, "sh", str(tmp_path)], timeout=30)
    assert (tmp_path / "etc/initramfs-tools/conf.d/lab-modules.conf").read_text() == "MODULES=list\n"
    hook = tmp_path / "etc/initramfs-tools/hooks/lab-modules"
    assert hook.read_text() == guest.INITRAMFS_MODULES_HOOK and os.access(hook, os.X_OK)


def _dracut_setting(conf: pathlib.Path, name: str) -> list[str]:
    """What dracut reads: its configuration files are bash sourced in order."""
    result = subprocess.run(["bash", "-euc", f'. "$1"; printf "%s" "${{{name}:-}}"', "bash", str(conf)],
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_dracut_hook_writes_a_generic_small_initrd_with_systemd_as_init(tmp_path: pathlib.Path) -> None:
    from vmlab.run import run

    run(["sh", "-euc", guest.DRACUT_HOOK, "sh", str(tmp_path)], timeout=30)
    conf = tmp_path / guest.DRACUT_CONF_FILE
    assert conf.read_text() == guest.DRACUT_CONF and conf.parent == tmp_path / "etc/dracut.conf.d"
    assert _dracut_setting(conf, "hostonly") == ["no"] and _dracut_setting(conf, "hostonly_cmdline") == ["no"]
    # systemd-initrd brings systemd (whose module links /init to it), udevd and journald; no dracut shell services.
    assert _dracut_setting(conf, "dracutmodules") == ["systemd-initrd", "kernel-modules"]
    assert _dracut_setting(conf, "drivers") == ["virtio_pci", "virtio_blk", "virtio_scsi", "ext4", "crc32c_generic"]
    assert _dracut_setting(conf, "install_items") == ["fsck", "e2fsck", "fsck.ext4", "/etc/modules-load.d/lab-initrd.conf"]
    assert _dracut_setting(conf, "compress") == ["zstd"] and _dracut_setting(conf, "early_microcode") == ["no"]
    early = tmp_path / guest.EARLY_MODULES_FILE
    assert [line for line in early.read_text().splitlines() if not line.startswith("#")] == ["virtio_blk"]
    assert "/" + guest.EARLY_MODULES_FILE in guest.DRACUT_INSTALL_ITEMS
    assert set(guest.EARLY_MODULES) <= set(guest.DRACUT_DRIVERS)


def _fake_chroot(tmp_path: pathlib.Path, listing: str) -> dict[str, str]:
    """A `chroot` on PATH that answers `chroot TREE lsinitrd FILE` with `listing`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "listing").write_text(listing)
    (bin_dir / "chroot").write_text(f'#!/bin/sh\n[ "$2" = lsinitrd ] && cat "{bin_dir}/listing"\n')
    (bin_dir / "chroot").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("listing, ok", [
    ("drwxr-xr-x  12 root root  0 Dec  3 16:25 .\nlrwxrwxrwx   1 root root 23 Dec  3 16:25 init -> usr/lib/systemd/systemd\n", True),
    ("lrwxrwxrwx   1 root root 24 Dec  3 16:25 init -> /usr/lib/systemd/systemd\n", True),
    ("-rwxr-xr-x   1 root root 7100 Dec  3 16:25 init\n", False),  # initramfs-tools' shell script
    ("lrwxrwxrwx   1 root root 17 Dec  3 16:25 init -> usr/lib/systemd/systemd-x\n", False),
])
def test_tree_check_accepts_only_initrds_whose_init_is_systemd(tmp_path: pathlib.Path, listing: str, ok: bool) -> None:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/initrd.img-6.12.0-amd64").write_bytes(b"")
    result = subprocess.run(["sh", "-c", guest.CHECK_DRACUT_INITRD, "sh", str(tree)], env=_fake_chroot(tmp_path, listing),
                            capture_output=True, text=True, check=False)
    assert (result.returncode == 0) == ok, result.stderr
    if not ok:
        assert "initrd.img-6.12.0-amd64: /init is not systemd" in result.stderr


def test_tree_check_fails_without_an_initrd(tmp_path: pathlib.Path) -> None:
    (tmp_path / "tree/boot").mkdir(parents=True)
    result = subprocess.run(["sh", "-c", guest.CHECK_DRACUT_INITRD, "sh", str(tmp_path / "tree")],
                            env=_fake_chroot(tmp_path, ""), capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "no initrd in" in result.stderr


def test_missing_tools_are_named_with_their_debian_package() -> None:
    with pytest.raises(MissingTool) as caught:
        require_tools(["mkfs.ext4", "no-such-tool-anywhere", "ls"])
    assert "no-such-tool-anywhere (Debian package ?)" in str(caught.value)
    assert "mkfs.ext4" not in str(caught.value)


def test_unknown_variant_lists_the_choices() -> None:
    with pytest.raises(LabError, match="choose one of ext4, split-usr, split-usr-sepusr, btrfs-uefi, btrfs-uefi-openrc, ext4-trixie$"):
        images.variant("zfs")


def test_missing_debian_package_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    from vmlab import run as run_module

    monkeypatch.setattr(run_module, "_SEARCH_PATH", str(tmp_path))  # nothing is installed here
    with pytest.raises(MissingTool) as caught:
        require_tools(["mkfs.vfat", "mcopy", "qemu-system-x86_64"])
    message = str(caught.value)
    assert "mkfs.vfat (Debian package dosfstools)" in message and "qemu-system-x86_64 (Debian package qemu-system-x86)" in message
    assert message.endswith("apt-get install dosfstools mtools qemu-system-x86")


def test_prune_removes_only_superseded_entries_nobody_holds(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    from vmlab import housekeeping

    def entry(kind: str, name: str, key: str) -> pathlib.Path:
        path = cache.CacheEntry(tmp_path, kind, name, key).path
        path.mkdir(parents=True)
        (path / "payload").write_text(name)
        return path

    current = entry("trees", "bookworm-minbase", "1" * 64)
    superseded = entry("trees", "bookworm-minbase", "2" * 64)
    held = entry("images", "ext4", "3" * 64)
    entry("images", "ext4", "4" * 64)
    other = entry("trees", "someone-elses-tree", "5" * 64)
    known = {("trees", "bookworm-minbase"): current, ("images", "ext4"): tmp_path / "images" / f"ext4-{'4' * 16}"}
    monkeypatch.setattr(housekeeping, "_current", lambda _cache: known)
    statuses = {info.path: info.status for info in housekeeping.entries(tmp_path)}
    assert statuses[current] == "current" and statuses[superseded] == "superseded" and statuses[other] == "other"
    with cache.locked(cache.CacheEntry(tmp_path, "images", "ext4", "3" * 64).lock_path, "test"):
        assert housekeeping.prune(tmp_path) == [superseded]
    assert current.exists() and held.exists() and other.exists() and not superseded.exists()


def test_separate_usr_partitions_are_consecutive_and_named() -> None:
    parts, sectors = gpt.linux_partitions([("ROOT", 1536), ("USR", 3072)])
    assert parts[0].start == gpt.MIB_SECTORS and parts[1].start == parts[0].end + 1
    assert parts[1].size_bytes == 3072 << 20 and sectors == parts[1].end + 1 + gpt.MIB_SECTORS
    argv = gpt.sgdisk_partitions_argv(parts, pathlib.Path("/d.raw"))
    assert "--change-name=1:ROOT" in argv and "--change-name=2:USR" in argv and argv[-1] == "/d.raw"
    with pytest.raises(ValueError):
        gpt.linux_partitions([("TINY", 8)])
    # The variant boots root=/dev/vda1 and its fstab mounts /usr from the second partition.
    assert images.direct_root_args("ext4-sepusr") == "root=/dev/vda1 rw"
    assert "/dev/vda2 /usr ext4" in guest.fstab_ext4_separate_usr()
    spec = images.VARIANTS["split-usr-sepusr"]
    assert images.key_fields(spec, "k", None)["fstab"] == guest.fstab_ext4_separate_usr()


def test_failure_digest_keeps_the_last_failures_with_their_tasks_and_drops_ignored_ones() -> None:
    log = "\n".join([
        "PLAY [p] ***", "TASK [first] *****", "fatal: [vm]: FAILED! => {\"msg\": \"rescued\"}",
        "TASK [ignored] ***", "fatal: [vm]: FAILED! => {\"msg\": \"ignored\"}", "...ignoring",
        "TASK [loop] ***", "failed: [vm] (item=a) => {\"msg\": \"" + "x" * 2000 + "\"}",
        "TASK [last] ***", "ok: [vm]", "fatal: [vm]: UNREACHABLE! => {\"msg\": \"gone\"}", "PLAY RECAP ***",
    ])
    digest = failure_digest(log).splitlines()
    assert digest[0] == "TASK [first]"
    assert digest[2] == "TASK [loop]" and len(digest[3]) == DIGEST_WIDTH + 2
    assert digest[4:] == ["TASK [last]", "  fatal: [vm]: UNREACHABLE! => {\"msg\": \"gone\"}"]
    assert "ignored" not in failure_digest(log)
    assert failure_digest("PLAY RECAP ***\nvm : ok=3 failed=0") == ""
