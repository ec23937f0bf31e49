#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: usr_move_check
short_description: Preflight, content manifest and verification around the /usr move
version_added: 0.1.0
description:
  - The checks around M(immutable.root.usrmerge_symlinks) that the C(gentoo_usr_move) role (seed 003) runs.
  - O(stage=preflight) refuses, before anything changes and naming every reason, a move that cannot boot or
    cannot finish. A separate C(/usr) filesystem needs an initramfs that mounts it before init; the installed
    generator (dracut, genkernel, initramfs-tools, mkinitcpio) is found and its image or configuration is
    inspected, and the result names the generator, what was inspected and what is missing. For initramfs-tools
    the image is unpacked with C(unmkinitramfs) and its C(/init) must contain the C(/usr) mount
    (C(read_fstab_entry /usr), C(mountfs /usr)), and C(/etc/fstab) must list C(/usr); for dracut the
    C(lsinitrd) listing must hold the usrmount hook or systemd's fstab generator; for mkinitcpio C(HOOKS) must
    hold C(usr) or C(systemd); genkernel's linuxrc mounts a C(/usr) listed in C(/etc/fstab).
    The filesystem holding C(/usr) must have room for what is copied rather than hard-linked (every regular file
    below the old directories when C(/usr) is another filesystem); no package manager may run (dpkg, apk and portage locks held in
    C(/proc/locks), pacman's C(db.lck), their processes); the root must not be mounted read-only.
  - O(stage=snapshot) takes a read-only btrfs snapshot of O(root) named C(usr-move-<UTC stamp>) in
    O(snapshot_dir), so the move can be undone, and checks that it is a read-only subvolume. It refuses a root
    that is not a btrfs subvolume and a O(snapshot_dir) on another filesystem, and does nothing once the root is
    merged. The snapshot is one atomic operation; killed at any instant, it exists whole or not at all.
  - O(stage=record) writes a manifest of every path below the old directories (C(/bin), C(/sbin), C(/lib*))
    with the sha256 of the bytes it resolves to. Nothing is written once the root is merged.
  - O(stage=verify) compares every recorded path with what it resolves to now, checks that the ELF interpreter
    (C(PT_INTERP)) of every binary in C(/usr/bin) and the O(compat_links) resolve, and asks the init system (systemd, OpenRC) for failed
    units. Any difference fails and names the paths.
author:
  - immutable.root developers (@immutable-root)
extends_documentation_fragment:
  - immutable.root.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    platforms: linux
options:
  stage:
    description: Which part to run.
    type: str
    choices: [preflight, snapshot, record, verify]
    required: true
  root:
    description:
      - The root directory (C(/) for the running system). The init system and package manager processes are only
        asked about when it is C(/).
    type: path
    default: /
  initramfs:
    description:
      - The initramfs image to inspect with O(stage=preflight). Default is the image of the running kernel where the
        generator puts it (C(/boot/initrd.img-RELEASE), C(/boot/initramfs-RELEASE.img)).
    type: path
  manifest:
    description: The manifest file O(stage=record) writes and O(stage=verify) reads.
    type: path
    default: /var/lib/gentoo-usr-move/manifest.json
  snapshot_dir:
    description:
      - With O(stage=snapshot), the directory that receives the snapshot (created with mode C(0700)); it must be
        on the btrfs filesystem of O(root).
    type: path
    default: /.snapshots
  failed_units:
    description: With O(stage=verify), fail when the init system reports failed units.
    type: bool
    default: true
  compat_links:
    description:
      - With O(stage=verify), the seed's compatibility paths that must resolve wherever their C(/usr) counterpart
        exists (the shell and the program loaders).
    type: list
    elements: path
    default: [/bin/sh, /lib64/ld-linux-x86-64.so.2, /lib/ld-linux.so.2]
notes:
  - The preflight and the verification change nothing; O(stage=record) writes only O(manifest);
    O(stage=snapshot) creates only O(snapshot_dir) and the snapshot in it.
seealso:
  - module: immutable.root.usrmerge_symlinks
"""

EXAMPLES = r"""
- name: Refuse a /usr move that cannot boot or finish
  immutable.root.usr_move_check:
    stage: preflight

- name: A read-only btrfs snapshot of / that undoes the move
  immutable.root.usr_move_check:
    stage: snapshot
  register: before_move

- name: Record what every old path resolves to
  immutable.root.usr_move_check:
    stage: record

- name: After the reboot, every old path still resolves to the same bytes
  immutable.root.usr_move_check:
    stage: verify
"""

RETURN = r"""
checks:
  description: With O(stage=preflight), every check with its verdict and reason.
  returned: always
  type: list
  elements: dict
  sample: [{name: initramfs, passed: true, reason: "/usr is a separate filesystem (/dev/vda2); initramfs-tools (/boot/initrd.img-6.1.0-50-amd64) mounts it"}]
initramfs:
  description: The generator found, what was inspected, whether it mounts /usr and what is missing; null when /usr is not separate.
  returned: always
  type: dict
  sample: {generator: initramfs-tools, inspected: /boot/initrd.img-6.1.0-50-amd64, mounts_usr: true, missing: null}
usr_separate:
  description: Whether /usr is its own filesystem.
  returned: always
  type: bool
root_fstype:
  description: The filesystem type of the root (C(btrfs) means a snapshot can be taken first).
  returned: always
  type: str
  sample: ext4
merged:
  description: Whether the root is already merged (none of C(bin), C(sbin), C(lib*) is a real directory any more).
  returned: always
  type: bool
os_id:
  description: C(ID) of the root's os-release (C(gentoo) asks for a profile switch afterwards).
  returned: always
  type: str
  sample: debian
snapshot:
  description: With O(stage=snapshot), the snapshot taken (or in check mode to be taken); null when the root is merged.
  returned: always
  type: str
  sample: /.snapshots/usr-move-20261203T071500Z
recorded:
  description: With O(stage=record) and O(stage=verify), how many old paths the manifest holds.
  returned: always
  type: int
verification:
  description: With O(stage=verify), what was compared and found.
  returned: always
  type: dict
  sample: {checked_paths: 7123, differing: [], checked_binaries: 412, broken_interpreters: [],
           init_system: systemd, system_state: running, failed_units: [], missing_links: []}
actions:
  description: What was (or in check mode would be) written.
  returned: always
  type: list
  elements: dict
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action, as_dicts
from ansible_collections.immutable.root.plugins.module_utils._core.durable import durable_replace
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    ImmutableRootError, ParameterError, failure,
)
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import mount_containing
from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import read_os_release
from ansible_collections.immutable.root.plugins.module_utils._usrmove.inspect import (
    manifest_differences, preflight_checks, refusal,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmove.model import (
    STAGES, PreflightFacts, UsrMoveError, Verification,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmove.observe import (
    broken_interpreters, bytes_to_copy, init_state, inspect_initramfs, missing_compat_links, old_directories,
    old_paths, read_mounts, resolve_all, root_and_usr, running_package_managers, usr_available, usr_is_separate,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmove.snapshot import (
    SnapshotFacts, is_subvolume_root, nearest_existing, plan_snapshot, snapshot_name, take_snapshot,
    verify_snapshot,
)


def preflight(module: AnsibleModule, runner: Runner, root: str, result: dict) -> None:
    mounts = read_mounts()
    root_mount, usr_mount = root_and_usr(root, mounts)
    separate = usr_is_separate(root_mount, usr_mount)
    merged = not old_directories(root)
    initramfs = inspect_initramfs(runner, root, module.params["initramfs"]) if separate and not merged else None
    facts = PreflightFacts(
        root_read_only=root_mount.read_only or "ro" in root_mount.super_options,
        root_fstype=root_mount.fstype, usr_separate=separate,
        usr_source=usr_mount.source if separate else None, initramfs=initramfs,
        needed_bytes=0 if merged else bytes_to_copy(root, separate), available_bytes=usr_available(root),
        package_managers=running_package_managers(root, mounts), merged=merged,
    )
    checks = preflight_checks(facts)
    result.update(checks=[check.as_dict() for check in checks], usr_separate=separate,
                  root_fstype=root_mount.fstype, merged=merged,
                  initramfs=initramfs.as_dict() if initramfs else None)
    message = refusal(checks)
    if message:
        raise UsrMoveError(message, extra=result)


def snapshot(module: AnsibleModule, runner: Runner, root: str, snapshot_dir: str, result: dict) -> None:
    mounts = read_mounts()
    root_mount = root_and_usr(root, mounts)[0]
    result["root_fstype"] = root_mount.fstype
    result["merged"] = merged = not old_directories(root)
    btrfs = root_mount.fstype == "btrfs"
    holder = mount_containing(mounts, nearest_existing(snapshot_dir)) if btrfs else None
    facts = SnapshotFacts(merged=merged, root_fstype=root_mount.fstype,
                          root_is_subvolume=btrfs and is_subvolume_root(root),
                          same_filesystem=holder is not None and holder.device == root_mount.device)
    target = plan_snapshot(root, snapshot_dir, snapshot_name(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())), facts)
    result["snapshot"] = target
    if target is None:
        return
    if os.path.lexists(target):  # a rerun within the same second
        verify_snapshot(runner, target)
        return
    result["actions"].append(Action("snapshot", target, "read-only btrfs snapshot of %s" % root))
    result["changed"] = True
    if not module.check_mode:
        take_snapshot(runner, root, snapshot_dir, target)


def record(module: AnsibleModule, root: str, manifest: str, result: dict) -> None:
    paths = old_paths(root)
    if not paths:
        result["recorded"] = len(load(manifest).get("paths", {})) if os.path.exists(manifest) else 0
        return
    text = json.dumps(dict(root=root, paths=resolve_all(root, paths)), indent=0, sort_keys=True) + "\n"
    result["recorded"] = len(paths)
    try:
        with open(manifest, encoding="utf-8") as handle:
            if handle.read() == text:
                return
    except FileNotFoundError:
        pass
    result["actions"].append(Action("write_manifest", manifest, "%d old paths with the sha256 they resolve to" % len(paths)))
    result["changed"] = True
    if not module.check_mode:
        os.makedirs(os.path.dirname(manifest), mode=0o700, exist_ok=True)
        durable_replace(manifest, text.encode("utf-8"), mode=0o600)


def load(manifest: str) -> dict:
    try:
        with open(manifest, encoding="utf-8") as handle:
            return dict(json.load(handle))
    except FileNotFoundError:
        raise ParameterError("manifest", "%s does not exist; run stage=record before the move" % manifest)
    except ValueError as exc:
        raise ParameterError("manifest", "%s is not a manifest: %s" % (manifest, exc))


def verify(module: AnsibleModule, runner: Runner, root: str, manifest: str, result: dict) -> None:
    if os.path.exists(manifest):
        recorded = load(manifest).get("paths", {})
    else:
        module.warn("manifest %s does not exist (the root was merged before): old paths are not compared" % manifest)
        recorded = {}
    differing = manifest_differences(recorded, resolve_all(root, recorded))
    checked, broken = broken_interpreters(root)
    init_system, state, failed = init_state(runner, root)
    missing = missing_compat_links(root, module.params["compat_links"])
    verification = Verification(len(recorded), tuple(differing), checked, broken, init_system, state,
                                failed if module.params["failed_units"] else (), missing)
    result["recorded"] = len(recorded)
    result["verification"] = dict(checked_paths=len(recorded), differing=differing, checked_binaries=checked,
                                  broken_interpreters=list(broken), init_system=init_system, system_state=state,
                                  failed_units=list(failed), missing_links=list(missing))
    if verification.problems:
        raise UsrMoveError("verification failed: %s" % "; ".join(verification.problems), extra=result)


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec=dict(
            stage=dict(type="str", choices=list(STAGES), required=True),
            root=dict(type="path", default="/"),
            initramfs=dict(type="path"),
            manifest=dict(type="path", default="/var/lib/gentoo-usr-move/manifest.json"),
            snapshot_dir=dict(type="path", default="/.snapshots"),
            failed_units=dict(type="bool", default=True),
            compat_links=dict(type="list", elements="path",
                              default=["/bin/sh", "/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux.so.2"]),
        ),
        supports_check_mode=True,
    )
    result: dict = dict(changed=False, actions=[], checks=[], initramfs=None, usr_separate=False, root_fstype="",
                        merged=False, os_id="", snapshot=None, recorded=0, verification={})
    try:
        root = validate_path("root", module.params["root"], must_exist=True, directory=True)
        manifest = validate_path("manifest", module.params["manifest"])
        snapshot_dir = validate_path("snapshot_dir", module.params["snapshot_dir"])
        if module.params["initramfs"] is not None:
            validate_path("initramfs", module.params["initramfs"], must_exist=True)
        release = read_os_release(root)
        result["os_id"] = release[1].get("ID", "") if release else ""
        runner = Runner(module)
        stage = module.params["stage"]
        if stage == "preflight":
            preflight(module, runner, root, result)
        elif stage == "snapshot":
            snapshot(module, runner, root, snapshot_dir, result)
        elif stage == "record":
            record(module, root, manifest, result)
        else:
            verify(module, runner, root, manifest, result)
    except (ImmutableRootError, OSError) as exc:
        details = failure(exc)
        details.update({key: value for key, value in result.items() if key not in details})
        details["actions"] = as_dicts(details["actions"]) if details["actions"] and isinstance(details["actions"][0], Action) else details["actions"]
        module.fail_json(**details)
    result["actions"] = as_dicts(result["actions"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
