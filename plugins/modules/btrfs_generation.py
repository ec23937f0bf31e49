#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: btrfs_generation
short_description: Alpine-style btrfs root generations with an atomic, durable switch, rollback and retention
version_added: 0.1.0
description:
  - Manages boot environments ("generations") on the top level (subvolid 5) of a btrfs filesystem, in the layout of
    the Alpine wiki's "Immutable root with atomic upgrades" design. A static boot loader configuration boots
    C(/current/0/@), C(/current/1/@), ... and follows whatever C(current) points to.
  - "Layout: C(snapshots/<NAME>/@) is one root subvolume per generation; C(links/<STAMP>/0..N-1) are relative symlinks
    C(../../snapshots/<NAME>), slot 0 the newest; C(current -> ./links/<STAMP>); C(next/) stages the new C(current)
    link; C(commons/@...) are shared writable subvolumes (C(@var@log) is mounted on C(/var/log)); C(fstab) is a
    template in which C(CURRENT_SNAPSHOTS_PATH) becomes C(/snapshots/<NAME>) in each generation's C(etc/fstab)."
  - All state is read from the filesystem (C(btrfs subvolume list), the subvolume-info ioctl, lstat, readlink);
    there is no side database.
  - The switch of C(current) is atomic and durable. A new C(links/<STAMP>) directory is written and fsynced, the
    filesystem is committed, a uniquely named link in C(next/) is renamed over C(current), C(next/) and the top
    level are fsynced, and the filesystem is committed again (syncfs). Only then is the change reported, so a power
    cut leaves the old or the new generation current, also for a boot loader that does not replay the btrfs log.
  - The booted generation (the subvolume mounted on O(root)), generations mounted anywhere, and every generation
    reachable from C(current) are never deleted. btrfs itself would delete a mounted subvolume.
author:
  - immutable.root developers (@immutable-root)
requirements:
  - Linux with btrfs; btrfs-progs (C(btrfs)); util-linux C(mount) and C(umount) for O(device); GNU C(cp) when a
    generation is copied from a directory.
extends_documentation_fragment:
  - immutable.root.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details:
      - V(initialized), V(current), V(absent) and V(pruned) are idempotent.
      - V(present) is idempotent when O(name) is given. Without O(name) every run creates a new generation with a new
        stamp (returned as RV(name)); a role should choose the name once and pass it to V(present) and V(current).
  platform:
    platforms: linux
options:
  top:
    description:
      - Directory where subvolid 5 (the top level) of the btrfs filesystem is mounted.
      - Verified through the mount table, the subvolume root inode and C(btrfs inspect-internal rootid).
    type: path
  device:
    description:
      - Block device (or image file) of the btrfs filesystem. The module mounts its top level on a temporary
        directory in a private mount namespace of its own (read-only in check mode) and always unmounts it.
    type: path
  state:
    description:
      - V(initialized) creates the layout directories, the O(commons) subvolumes and the fstab template, and, when
        nothing is current yet, a first generation (from O(source)) that fills every slot of C(current).
      - V(present) creates generation O(name) as a writable snapshot of generation O(from) (default the one in
        slot 0 of C(current)), or from O(source), and injects its fstab. It does not switch.
      - V(current) makes O(name) current. Slot 0 becomes O(name), the following slots keep the previous history
        without duplicates. A rollback is V(current) with an older name.
      - V(absent) deletes generation O(name) and the link directories that point at it.
      - V(pruned) keeps the O(keep) newest generations, everything reachable from C(current), the booted and
        mounted ones and O(pinned), and deletes the rest in one C(btrfs subvolume delete). Link directories other
        than C(current)'s, staged links and leftovers of interrupted runs are removed too.
    type: str
    required: true
    choices: [initialized, present, current, absent, pruned]
  name:
    description:
      - Generation name, C([A-Za-z0-9][A-Za-z0-9._-]*), no C(/) or C(..).
      - Required for V(current) and V(absent). For V(present) and V(initialized) it defaults to a new stamp, UTC
        C(%Y%m%d%H%M%S) followed by 8 random letters as in the seed.
    type: str
  from:
    description: With V(present), the generation to snapshot. Default is the generation in slot 0 of C(current).
    type: str
  source:
    description:
      - With V(initialized) (first generation) and V(present), where the new root's content comes from.
      - The root directory of a subvolume on the same filesystem (for example the running system's C(@), mounted on
        C(/)) is snapshotted. Any other directory is copied with C(cp -a --one-file-system) into a staging
        subvolume that is renamed into place once complete. Without O(source) and O(from), V(initialized) starts
        from an empty subvolume.
      - Subvolumes nested inside O(source) are not part of a snapshot; they appear as empty directories.
      - The new generation's C(etc/fstab) is written through its C(etc) without following symlinks, so a new
        generation is refused before anything is created when the C(etc) of O(source) (or of the generation it
        is snapshotted from, O(from)) is not a directory, such as a symlink, or its C(etc/fstab) is a
        directory. A symlinked C(etc/fstab) is replaced by a regular file; its target is never written.
    type: path
  slots:
    description: Number of slots in each C(links/<STAMP>) directory, one per boot entry.
    type: int
    default: 4
  keep:
    description: With V(pruned), how many of the newest generations (by creation time) to keep, at least 1.
    type: int
    default: 4
  pinned:
    description: With V(pruned), generations that are never pruned.
    type: list
    elements: str
    default: []
  unhealthy:
    description:
      - With V(pruned), generations that failed their trial boot. They do not count among the O(keep) newest, so
        a failed upgrade does not push a good generation out; they are still kept when booted, linked or pinned.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  commons:
    description: With V(initialized), the shared subvolumes under C(commons/). Existing ones are never removed.
    type: list
    elements: str
    default: ['@home', '@var@log', '@var@tmp', '@var@cache']
  fill_commons:
    description:
      - With V(initialized), a common created by this run starts with a copy of what O(source) has at its
        mount point (C(source/var/log) for C(@var@log)), so converting a running system loses none of its logs,
        caches or homes. Needs O(source). Commons that already exist are never touched.
      - The copy is made in a staging subvolume (C(commons/.partial-<name>)) that is renamed into place when
        complete, with C(cp -a --one-file-system --reflink=auto).
    type: bool
    default: false
    version_added: 0.2.0
  tentative:
    description:
      - With V(current), record the switch as tentative - before C(current) is renamed, the file C(tentative) on
        the top level is written (durably) with JSON C({"name", "previous", "next"}), the new generation and the
        link directories before and after the switch. The boot steps of C(immutable.root.alpine_atomic_root)
        point C(current) back at C(previous) first thing and forward at C(next) once the health checks pass.
      - Only when the switch happens; needs a C(current) that resolves.
    type: bool
    default: false
    version_added: 0.2.0
  building:
    description:
      - With V(present), record the new generation as unfinished - the file C(building) on the top level is
        written (durably) with JSON C({"name"}) before the snapshot is taken, and stays until a later
        V(present) of the same O(name) without O(building), the step that finishes it, removes it.
      - A run cut off in between (a crash, a power cut, a failed upgrade command) leaves the name recorded, so
        the next V(present) with O(building) deletes that generation before it starts, V(pruned) deletes it
        whatever O(keep) says, and V(current) refuses to switch to it. A recorded generation that is booted,
        mounted or reachable from C(current) is never deleted.
      - One build at a time per filesystem - a second build started while another is running deletes the
        first one's generation.
    type: bool
    default: false
    version_added: 0.2.0
  boot_files:
    description:
      - With V(current), and with V(present) of an existing generation (the step that finishes it), paths
        inside the generation its boot entries load, such as the kernel and the initrd. Symlinks are resolved
        inside the generation, the way a boot loader reading the subvolume sees them.
      - The module refuses, naming each missing, empty or non-regular path, and changes nothing - so an upgrade
        that lost its kernel never becomes current.
    type: list
    elements: path
    default: []
    version_added: 0.2.0
  fstab_template:
    description:
      - With V(initialized), the content of the C(fstab) template on the top level; it should contain
        C(CURRENT_SNAPSHOTS_PATH).
      - When omitted and there is no template yet, one is written that mounts C(CURRENT_SNAPSHOTS_PATH/@) read-only
        on C(/) and each of O(commons) read-write, by filesystem UUID.
      - At most 1 MiB (1048576 bytes of UTF-8); a larger one is refused before anything changes. A C(fstab) on
        the top level that is larger, or not a regular file (a symlink, a FIFO), is refused by every state.
    type: str
  root:
    description: Mount point of the running system's root; the generation mounted there is the booted one.
    type: path
    default: /
notes:
  - The module locks the top level (flock) for the whole run, so concurrent runs on one filesystem wait in turn.
  - Generations are ordered by creation time (one-second resolution), then by subvolume id.
  - Deleting waits for the btrfs cleaner (C(btrfs subvolume sync)), so the space is free when the module returns.
    This includes the partial copy a failed copy (such as one that ran out of space) leaves, and the staging copy
    of an interrupted run that the next run deletes, so a retry finds the space again.
seealso:
  - name: Immutable root with atomic upgrades (Alpine wiki)
    description: The layout this module manages.
    link: https://wiki.alpinelinux.org/wiki/Immutable_root_with_atomic_upgrades
  - module: community.general.btrfs_subvolume
"""

EXAMPLES = r"""
- name: Convert a btrfs system installed in @ into the generation layout
  immutable.root.btrfs_generation:
    top: /run/btrfs-top
    state: initialized
    source: /

- name: Create the next generation from the current one (the name makes reruns idempotent)
  immutable.root.btrfs_generation:
    top: /run/btrfs-top
    state: present
    name: "{{ upgrade_name }}"
  register: generation

- name: Make it current (the static boot entries follow /current/0/@)
  immutable.root.btrfs_generation:
    top: /run/btrfs-top
    state: current
    name: "{{ generation.name }}"

- name: An upgrade cut off anywhere between these two steps leaves nothing that can become current
  immutable.root.btrfs_generation:
    device: /dev/disk/by-partlabel/ROOT
    state: present
    name: "{{ upgrade_name }}"
    building: true

- name: Finish it (after the upgrade ran inside it), refusing it when the upgrade lost the kernel
  immutable.root.btrfs_generation:
    device: /dev/disk/by-partlabel/ROOT
    state: present
    name: "{{ upgrade_name }}"
    boot_files: [/boot/vmlinuz-lts, /boot/initramfs-lts]

- name: Roll back to an older generation
  immutable.root.btrfs_generation:
    device: /dev/disk/by-partlabel/ROOT
    state: current
    name: 20260101000000AbCdEfGh

- name: Keep the five newest generations and a known good one
  immutable.root.btrfs_generation:
    top: /run/btrfs-top
    state: pruned
    keep: 5
    pinned: [known-good]

- name: List the generations (check mode changes nothing)
  immutable.root.btrfs_generation:
    top: /run/btrfs-top
    state: pruned
  check_mode: true
  register: listing
"""

RETURN = r"""
name:
  description: The generation the run was about (the new stamp for V(present) without O(name)); null for V(pruned).
  returned: always
  type: str
  sample: 20261123194743AvPtLAvN
generations:
  description: Every generation after the run (predicted in check mode), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Generation name.
      type: str
    path:
      description: Path of its root subvolume inside the filesystem, as C(subvol=) takes it.
      type: str
    subvolid:
      description: Subvolume id (null for a generation check mode predicts).
      type: int
    created:
      description: Creation time, ISO 8601 UTC (null when predicted).
      type: str
    read_only:
      description: Whether the subvolume is read-only.
      type: bool
    slots:
      description: The slots of C(current) that point to it.
      type: list
      elements: int
    booted:
      description: Whether it is mounted on O(root).
      type: bool
    mounted:
      description: Whether it is mounted anywhere in the module's mount namespace.
      type: bool
    pinned:
      description: Whether it is listed in O(pinned).
      type: bool
  sample:
    - name: 20261123194541FPnPHjER
      path: /snapshots/20261123194541FPnPHjER/@
      subvolid: 258
      created: "2026-11-23T19:45:41Z"
      read_only: false
      slots: [1, 2, 3]
      booted: true
      mounted: true
      pinned: false
current:
  description: The generation in slot 0 of C(current), null when C(current) does not resolve.
  returned: always
  type: str
  sample: 20261123194743AvPtLAvN
slots:
  description: The generations in the slots of C(current), slot 0 first.
  returned: always
  type: list
  elements: str
  sample: [20261123194743AvPtLAvN, 20261123194541FPnPHjER, 20261123194541FPnPHjER, 20261123194541FPnPHjER]
links:
  description: The link directory C(current) points to.
  returned: always
  type: str
  sample: 20261123194743QwErTyUi
booted:
  description: The booted generation (mounted on O(root)), null when O(root) is no generation of this filesystem.
  returned: always
  type: str
  sample: 20261123194541FPnPHjER
building:
  description: The generation recorded as unfinished after the run (see O(building)), null when none is.
  returned: always
  type: str
  sample: 20261123194743AvPtLAvN
top:
  description: The top-level directory used; null with O(device), whose temporary mount is gone afterwards.
  returned: always
  type: str
  sample: /run/btrfs-top
actions:
  description: The steps taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: dict
  sample:
    - action: write_links
      target: links/20261123194743QwErTyUi
      detail: 0=20261123194743AvPtLAvN 1=20261123194541FPnPHjER 2=20261123194541FPnPHjER 3=20261123194541FPnPHjER
    - action: switch_current
      target: current
      detail: ./links/20261123194743QwErTyUi
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._btrfs.converge import Run, converge
from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import DEFAULT_COMMONS
from ansible_collections.immutable.root.plugins.module_utils._btrfs.request import validate_options
from ansible_collections.immutable.root.plugins.module_utils._btrfs.top import exclusive_lock, mounted_top_level
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError, failure
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec={
            "top": dict(type="path"),
            "device": dict(type="path"),
            "state": dict(type="str", required=True,
                          choices=["initialized", "present", "current", "absent", "pruned"]),
            "name": dict(type="str"),
            "from": dict(type="str"),
            "source": dict(type="path"),
            "slots": dict(type="int", default=4),
            "keep": dict(type="int", default=4),
            "pinned": dict(type="list", elements="str", default=[]),
            "unhealthy": dict(type="list", elements="str", default=[]),
            "commons": dict(type="list", elements="str", default=list(DEFAULT_COMMONS)),
            "fill_commons": dict(type="bool", default=False),
            "tentative": dict(type="bool", default=False),
            "building": dict(type="bool", default=False),
            "boot_files": dict(type="list", elements="path", default=[]),
            "fstab_template": dict(type="str"),
            "root": dict(type="path", default="/"),
        },
        mutually_exclusive=[("top", "device"), ("from", "source")],
        required_one_of=[("top", "device")],
        supports_check_mode=True,
    )
    # btrfs-progs prints otime in local time.
    runner = Runner(module, environ={"TZ": "UTC"})
    run = Run()
    try:
        options = validate_options(module.params)
        if options["device"] is not None:
            with mounted_top_level(runner, options["device"], read_only=module.check_mode) as top:
                with exclusive_lock(top):
                    result = converge(module, runner, options, top, run)
        else:
            with exclusive_lock(options["top"]):
                result = converge(module, runner, options, options["top"], run)
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(changed=bool(run.done()), actions=run.done(), **failure(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
