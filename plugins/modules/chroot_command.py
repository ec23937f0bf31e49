#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: chroot_command
short_description: Run a command in a chroot prepared in a private mount namespace, every mount always undone
version_added: 0.2.0
description:
  - Runs a command with C(chroot) in a root prepared as the Alpine wiki's "Immutable root with atomic upgrades"
    prepares a new generation - a btrfs subvolume mounted as the root (O(device) and O(subvolume)) or an existing
    directory (O(root)), C(/dev) and C(/sys) bound, C(proc) mounted, and shared subvolumes (the commons) or host
    directories bound inside.
  - Every mount is made in a private mount namespace of the module's own process - nobody else sees it, it
    never propagates back to the host, and it ends with the process even when the module is killed. The
    module also unmounts everything recursively before it returns and checks that nothing is left.
  - A command that exits non-zero fails the module with its C(rc), C(stdout) and C(stderr); undoing the
    mounts does not depend on the command's outcome.
author:
  - immutable.root developers (@immutable-root)
requirements:
  - Linux; util-linux C(mount) and C(umount); C(chroot) (coreutils or busybox).
extends_documentation_fragment:
  - immutable.root.attributes
attributes:
  check_mode:
    support: full
    details: In check mode nothing is mounted or run; RV(mounts) lists what would be mounted.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: The command runs every time; it is as idempotent as the command is.
  platform:
    platforms: linux
options:
  device:
    description: Block device of a btrfs filesystem whose O(subvolume) becomes the chroot's root.
    type: path
  subvolume:
    description: With O(device), the subvolume path (C(subvol=)), such as C(/snapshots/<NAME>/@).
    type: str
  root:
    description: An existing directory to use as the chroot's root instead of O(device).
    type: path
  command:
    description: A shell command, run with C(/bin/sh -c) inside the chroot.
    type: str
  argv:
    description: The command as a list of arguments (no shell).
    type: list
    elements: str
  api_filesystems:
    description: Bind C(/dev) and C(/sys) recursively and mount C(proc) on C(/proc), as the seed does.
    type: bool
    default: true
  subvolumes:
    description: Further subvolumes of O(device) to mount inside, such as the commons.
    type: list
    elements: dict
    default: []
    suboptions:
      subvolume:
        description: Subvolume path inside the filesystem, such as C(/commons/@var@log).
        type: str
        required: true
      target:
        description: Where it appears inside the chroot, such as C(/var/log).
        type: str
        required: true
  binds:
    description: Host directories bound (recursively) inside the chroot.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: Directory on the host.
        type: path
        required: true
      target:
        description: Where it appears inside the chroot.
        type: str
        required: true
  environment:
    description: Environment variables for the command (on top of C(LANG=C) and the module's environment).
    type: dict
    default: {}
notes:
  - A mount target inside the chroot that is a symlink is refused, so a generation cannot redirect a bind onto
    the host.
"""

EXAMPLES = r"""
- name: Upgrade inside a new generation with the commons bound, as the seed's chroot does
  immutable.root.chroot_command:
    device: /dev/disk/by-partlabel/ROOT
    subvolume: /snapshots/20261202140000AbCdEfGh/@
    subvolumes:
      - {subvolume: /commons/@var@cache, target: /var/cache}
      - {subvolume: /commons/@var@log, target: /var/log}
    command: apk upgrade -U

- name: Regenerate the initramfs inside it
  immutable.root.chroot_command:
    device: /dev/disk/by-partlabel/ROOT
    subvolume: /snapshots/20261202140000AbCdEfGh/@
    argv: [mkinitfs]
"""

RETURN = r"""
rc:
  description: Exit code of the command (null in check mode).
  returned: always
  type: int
stdout:
  description: Its standard output.
  returned: always
  type: str
stderr:
  description: Its standard error.
  returned: always
  type: str
cmd:
  description: The command run inside the chroot.
  returned: always
  type: list
  elements: str
mounts:
  description: The mounts made (or, in check mode, that would be made) in order; all undone afterwards.
  returned: always
  type: list
  elements: dict
  sample: [{kind: root, source: /dev/vda2, target: /}, {kind: rbind, source: /dev, target: /dev}]
actions:
  description: The steps taken, in order.
  returned: always
  type: list
  elements: dict
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._chroot.execute import prepared_root, run_in_chroot
from ansible_collections.immutable.root.plugins.module_utils._chroot.plan import plan_mounts
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    ImmutableRootError, ParameterError, failure,
)
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec={
            "device": dict(type="path"),
            "subvolume": dict(type="str"),
            "root": dict(type="path"),
            "command": dict(type="str"),
            "argv": dict(type="list", elements="str"),
            "api_filesystems": dict(type="bool", default=True),
            "subvolumes": dict(type="list", elements="dict", default=[], options=dict(
                subvolume=dict(type="str", required=True), target=dict(type="str", required=True))),
            "binds": dict(type="list", elements="dict", default=[], options=dict(
                source=dict(type="path", required=True), target=dict(type="str", required=True))),
            "environment": dict(type="dict", default={}),
        },
        mutually_exclusive=[("device", "root"), ("command", "argv")],
        required_one_of=[("device", "root"), ("command", "argv")],
        required_together=[("device", "subvolume")],
        supports_check_mode=True,
    )
    params = module.params
    argv = ["/bin/sh", "-c", params["command"]] if params["command"] is not None else list(params["argv"])
    result: dict[str, t.Any] = dict(changed=False, rc=None, stdout="", stderr="", cmd=argv, mounts=[], actions=[])
    runner = Runner(module)
    try:
        if params["device"] is not None:
            validate_path("device", params["device"], must_exist=True)
            if not params["subvolume"].startswith("/"):
                raise ParameterError("subvolume", "must be an absolute path inside the filesystem, got %r"
                                     % params["subvolume"])
        else:
            validate_path("root", params["root"], must_exist=True, directory=True)
            if params["root"] == "/":
                raise ParameterError("root", "is / itself; a chroot into the running root changes the host")
        if not argv:
            raise ParameterError("argv", "must not be empty")
        mounts = plan_mounts(params["device"], params["subvolume"], params["api_filesystems"],
                             params["subvolumes"], params["binds"])
        result["mounts"] = [mount.as_dict() for mount in mounts]
        if module.check_mode:
            module.exit_json(**result)
        environ = {str(key): str(value) for key, value in params["environment"].items()}
        with prepared_root(runner, params["root"], mounts) as directory:
            completed = run_in_chroot(runner, directory, argv, environ)
        result.update(changed=True, rc=completed.rc, stdout=completed.stdout, stderr=completed.stderr,
                      actions=[{"action": "mount", "target": mount.target, "detail": mount.source}
                               for mount in mounts]
                      + [{"action": "run", "target": "chroot", "detail": " ".join(argv)},
                         {"action": "unmount", "target": "/", "detail": "recursive, all %d" % len(mounts)}])
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(**dict(result, **failure(exc)))
    if result["rc"] != 0:
        module.fail_json(msg="the command exited %s in the chroot (every mount was undone): %s"
                         % (result["rc"], (result["stderr"] or result["stdout"]).strip()[-500:]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
