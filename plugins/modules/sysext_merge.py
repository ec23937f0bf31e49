#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sysext_merge
short_description: Merge systemd system extensions, predictably and verified
version_added: 0.1.0
description:
  - Drives C(systemd-sysext) towards a desired state and never trusts its exit code. systemd-sysext 252
    exits 0 when a merge failed and skips incompatible images silently; this module decides beforehand,
    with systemd's own rules, which images will be merged and why every other one will not, and checks the
    mount table afterwards.
  - Images are found in C(etc/extensions), C(run/extensions), C(var/lib/extensions),
    C(usr/local/lib/extensions) and C(usr/lib/extensions) under O(root), in that priority order; an image
    name in a higher directory masks the same name further down.
  - Every image gets a verdict. V(compatible) images are merged. V(incompatible) ones are skipped by
    systemd-sysext, and the reason says why (scope, architecture, C(ID), C(SYSEXT_LEVEL), C(VERSION_ID), no
    release data), using the checks of systemd's C(extension_release_validate()). V(masked) and V(ignored)
    images are not seen by systemd-sysext at all. V(invalid) images would make systemd-sysext fail the
    whole merge (a corrupt or unreadable C(.raw), a raw image without its release file, an image that ships
    C(usr/lib/os-release), two images of one name in one directory, a name outside
    C(^[A-Za-z0-9][A-Za-z0-9._-]*$)); the module refuses to merge while one is present.
  - Raw images (squashfs, erofs, any plain filesystem image) are read by loop-mounting them read-only in a
    private mount namespace of a child process, which nothing else can see; check mode mounts nothing.
  - Layers are stacked in systemd's version order of the names, the highest on top (C(c10) above C(c9)).
  - C(systemd-sysext) always gets C(--root), so symlinks in the search directories are ignored (systemd
    follows them only without C(--root), as at boot); the module reports them as V(ignored) and warns.
author:
  - immutable.root developers (@immutable-root)
requirements:
  - Linux with overlayfs and loop devices; C(systemd-sysext) (systemd 252 or newer), util-linux C(mount),
    C(umount) and C(blkid).
extends_documentation_fragment:
  - immutable.root.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
    details: O(state=refreshed) always refreshes and reports a change.
  platform:
    platforms: linux
options:
  state:
    description:
      - V(merged) makes the merged set equal the set of compatible images, merging when nothing is merged and
        refreshing when the merged set differs; an equal set is left alone (no remount).
      - V(unmerged) removes every sysext overlay from the hierarchies.
      - V(refreshed) always runs C(systemd-sysext refresh), for instance after an image was rebuilt under the
        same name, and reports a change.
    type: str
    choices: [merged, unmerged, refreshed]
    default: merged
  root:
    description:
      - The tree to act on, passed to C(systemd-sysext --root). Absolute, normalised, an existing directory,
        and without symlinks in the path.
    type: path
    default: /
  make_shared:
    description:
      - systemd-sysext mounts from a mount namespace of its own; its overlay reaches this namespace only when
        the mount holding a hierarchy is shared. With V(false) the module fails with an explanation when it is
        not. With V(true) it makes that mount shared first; when the mount lies outside O(root), O(root) is
        bound onto itself (C(mount --rbind)) and that bind is made shared.
    type: bool
    default: false
  hierarchies:
    description:
      - The hierarchies to merge, exported to systemd-sysext as C(SYSTEMD_SYSEXT_HIERARCHIES). Absolute paths;
        C(/), C(/proc), C(/sys), C(/dev) and C(/run) (and paths below them) are refused.
      - Sysext overlays are read-only, so every hierarchy an image ships files for turns read-only while merged.
    type: list
    elements: path
    default: [/usr, /opt]
  required:
    description:
      - Image names that must end up merged. A missing, masked, ignored or incompatible one fails the module
        before anything changes, with its reason.
    type: list
    elements: str
    default: []
  force:
    description:
      - Pass C(--force); systemd-sysext then skips the release checks, and every readable image is merged.
    type: bool
    default: false
  image_policy:
    description:
      - Passed as C(--image-policy); needs systemd 254 or newer. With an older systemd the module fails and names
        the version it found.
      - The module reads the policy with C(systemd-analyze image-policy), so a policy systemd cannot parse fails
        the module before anything changes.
      - A raw image that is a bare file system (what M(immutable.root.sysext_build) makes) counts as an
        unprotected root partition. When the policy does not allow that, systemd-sysext fails the whole merge,
        even with O(force). The module reports such an image as V(invalid), with the reason, before merging.
        Directory images are not subject to the policy.
    type: str
  mutable:
    description:
      - Passed as C(--mutable); needs systemd 256 or newer. With an older systemd the module fails and names the
        version it found.
      - V(no) merges read-only. V(ephemeral) makes the hierarchy writable while merged, and the writes are gone
        after unmerge. V(yes) keeps the writes in C(/var/lib/extensions.mutable/<hierarchy>). V(import) layers that
        directory in read-only. V(ephemeral-import) does both. V(auto) means V(yes) when that directory exists and
        V(no) when it does not.
      - When given, the mode is part of the desired state. A merge made with another mode is refreshed, and the
        mode that results is read back from the overlay and checked. When omitted, any mode is accepted.
    type: str
    choices: ['yes', 'no', auto, import, ephemeral, ephemeral-import]
notes:
  - The merge state is read from the mount table and the C(.systemd-sysext) markers, because
    C(systemd-sysext status --root) reads the host's C(/usr) in systemd 252.
  - C(refresh) unmounts and mounts again, so for a moment the hierarchies show no extensions.
  - Mounts are made in the mount namespace the module runs in.
seealso:
  - module: immutable.root.sysext_build
  - name: systemd-sysext(8)
    description: The tool this module drives.
    link: https://www.freedesktop.org/software/systemd/man/systemd-sysext.html
"""

EXAMPLES = r"""
- name: Merge every compatible extension, and fail unless the tools extension is one of them
  immutable.root.sysext_merge:
    required: [tools]

- name: Pick up an image rebuilt under the same name
  immutable.root.sysext_merge:
    state: refreshed

- name: Merge into an offline tree, /usr only
  immutable.root.sysext_merge:
    root: /srv/images/root
    hierarchies: [/usr]
    make_shared: true

- name: Unmerge before running the package manager
  immutable.root.sysext_merge:
    state: unmerged
"""

RETURN = r"""
extensions:
  description: Every image in the search directories, in priority order, with its verdict.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The image name (a raw image's file name without C(.raw)).
      type: str
    path:
      description: Where the image is.
      type: str
    search_dir:
      description: The search directory it was found in, as seen inside O(root).
      type: str
    type:
      description: V(directory), V(raw), V(block) or V(symlink).
      type: str
    verdict:
      description: V(compatible), V(incompatible), V(masked), V(ignored) or V(invalid).
      type: str
    compatible:
      description: Whether systemd-sysext merges it.
      type: bool
    reason:
      description: Why it is not merged (null when compatible).
      type: str
    merged:
      description: Whether it is merged after the run (predicted in check mode).
      type: bool
    release:
      description: Its extension-release fields, null when none were found.
      type: dict
    release_file:
      description: The release file they came from, relative to the image.
      type: str
    fstype:
      description: The filesystem of a raw image.
      type: str
    hierarchies:
      description: The requested hierarchies the image has files for.
      type: list
      elements: str
  sample:
    - name: tools
      path: /var/lib/extensions/tools.raw
      search_dir: /var/lib/extensions
      type: raw
      verdict: compatible
      compatible: true
      reason: null
      merged: true
      release: {ID: debian, VERSION_ID: "12"}
      release_file: usr/lib/extension-release.d/extension-release.tools
      fstype: squashfs
      hierarchies: [/usr]
hierarchies:
  description: Each hierarchy after the run (predicted in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    hierarchy:
      description: The hierarchy, e.g. C(/usr).
      type: str
    path:
      description: Its path under O(root).
      type: str
    merged:
      description: Whether a sysext overlay of systemd-sysext is on top.
      type: bool
    extensions:
      description: The merged names, lowest layer first, as in C(.systemd-sysext/extensions).
      type: list
      elements: str
    since:
      description: When the merge was made (ISO 8601), null when not merged or not yet made.
      type: str
    mount_id:
      description: Mount id of the overlay; null when not merged or not yet mounted.
      type: int
    device:
      description: C(major:minor) of the overlay.
      type: str
    mode:
      description:
        - The C(--mutable) mode the merge has, read from the overlay's options. One of V(no), V(yes), V(import),
          V(ephemeral) and V(ephemeral-import). Null when not merged.
        - For a merge that check mode predicts will be made or remade, it is the mode O(mutable) gives, or null
          without O(mutable).
      type: str
layer_order:
  description: The merged names from the top layer down (systemd's version sort, highest on top).
  returned: always
  type: list
  elements: str
  sample: [c10, c9, b, a]
systemd_version:
  description: The major version of systemd-sysext.
  returned: always
  type: int
  sample: 252
host:
  description: What images are matched against, the O(root)'s os-release and this machine's architecture.
  returned: always
  type: dict
  sample: {ID: debian, VERSION_ID: "12", SYSEXT_LEVEL: "", ARCHITECTURE: x86-64}
actions:
  description: The steps taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: dict
  sample:
    - action: merge
      target: /
      detail: "a, tools into /usr (top layer: tools)"
"""

import dataclasses
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._core.actions import as_dicts
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    ImmutableRootError, ParameterError, failure,
)
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_model import MergeRequest
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_plan import (
    check_versions,
    layer_order,
    plan_sysext_merge,
    predict_hierarchies,
    validate_hierarchies,
    validate_required,
    verification_problem,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_render import (
    extensions_result, failure_lines, hierarchies_result, merge_state, merged_names, warnings,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import SysextError
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_execute import Executor
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_observe import (
    observe, observe_hierarchies, systemd_version,
)


def build_request(params: dict) -> MergeRequest:
    root = validate_path("root", params["root"], must_exist=True, directory=True)
    if os.path.realpath(root) != root:
        raise ParameterError("root", "%s resolves to %s through a symlink; give the resolved path"
                             % (root, os.path.realpath(root)))
    return MergeRequest(
        root=root,
        state=params["state"],
        hierarchies=validate_hierarchies(params["hierarchies"]),
        required=validate_required(params["required"]),
        force=params["force"],
        make_shared=params["make_shared"],
        image_policy=params["image_policy"],
        mutable=params["mutable"],
    )


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec=dict(
            state=dict(type="str", choices=["merged", "unmerged", "refreshed"], default="merged"),
            root=dict(type="path", default="/"),
            make_shared=dict(type="bool", default=False),
            hierarchies=dict(type="list", elements="path", default=["/usr", "/opt"]),
            required=dict(type="list", elements="str", default=[]),
            force=dict(type="bool", default=False),
            image_policy=dict(type="str"),
            mutable=dict(type="str", choices=["yes", "no", "auto", "import", "ephemeral", "ephemeral-import"]),
        ),
        supports_check_mode=True,
    )
    executor = None
    try:
        request = build_request(module.params)
        runner = Runner(module)
        version = systemd_version(runner)
        check_versions(request, version)
        merged_before = set(merged_names(observe_hierarchies(request)[0]))
        before, impacts = observe(runner, request, version,
                                  (lambda name: name not in merged_before) if module._diff else None)
        plan = plan_sysext_merge(request, before)
        for warning in warnings(request, before):
            module.warn(warning)
        predicted = predict_hierarchies(request, before)
        images, states = before.images, (predicted if plan else before.hierarchies)
        if plan and not module.check_mode:
            executor = Executor(runner, request)
            executor.run(plan)
            # Re-observe only the mount table and markers: the run changes merges, not images, and inspecting
            # every image again (a loop mount each) would double the cost of a change.
            after = observe_hierarchies(request)[0]
            problem = verification_problem(predicted, after)
            if problem:
                said = failure_lines(result.stderr + "\n" + result.stdout for result in executor.output)
                raise SysextError("systemd-sysext exited 0, but the result is not what was planned: %s%s"
                                  % (problem, "; systemd-sysext said: " + " | ".join(said) if said else ""))
            states = after
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(changed=bool(executor and executor.done), actions=as_dicts(executor.done) if executor else [],
                         **failure(exc))

    names = merged_names(states)
    result = dict(
        changed=bool(plan),
        actions=as_dicts(executor.done if executor else plan),
        extensions=extensions_result(images, names),
        hierarchies=hierarchies_result(states),
        layer_order=layer_order(names),
        systemd_version=version,
        host=dict(ID=before.host.os_id, VERSION_ID=before.host.version_id, SYSEXT_LEVEL=before.host.sysext_level,
                  ARCHITECTURE=before.architecture),
    )
    if module._diff:
        after_diff: dict = dict(merged=merge_state(states))
        newly = [name for name in names if name not in merged_before]
        if newly:
            after_diff["files"] = {name: dataclasses.asdict(impacts[name]) for name in newly if name in impacts}
        result["diff"] = dict(before=dict(merged=merge_state(before.hierarchies)), after=after_diff)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
