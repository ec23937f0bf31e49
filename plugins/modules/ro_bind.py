#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ro_bind
short_description: Lock a directory with a read-only bind mount of itself
version_added: 0.1.0
description:
  - Makes the top mount on O(path) a read-only bind of O(path) itself (a I(self-bind)), or removes every
    self-bind layer from it.
  - This is the C(/var/lib/pacman) lock of an immutable C(/usr) design. While the package database is
    read-only, pacman fails at once with C(could not lock database) and writes nothing.
  - The lock is made atomically with the kernel's new mount API (C(open_tree), C(mount_setattr),
    C(move_mount)) when the kernel offers it, so no writable bind is ever visible. Otherwise it falls back to
    C(mount --bind) followed by C(mount -o remount,bind,ro) and checks the result.
  - Idempotent; an already locked path is left alone, a writable self-bind (an interrupted lock or drift) is
    only remounted read-only, and stacked self-binds are collapsed to one.
  - Mounts that are not self-binds of O(path) are never stacked on or unmounted; the module fails and names them.
  - Every change is verified by reading the mount table again afterwards.
author:
  - immutable.root developers (@immutable-root)
requirements:
  - Linux; util-linux C(mount) and C(umount) for the fallback path and for unlocking.
extends_documentation_fragment:
  - immutable.root.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
  platform:
    platforms: linux
options:
  path:
    description:
      - Absolute, normalised path of an existing directory (or file) to lock. Paths that contain a symlink
        are refused, because the kernel records the resolved path in the mount table.
      - Taken as written, like O(fstab_path) and O(unit_dir); C(~) and C($VAR) are not expanded.
      - With O(persist=systemd), a path that a unit file cannot hold byte for byte (a newline, a trailing
        backslash or space, bytes that are not UTF-8) is refused before anything changes.
    type: str
    required: true
  state:
    description:
      - V(present) makes the top mount on O(path) a read-only self-bind.
      - V(absent) removes every self-bind layer from O(path), and nothing else.
    type: str
    choices: [present, absent]
    default: present
  persist:
    description:
      - V(none) changes the running system only, the temporary lock of the design.
      - V(fstab) also keeps a C(PATH PATH none bind,ro 0 0) entry in O(fstab_path), removed again with
        O(state=absent).
      - V(systemd) also keeps an enabled C(.mount) unit in O(unit_dir), removed again with O(state=absent).
      - With O(state=absent) and O(persist=none), persisted entries are left alone and reported as warnings.
    type: str
    choices: [none, fstab, systemd]
    default: none
  method:
    description:
      - How a new lock is made. V(auto) uses the new mount API and falls back to bind + remount when the kernel
        or a sandbox refuses it. V(mount_api) and V(bind_remount) force one method.
    type: str
    choices: [auto, mount_api, bind_remount]
    default: auto
  fstab_path:
    description:
      - The fstab file used with O(persist=fstab). When it is a symlink, its target is rewritten and the link kept.
      - The rewrite keeps every other line byte for byte and holds a lock, so concurrent runs sharing the file
        take turns.
    type: str
    default: /etc/fstab
  unit_dir:
    description: The directory for the mount unit used with O(persist=systemd).
    type: str
    default: /etc/systemd/system
  bound_to:
    description:
      - A systemd unit (for example C(systemd-sysext.service)) whose activity the lock follows; needs
        O(persist=systemd). The mount unit is then bound to it (C(BindsTo=), C(After=), enabled in its
        C(.wants) directory instead of C(local-fs.target)'s), so systemd makes the lock when that unit starts
        and removes it when the unit stops or is skipped by a failed condition.
      - With O(state=present) the lock is held now only while that unit is active; while it is inactive the
        module removes the self-binds instead, as systemd would.
    type: str
    version_added: 0.2.0
notes:
  - Files opened for writing before the lock stay writable through their open file descriptors; such processes
    are returned in RV(open_writers) and warned about.
  - The lock lives in the mount namespace the module runs in; a warning says so when that is not PID 1's.
seealso:
  - module: ansible.posix.mount
  - name: mount_setattr(2)
    description: The system call that makes the detached bind read-only before it is attached.
    link: https://man7.org/linux/man-pages/man2/mount_setattr.2.html
"""

EXAMPLES = r"""
- name: Block pacman while system extensions are merged
  immutable.root.ro_bind:
    path: /var/lib/pacman

- name: Keep the lock across reboots with a mount unit
  immutable.root.ro_bind:
    path: /var/lib/pacman
    persist: systemd

- name: Hold the lock exactly while system extensions are merged (systemd-sysext.service is active)
  immutable.root.ro_bind:
    path: /var/lib/pacman
    persist: systemd
    bound_to: systemd-sysext.service

- name: Release the lock for a maintenance window
  immutable.root.ro_bind:
    path: /var/lib/pacman
    state: absent
"""

RETURN = r"""
mount:
  description: The top mount on O(path) after the run (predicted in check mode).
  returned: always
  type: dict
  contains:
    path:
      description: The path.
      type: str
    mount_id:
      description: Mount id of the top mount, null when nothing is mounted on O(path) (or not yet, in check mode).
      type: int
    source:
      description: Mount source of the top mount.
      type: str
    fstype:
      description: Filesystem type of the top mount.
      type: str
    fs_root:
      description: The directory of the filesystem that the top mount shows.
      type: str
    mount_options:
      description: Per-mount options (V(ro) here is the lock).
      type: list
      elements: str
    super_options:
      description: Superblock options, shared by every mount of the filesystem.
      type: list
      elements: str
    propagation:
      description: V(shared), V(slave), V(shared+slave), V(private) or V(unbindable).
      type: str
    layers:
      description: Number of mounts stacked on O(path).
      type: int
    self_bind_layers:
      description: How many of them are self-binds.
      type: int
    self_bind:
      description: Whether the top mount is a self-bind.
      type: bool
    read_only:
      description: Whether the top mount is read-only.
      type: bool
  sample:
    path: /var/lib/pacman
    mount_id: 812
    source: /dev/vda2
    fstype: ext4
    fs_root: /var/lib/pacman
    mount_options: [ro, relatime]
    super_options: [rw]
    propagation: shared
    layers: 1
    self_bind_layers: 1
    self_bind: true
    read_only: true
actions:
  description: The steps taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: dict
  sample:
    - action: lock
      target: /var/lib/pacman
      detail: read-only self-bind
method:
  description: How the lock was made, V(mount_api) or V(bind_remount); null when no new lock was made.
  returned: always
  type: str
  sample: mount_api
open_writers:
  description:
    - Processes that held a file under O(path) open for writing when the module ran with O(state=present).
      The lock does not stop writes through descriptors opened before it; each one is also reported as a warning.
  returned: always
  type: list
  elements: dict
  sample:
    - pid: 4242
      command: pacman
      file: /var/lib/pacman/db.lck
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._core.actions import as_dicts
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    ImmutableRootError, ParameterError, failure,
)
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._linux.units import unit_value_problem
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.model import Request
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.plan import (
    persistence_warnings, plan_ro_bind, writer_warnings,
)
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.render import (
    mount_state, persistence_state, predict_mount_state, predict_persistence_state,
)
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.execute import Executor
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.observe import (
    namespace_warnings, observe, open_writers,
)
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner


# systemd.unit(5) names: a prefix of allowed characters and a unit type suffix.
UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|mount|path|timer|device|swap|slice|scope)$")


def build_request(params: dict) -> Request:
    path = validate_path("path", params["path"], must_exist=True)
    real = os.path.realpath(path)
    if real != path:
        raise ParameterError("path", "%s resolves to %s through a symlink; give the resolved path" % (path, real))
    if params["persist"] == "systemd":
        problem = unit_value_problem(path)
        if problem:
            raise ParameterError("path", "%r %s (persist=systemd writes it as What= and Where=)" % (path, problem))
    return Request(
        path=path,
        state=params["state"],
        persist=params["persist"],
        fstab_path=validate_path("fstab_path", params["fstab_path"]),
        unit_dir=validate_path("unit_dir", params["unit_dir"]),
        bound_to=validate_bound_to(params["bound_to"], params["persist"]),
    )


def validate_bound_to(unit: str | None, persist: str) -> str | None:
    if unit is None:
        return None
    if persist != "systemd":
        raise ParameterError("bound_to", "needs persist=systemd (the mount unit carries the binding)")
    if not UNIT_NAME.match(unit):
        raise ParameterError("bound_to", "%r is not a systemd unit name such as systemd-sysext.service" % unit)
    return unit


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec=dict(
            # type str, not path: Ansible expands "~" and variables in a path option, so "~" would name
            # the home directory rather than what the user wrote; validate_path checks these instead.
            path=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            persist=dict(type="str", choices=["none", "fstab", "systemd"], default="none"),
            method=dict(type="str", choices=["auto", "mount_api", "bind_remount"], default="auto"),
            fstab_path=dict(type="str", default="/etc/fstab"),
            unit_dir=dict(type="str", default="/etc/systemd/system"),
            bound_to=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    executor = None
    try:
        request = build_request(module.params)
        runner = Runner(module)
        before = observe(request, runner)
        plan = plan_ro_bind(request, before)
        writers = open_writers(request.path) if request.state == "present" else []
        for warning in persistence_warnings(request, before) + writer_warnings(writers) + namespace_warnings():
            module.warn(warning)
        if plan and not module.check_mode:
            executor = Executor(runner, request, module.params["method"])
            executor.run()
            after = observe(request, runner)
            remaining = plan_ro_bind(request, after)
            if remaining:
                module.fail_json(
                    changed=bool(executor.done), msg="verification failed: after the run %s still needs: %s" % (
                        request.path, "; ".join("%s %s" % (action.action, action.detail) for action in remaining)),
                    actions=as_dicts(executor.done), mount=mount_state(request.path, after.layers))
            mount, persisted = mount_state(request.path, after.layers), persistence_state(
                request, after.fstab_entries, after.unit_text)
        elif plan:
            mount, persisted = predict_mount_state(request, before), predict_persistence_state(request)
        else:
            mount, persisted = mount_state(request.path, before.layers), persistence_state(
                request, before.fstab_entries, before.unit_text)
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(changed=bool(executor and executor.done), actions=as_dicts(executor.done) if executor else [],
                         **failure(exc))

    done = executor.done if executor else plan
    result = dict(changed=bool(done), actions=as_dicts(done), mount=mount, method=executor.method if executor else None,
                  open_writers=writers)
    if module._diff:
        before_state = dict(mount=mount_state(request.path, before.layers))
        before_state.update(persistence_state(request, before.fstab_entries, before.unit_text))
        after_state = dict(mount=mount)
        after_state.update(persisted)
        result["diff"] = dict(before=before_state, after=after_state)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
