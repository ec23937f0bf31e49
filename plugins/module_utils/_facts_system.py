# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""immutability_facts: reading the machine. Nothing is written; the only mounts are read-only ones in this
process's own private mount namespace (the btrfs top level, an unmounted ESP), which die with the process.

Each section is gathered on its own: a section that cannot be read is reported absent with a warning, so a
machine where none of the designs is applied yields facts, not an error.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import TOP_LEVEL_ID
from ansible_collections.immutable.root.plugins.module_utils._btrfs.parse import subvolid_of
from ansible_collections.immutable.root.plugins.module_utils._btrfs.observe import observe as observe_layout
from ansible_collections.immutable.root.plugins.module_utils._btrfs.top import mounted_top_level, private_mount_namespace
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import read_mountinfo
from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError, ImmutableRootError
from ansible_collections.immutable.root.plugins.module_utils._facts import (
    HIERARCHIES_KEY, MUTABLE_KEY, env_places, hierarchies_to_check, locks, mount_view, mutable_options,
    overlay_layers, sysext_warnings, usrmerge_view,
)
from ansible_collections.immutable.root.plugins.module_utils._facts_boot import (
    REFIND_CONFIGS, SYSTEMD_BOOT_ENTRIES, esp_candidates, esp_partitions, parse_boot_loader_entry, parse_refind_conf,
)
from ansible_collections.immutable.root.plugins.module_utils._facts_generations import (
    STATE_FILE_MAX, absent, generation_facts, is_state_file_name,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import parse_fstab
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry, mount_containing
from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import read_os_release
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import SEARCH_DIRS
from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import read_release
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_observe import hierarchy_state
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import Hasher
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.observe import open_root, top_nodes

MAX_CONFIG_BYTES = 1 << 20
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system")
# Where SYSTEMD_SYSEXT_HIERARCHIES can be set, by place (relative to root; globs sorted like systemd's drop-ins).
ENV_PLACES = (
    ("sysext_service", "etc/systemd/system/systemd-sysext.service"),
    ("sysext_service", "{etc,run,usr/lib,lib}/systemd/system/systemd-sysext.service.d/*.conf"),
    ("manager", "etc/systemd/system.conf"),
    ("manager", "{etc,run,usr/lib}/systemd/system.conf.d/*.conf"),
    ("profile", "etc/environment"),
    ("profile", "etc/profile.d/*.sh"),
    ("initramfs", "etc/dracut.conf"),
    ("initramfs", "etc/dracut.conf.d/*.conf"),
    ("initramfs", "etc/initramfs-tools/initramfs.conf"),
    ("initramfs", "etc/initramfs-tools/conf.d/*"),
    ("initramfs", "etc/mkinitcpio.conf"),
    ("initramfs", "etc/mkinitcpio.conf.d/*.conf"),
    ("kernel_cmdline", "etc/kernel/cmdline"),
)
Warnings = t.List[str]


def has_program(runner: Runner, name: str) -> bool:
    try:
        runner.binary(name)
    except CommandError:
        return False
    return True


def read_text(path: str, limit: int = MAX_CONFIG_BYTES) -> str | None:
    """A regular file's text (never a device or FIFO), or None when it is absent or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _expand(root: str, pattern: str) -> list[str]:
    if "{" in pattern:
        head, rest = pattern.split("{", 1)
        options, tail = rest.split("}", 1)
        found = []
        for option in options.split(","):
            found.extend(_expand(root, head + option + tail))
        return found
    return sorted(glob.glob(os.path.join(root, pattern)))


def shown(root: str, path: str) -> str:
    return "/" + os.path.relpath(path, root) if root != "/" else path


def config_texts(root: str, places: t.Sequence[tuple[str, str]] = ENV_PLACES,
                 running_cmdline: bool = True) -> list[tuple[str, str, str]]:
    texts = []
    for place, pattern in places:
        for path in _expand(root, pattern):
            text = read_text(path)
            if text is not None:
                texts.append((place, shown(root, path), text))
    if running_cmdline and root == "/":
        text = read_text("/proc/cmdline")
        if text is not None:
            texts.append(("kernel_cmdline", "/proc/cmdline", text))
    return texts


def _at(root: str, path: str) -> str:
    if root == "/" or path == "/":
        return root if path == "/" else path
    return os.path.join(root, path.lstrip("/"))


def mount_facts(root: str, mounts: t.Sequence[MountEntry]) -> dict[str, t.Any]:
    return {"root": mount_view(mounts, _at(root, "/")), "usr": mount_view(mounts, _at(root, "/usr"))}


def lock_facts(root: str, mounts: t.Sequence[MountEntry]) -> list[dict[str, t.Any]]:
    fstab = parse_fstab(read_text(os.path.join(root, "etc/fstab")) or "")
    units: set[str] = set()
    for directory in UNIT_DIRS:
        with contextlib.suppress(OSError):
            units.update(name for name in os.listdir(os.path.join(root, directory)) if name.endswith(".mount"))
    found = locks(mounts, fstab, units)
    if root != "/":
        found = [item for item in found if item["path"] == root or item["path"].startswith(root.rstrip("/") + "/")]
    return found


def _extension_release(root: str, name: str) -> dict[str, str] | None:
    """The merged extension's release data: through the merged /usr, else its directory image."""
    candidates = [root] + [os.path.join(root, directory.lstrip("/"), name) for directory in SEARCH_DIRS]
    for tree in candidates:
        values, _path, _problem = read_release(tree, name)
        if values is not None:
            return values
    return None


def sysext_facts(root: str, mounts: t.Sequence[MountEntry], texts: t.Sequence[tuple[str, str, str]],
                 warnings: Warnings) -> dict[str, t.Any]:
    env = env_places(texts, HIERARCHIES_KEY)
    warnings.extend(sysext_warnings(env))
    mutable = env_places(texts, MUTABLE_KEY) + [
        {"place": place, "path": path, "value": value}
        for place, path, text in texts if place == "sysext_service" for value in mutable_options(text)]
    hierarchies = []
    extensions: dict[str, dict[str, t.Any]] = {}
    for hierarchy in hierarchies_to_check(env):
        state = hierarchy_state(hierarchy, root, mounts)
        top = mount_containing(mounts, state.path) if state.merged else None
        layers = overlay_layers(top) if top is not None else None
        hierarchies.append({"path": hierarchy, "merged": state.merged, "extensions": list(state.extensions),
                            "read_only": bool(top is not None and top.read_only),
                            "writable_overlay": bool(layers and layers["upperdir"])})
        for name in state.extensions:
            entry = extensions.setdefault(name, {"name": name, "hierarchies": [], "version": None, "release": {}})
            entry["hierarchies"].append(hierarchy)
    for name, entry in extensions.items():
        values = _extension_release(root, name) or {}
        entry["release"] = {key: values[key] for key in ("ID", "VERSION_ID", "SYSEXT_LEVEL", "SYSEXT_VERSION_ID",
                                                         "ARCHITECTURE", "SYSEXT_SCOPE") if key in values}
        entry["version"] = values.get("SYSEXT_VERSION_ID") or values.get("VERSION_ID")
    return {"merged": any(item["merged"] for item in hierarchies), "hierarchies": hierarchies,
            "extensions": list(extensions.values()), "env": env, "mutable": mutable}


def usrmerge_facts(root: str) -> dict[str, t.Any]:
    fd = open_root(root)
    try:
        tops, links = top_nodes(fd, Hasher())
        names = os.listdir(fd)
    finally:
        os.close(fd)
    return usrmerge_view(tops, links, names)


def _space(path: str) -> tuple[int, int]:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _entries_on(esp: str) -> list[dict[str, t.Any]]:
    entries: list[dict[str, t.Any]] = []
    for relative in REFIND_CONFIGS:
        text = read_text(os.path.join(esp, relative))
        if text is not None:
            entries.extend(parse_refind_conf(text, relative))
    for path in sorted(glob.glob(os.path.join(esp, SYSTEMD_BOOT_ENTRIES, "*.conf"))):
        text = read_text(path)
        if text is not None:
            entries.append(parse_boot_loader_entry(text, os.path.relpath(path, esp)))
    return entries


def boot_facts(runner: Runner, mounts: t.Sequence[MountEntry], esp: str | None, probe: bool,
               warnings: Warnings) -> dict[str, t.Any]:
    """The ESP (mounted, given, or found by partition type and mounted read-only privately) and its entries."""
    path = esp or next(iter(esp_candidates([(mount.mountpoint, mount.fstype) for mount in mounts])), None)
    if path is not None:
        # A given path is the ESP only when something is mounted right there: a plain directory of the root
        # (the ESP not mounted) must not pass for it.
        mount = next((entry for entry in reversed(mounts) if entry.mountpoint == path), None)
        free, size = _space(path)
        return {"esp": {"path": path, "device": mount.source if mount else None, "mounted": mount is not None,
                        "fstype": mount.fstype if mount else None, "free_bytes": free, "size_bytes": size},
                "entries": _entries_on(path)}
    if not probe or not has_program(runner, "lsblk"):
        return {"esp": None, "entries": []}
    listing = json.loads(runner.run(["lsblk", "--json", "--output", "PATH,PARTTYPE,FSTYPE"]).stdout or "{}")
    devices = esp_partitions(listing)
    if not devices:
        return {"esp": None, "entries": []}
    if len(devices) > 1:
        warnings.append("several EFI System Partitions (%s); reporting %s" % (", ".join(devices), devices[0]))
    private_mount_namespace()
    directory = tempfile.mkdtemp(prefix="immutable-root-esp-")
    try:
        result = runner.run(["mount", "-o", "ro", devices[0], directory], check=False)
        if result.rc != 0:
            warnings.append("ESP %s could not be mounted read-only to read it: %s" % (devices[0], result.stderr.strip()))
            return {"esp": {"path": None, "device": devices[0], "mounted": False, "fstype": None,
                            "free_bytes": None, "size_bytes": None}, "entries": []}
        try:
            free, size = _space(directory)
            return {"esp": {"path": None, "device": devices[0], "mounted": False, "fstype": None,
                            "free_bytes": free, "size_bytes": size}, "entries": _entries_on(directory)}
        finally:
            runner.run(["umount", directory], check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def _state_files(top: str) -> dict[str, str]:
    files = {}
    for name in sorted(os.listdir(top)):
        if is_state_file_name(name):
            text = read_text(os.path.join(top, name), STATE_FILE_MAX + 1)
            if text is not None and len(text) <= STATE_FILE_MAX:
                files[name] = text
    return files


def _describe(top: str, device: str, private: bool) -> str:
    return "subvolid=%d of %s%s" % (TOP_LEVEL_ID, device, " (mounted read-only, privately)" if private else " at " + top)


def generation_facts_for(runner: Runner, root: str, mounts: t.Sequence[MountEntry], top: str | None
                         ) -> dict[str, t.Any]:
    """The layout on the btrfs top level of the root's filesystem (or at top when given)."""
    if top is not None:
        layout = observe_layout(runner, top, root)
        return generation_facts(layout, _state_files(top), top)
    root_mount = mount_containing(mounts, _at(root, "/"))
    if root_mount is None or root_mount.fstype != "btrfs" or not has_program(runner, "btrfs"):
        return absent()
    for mount in mounts:
        if mount.device == root_mount.device and subvolid_of(mount) == TOP_LEVEL_ID:
            layout = observe_layout(runner, mount.mountpoint, root)
            return generation_facts(layout, _state_files(mount.mountpoint),
                                    _describe(mount.mountpoint, root_mount.source, False))
    with mounted_top_level(runner, root_mount.source, read_only=True) as private_top:
        layout = observe_layout(runner, private_top, root)
        return generation_facts(layout, _state_files(private_top), _describe(private_top, root_mount.source, True))


def os_facts(root: str) -> dict[str, t.Any]:
    found = read_os_release(root)
    values = found[1] if found else {}
    return {"id": values.get("ID"), "id_like": values.get("ID_LIKE"), "version_id": values.get("VERSION_ID"),
            "pretty_name": values.get("PRETTY_NAME")}


def section(name: str, warnings: Warnings, fallback: t.Any, read: t.Callable[[], t.Any]) -> t.Any:
    """read(), or fallback with a warning when the section cannot be read on this machine."""
    try:
        return read()
    except (ImmutableRootError, OSError, ValueError) as exc:
        warnings.append("%s: could not be read: %s" % (name, getattr(exc, "msg", None) or exc))
        return fallback


def gather(runner: Runner, root: str, btrfs_top: str | None, esp: str | None, probe_esp: bool) -> dict[str, t.Any]:
    warnings: Warnings = []
    mounts = read_mountinfo()
    texts = config_texts(root)
    facts: dict[str, t.Any] = {"os": section("os", warnings, {}, lambda: os_facts(root))}
    facts.update(mount_facts(root, mounts))
    facts["locks"] = section("locks", warnings, [], lambda: lock_facts(root, mounts))
    facts["sysext"] = section("sysext", warnings, {"merged": False, "hierarchies": [], "extensions": [], "env": [],
                                                   "mutable": []},
                              lambda: sysext_facts(root, mounts, texts, warnings))
    facts["usrmerge"] = section("usrmerge", warnings, {"state": None, "paths": {}, "offending": []},
                                lambda: usrmerge_facts(root))
    # Both of these may enter a private mount namespace: everything that reads the shared view comes first.
    facts["boot"] = section("boot", warnings, {"esp": None, "entries": []},
                            lambda: boot_facts(runner, mounts, esp, probe_esp and root == "/", warnings))
    facts["generations"] = section("generations", warnings, absent(),
                                   lambda: generation_facts_for(runner, root, mounts, btrfs_top))
    facts["warnings"] = warnings
    return facts
