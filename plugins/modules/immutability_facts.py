#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: immutability_facts
short_description: One read-only view of everything this collection manages on a machine
version_added: 0.2.0
description:
  - Returns C(ansible_facts.immutable_root), for playbooks and fleet audits to assert on - the mounts of
    C(/) and C(/usr) (source, filesystem, read-only, overlay layers), merged system extensions and where
    C(SYSTEMD_SYSEXT_HIERARCHIES) is configured, read-only self-binds (the C(ro_bind) locks) and the unit that
    recreates each, the C(btrfs_generation) layout (current, booted, slots, tentative state), the ESP and its
    boot entries, and the C(/usr) merge state.
  - Read-only by construction. Nothing is written. To read the btrfs top level and an ESP that is not
    mounted, the module mounts them read-only in its own private mount namespace, which nobody else sees and
    which ends with the module's process.
  - A machine where none of the designs is applied gets facts that say so (empty lists, V(null),
    C(layout_found=false)), not an error. A section that cannot be read is reported absent with a warning in
    C(warnings).
  - Reuses the parsers of the other modules (mountinfo, fstab, os-release, extension-release, the btrfs
    layout reader, the C(/usr) merge walk), so the facts agree with what those modules would decide.
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
  root:
    description:
      - The root to describe. Configuration files, os-release and the C(/usr) merge state are read below it;
        mounts are looked up at O(root) and O(root)C(/usr) in the mount table.
      - Boot facts (the ESP) are only probed for V(/).
    type: path
    default: /
  btrfs_top:
    description:
      - Where the btrfs top level (subvolid 5) holding the generations is mounted.
      - Default is to find a mount of subvolid 5 of the root's filesystem, or else to mount it read-only in
        the module's private mount namespace; nothing is reported when the root is not on btrfs.
    type: path
  esp:
    description:
      - Mountpoint of the EFI System Partition. Default is a vfat mount at C(/efi), C(/boot/efi) or C(/boot),
        or else (with O(probe_esp)) the partition of the ESP type, mounted read-only privately.
    type: path
  probe_esp:
    description:
      - Look for an unmounted ESP by GPT partition type with C(lsblk) when none is mounted.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Gather the immutability facts
  immutable.root.immutability_facts:

- name: The pacman database is locked and /usr is merged
  ansible.builtin.assert:
    that:
      - ansible_facts.immutable_root.locks | selectattr('path', 'eq', '/var/lib/pacman') | map(attribute='read_only') | first
      - ansible_facts.immutable_root.usrmerge.state == 'merged'
"""

RETURN = r"""
ansible_facts:
  description: The facts.
  returned: always
  type: dict
  contains:
    immutable_root:
      description: Everything below, under one key.
      returned: always
      type: dict
      contains:
        os:
          description: C(ID), C(ID_LIKE), C(VERSION_ID) and C(PRETTY_NAME) of the root's os-release (V(null) when absent).
          type: dict
          sample: {id: debian, id_like: null, version_id: "12", pretty_name: "Debian GNU/Linux 12 (bookworm)"}
        root:
          description:
            - The visible mount holding the root. Keys - C(path) asked about; C(mountpoint) of the mount holding it;
              C(source); C(fstype); C(read_only) (per-mount or superblock C(ro)); C(own_mount) (the path is a
              mountpoint itself); C(options) (per-mount options); C(subvolume) (btrfs C(subvol=), else V(null));
              C(overlay) (V(null), or C(lowerdir) list top first, C(upperdir), C(workdir)); C(stacked) (mounts
              stacked on that mountpoint).
          type: dict
          sample: {path: /, mountpoint: /, source: /dev/vda2, fstype: btrfs, read_only: true, own_mount: true,
                   options: [ro, relatime], subvolume: /snapshots/20261202T0700Zabcdefgh/@, overlay: null, stacked: 1}
        usr:
          description: The same for C(/usr); C(own_mount) is true when C(/usr) is a separate filesystem or a sysext overlay.
          type: dict
        sysext:
          description: systemd system extensions.
          type: dict
          contains:
            merged:
              description: Whether any hierarchy has extensions merged.
              type: bool
            hierarchies:
              description:
                - One entry per hierarchy checked (C(/usr), C(/opt) and every one named in a configured
                  C(SYSTEMD_SYSEXT_HIERARCHIES)) - C(path), C(merged), C(extensions) (names, systemd's order),
                  C(read_only), C(writable_overlay) (the overlay has an upper directory, the mutable mode of
                  systemd 256+).
              type: list
              elements: dict
            extensions:
              description:
                - One entry per merged extension - C(name), C(hierarchies) it is merged into, C(version)
                  (C(SYSEXT_VERSION_ID), else C(VERSION_ID) of its release file, V(null) when it has neither),
                  C(release) (C(ID), C(VERSION_ID), C(SYSEXT_LEVEL), C(SYSEXT_VERSION_ID), C(ARCHITECTURE),
                  C(SYSEXT_SCOPE) where set).
              type: list
              elements: dict
              sample: [{name: ripgrep, hierarchies: [/usr], version: "14.1.0", release: {ID: arch}}]
            env:
              description:
                - Every place C(SYSTEMD_SYSEXT_HIERARCHIES) is set - C(place) (V(sysext_service) for the unit and
                  its drop-ins, V(manager) for C(system.conf) C(DefaultEnvironment), V(profile) for
                  C(/etc/environment) and C(/etc/profile.d), V(initramfs) for dracut, initramfs-tools and
                  mkinitcpio configuration, V(kernel_cmdline) for C(/etc/kernel/cmdline) and C(/proc/cmdline)),
                  C(path), C(value). A warning is added when the values differ.
              type: list
              elements: dict
              sample: [{place: sysext_service, path: /etc/systemd/system/systemd-sysext.service.d/opt.conf, value: "/usr:/opt"}]
            mutable:
              description: Where a mutable mode is configured (C(SYSTEMD_SYSEXT_MUTABLE_MODE) or C(--mutable=) on an
                C(ExecStart) of the service), same keys as RV(ansible_facts.immutable_root.sysext.env).
              type: list
              elements: dict
        locks:
          description:
            - One entry per path whose top mount is a self-bind (the C(ro_bind) test) - C(path), C(read_only),
              C(unit) (the mount unit that recreates it at boot, from a unit file in C(/etc/systemd/system) or
              C(/run/systemd/system) or from an fstab bind line, else V(null)), C(persisted) (V(unit), V(fstab)
              or V(null)), C(layers) (stacked self-binds; more than one is the mark of repeated binds).
          type: list
          elements: dict
          sample: [{path: /var/lib/pacman, read_only: true, unit: var-lib-pacman.mount, persisted: unit, layers: 1}]
        generations:
          description: The btrfs_generation layout on the root filesystem's btrfs top level.
          type: dict
          contains:
            layout_found:
              description: Whether any part of the layout (its directories, C(current), a generation) exists.
              type: bool
            top:
              description: Which top level was read and how (V(null) when the root is not on btrfs).
              type: str
            current:
              description: The generation in slot 0 of C(current).
              type: str
            booted:
              description: The generation mounted as the running root.
              type: str
            slots:
              description: The generation each slot of C(current) points to, slot 0 first.
              type: list
              elements: str
            generations:
              description: As btrfs_generation returns them - C(name), C(path), C(subvolid), C(created),
                C(read_only), C(slots), C(booted), C(mounted), C(pinned).
              type: list
              elements: dict
            pinned:
              description: Generation names listed in the top-level state file C(pinned).
              type: list
              elements: str
            tentative:
              description:
                - The generation on trial, from the top-level state file C(tentative) (or C(trial)) - a name, or
                  JSON with C(name) (C(alpine_atomic_root) writes C({"name", "previous", "next"})).
              type: str
            blessed:
              description: V(false) while a generation is tentative (switched to, or on its trial boot), else
                whether C(current) is the one C(blessed) names; V(null) when there is no tentative-upgrade state.
              type: bool
            failed:
              description: The generation that last failed its trial, from the top-level file C(failed) - C(name),
                C(reason) (which health check failed and its output, or a trial boot that never reached the checks),
                C(at); V(null) when none did.
              type: dict
            building:
              description:
                - The generation whose build never finished, from the top-level file C(building) that
                  M(immutable.root.btrfs_generation) writes with O(immutable.root.btrfs_generation#module:building)
                  (an upgrade cut off by a crash or a power cut); V(null) when none is. The next upgrade or prune
                  deletes it.
              type: str
              version_added: 0.2.0
            state_files:
              description: Every other small (4 KiB at most) regular file at the top level, name to content.
              type: dict
        boot:
          description: The boot side.
          type: dict
          contains:
            esp:
              description: V(null), or C(path) (its mountpoint; V(null) when it was only mounted privately to read
                it), C(device), C(mounted) (for a given O(esp), whether a filesystem is mounted right at it),
                C(fstype) (of that mount), C(free_bytes), C(size_bytes).
              type: dict
            entries:
              description:
                - Boot entries found on the ESP - rEFInd C(menuentry) stanzas of C(EFI/refind/refind.conf) or
                  C(EFI/BOOT/refind.conf) and systemd-boot C(loader/entries/*.conf). Keys - C(loader_type),
                  C(config), C(title), C(volume), C(loader), C(initrd), C(options), C(disabled), C(submenus).
              type: list
              elements: dict
              sample: [{loader_type: refind, config: EFI/BOOT/refind.conf, title: "current", volume: ROOT,
                        loader: /current/0/@/vmlinuz, initrd: /current/0/@/initrd.img,
                        options: "root=PARTLABEL=ROOT rootflags=subvol=/current/0/@ ro", disabled: false, submenus: []}]
        usrmerge:
          description:
            - C(state) - V(merged) (every present C(/bin), C(/sbin), C(/lib*) is a symlink into C(/usr)),
              V(split) (all are real directories) or V(partial) (a mix, a symlink leading elsewhere, or
              leftovers C(.usrmerge~*) of an interrupted usrmerge_symlinks run); C(paths), each top-level path
              as a word; C(offending), the paths that make it partial.
          type: dict
          sample: {state: merged, paths: {/bin: symlink -> usr/bin, /lib: symlink -> usr/lib}, offending: []}
        warnings:
          description: What could not be read, and inconsistencies worth a look.
          type: list
          elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError, failure
from ansible_collections.immutable.root.plugins.module_utils._facts_system import gather
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            btrfs_top=dict(type="path"),
            esp=dict(type="path"),
            probe_esp=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    try:
        root = validate_path("root", module.params["root"], must_exist=True, directory=True)
        top = module.params["btrfs_top"]
        esp = module.params["esp"]
        if top is not None:
            top = validate_path("btrfs_top", top, must_exist=True, directory=True)
        if esp is not None:
            esp = validate_path("esp", esp, must_exist=True, directory=True)
        facts = gather(Runner(module), root, top, esp, module.params["probe_esp"])
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(**failure(exc))
    for warning in facts["warnings"]:
        module.warn(warning)
    module.exit_json(changed=False, ansible_facts=dict(immutable_root=facts))


if __name__ == "__main__":
    main()
