#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: usrmerge_symlinks
short_description: Move /bin, /sbin and /lib* into /usr and leave compatibility symlinks, crash-safely
version_added: 0.1.0
description:
  - Merges the directories of a split root (C(/bin), C(/sbin), C(/lib), C(/lib64), ...) into their
    C(/usr) counterparts and replaces each one with a symlink (C(bin -> usr/bin)), the I(/usr merge) of
    Debian, Fedora, Arch and Gentoo. Works on the running system or on an offline image tree (O(root)).
  - Plans first, from an lstat snapshot. Every entry is classified (moved, identical duplicate, equivalent
    symlink, symlink in C(/usr) pointing back to the root copy, dangling symlink, directory to merge,
    differing conflict) and every conflict is reported before anything is touched.
  - Every old path resolves to the same content at every instant. Files are hard-linked (same filesystem)
    or copied into C(/usr) under temporary names, synced, renamed into place; each original is then
    replaced by a symlink in one rename; each directory is swapped for its symlink with
    C(renameat2(RENAME_EXCHANGE)), so C(/lib64) or C(/bin) never vanish (Debian bug 1020920). The old
    directories are removed last.
  - Unlike C(convert-usrmerge), identical duplicates (same content, mode, owner and extended attributes) are
    merged rather than fatal, and equivalent symlinks (absolute or relative forms of one target) are accepted.
  - Resumable. Temporary names start with C(.usrmerge~); a rerun after an interruption at any point
    recognises them and finishes the job. A merged root (Debian's C(is_merged) test) is left unchanged.
  - Verified. A manifest (path to sha256, mode and owner, or to the missing target) of every original path
    is taken before and compared after, through the new symlinks; any difference fails the run and names
    the paths, and the old directories are then kept.
  - Directories are walked by file descriptor with C(O_NOFOLLOW); a symlink planted inside the tree is never
    followed out of O(root).
author:
  - immutable.root developers (@immutable-root)
requirements:
  - Linux with C(renameat2) (3.15+) on a filesystem that supports C(RENAME_EXCHANGE) (ext4, btrfs, xfs, tmpfs);
    the module fails before the first change otherwise.
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
  root:
    description:
      - The root directory to merge; an image tree mounted or unpacked anywhere works the same as C(/).
      - Must be an absolute, normalised path of a directory, without symlinks in it.
    type: path
    default: /
  directories:
    description:
      - Top-level directories to merge into C(usr/). Allowed names are V(bin), V(sbin), V(lib), V(lib32),
        V(lib64), V(libo32) and V(libx32).
      - Default is every allowed name that is a real directory in O(root). A name given here that is absent
        while its C(usr/) counterpart exists gets the symlink.
      - A name that is already a symlink must resolve to its C(usr/) counterpart (C(lib32), C(lib64),
        C(libo32) and C(libx32) anywhere below C(usr/lib*)), as Debian's C(is_merged) requires.
    type: list
    elements: str
  merge_sbin:
    description:
      - Also merge C(sbin) and C(usr/sbin) into C(usr/bin), leaving C(sbin -> usr/bin) and C(usr/sbin -> bin),
        as Arch Linux and Fedora do. Implies C(sbin) in O(directories) when it is a directory.
      - The merge order is C(usr/sbin), then C(bin), then C(sbin); with O(conflicts=prefer_root) the entry merged
        later wins, with O(conflicts=prefer_usr) the one already in C(usr/bin).
    type: bool
    default: false
  conflicts:
    description:
      - What to do when a path exists in both places with different content, mode, owner or symlink target.
      - V(fail) lists every such pair and changes nothing.
      - V(prefer_usr) keeps the C(usr/) entry; V(prefer_root) keeps the root one. The other one is saved under
        C(<root>/var/lib/usrmerge-backup/) with its original path (directory mode 0700).
      - A directory in one place and a non-directory in the other always fails, except that V(prefer_usr) may
        drop a root file or symlink in favour of a C(usr/) directory.
      - A dangling symlink never wins against a real entry; it is saved under the backup directory.
    type: str
    choices: [fail, prefer_usr, prefer_root]
    default: fail
  skip_flag:
    description:
      - What to do with C(/etc/unsupported-skip-usrmerge-conversion), which C(debootstrap --no-merged-usr)
        writes to stop Debian's usrmerge package from converting the system.
      - V(remove) merges anyway and deletes the file as the first change, since it is false afterwards.
      - V(keep) merges and leaves the file. V(honour) fails while the file exists and the root is not merged.
      - A root that is already merged is not changed, whatever this says.
      - The module does not follow an C(/etc) that is a symlink to look for the file, and does not remove a
        directory of that name; with V(remove) or V(honour) it then fails before any change, V(keep) merges.
    type: str
    choices: [remove, keep, honour]
    default: remove
notes:
  - A separate C(/usr) filesystem gets copies rather than hard links; the free space (and inodes) it needs are
    checked before anything is touched. Only the data of a sparse file is copied (its holes stay holes), and the
    check counts its allocated blocks, not its apparent size. A C(/usr) that is a bind mount of the root's
    filesystem is detected only when the first hard link fails, and copies are then made without that check.
  - Concurrent runs on one O(root) take turns. Each holds a C(flock) lock on the root directory from its
    first look to its last check (a shared one in check mode), so a later run waits, up to 10 minutes, and then
    finds the work done. Where the filesystem has no such locks, the run goes ahead with a warning.
  - Take a snapshot first when you can (a btrfs snapshot, for example); like Debian's and Gentoo's tools, the
    merge has no undo.
  - Debian's C(/etc/shells) entries for C(/usr/bin/sh) and friends (C(convert-etc-shells)) are not added.
seealso:
  - name: Debian usrmerge
    description: The C(convert-usrmerge) tool this module is compared with in its tests.
    link: https://salsa.debian.org/md/usrmerge
  - name: renameat2(2)
    description: C(RENAME_EXCHANGE) swaps a directory and a symlink atomically.
    link: https://man7.org/linux/man-pages/man2/renameat2.2.html
"""

EXAMPLES = r"""
- name: See what merging /usr would do
  immutable.root.usrmerge_symlinks:
  check_mode: true
  diff: true
  register: usrmerge_plan

- name: Merge /usr on the running system
  immutable.root.usrmerge_symlinks:

- name: Merge an offline image the Arch way, keeping /usr where both differ
  immutable.root.usrmerge_symlinks:
    root: /mnt/image
    merge_sbin: true
    conflicts: prefer_usr
"""

RETURN = r"""
plan:
  description: How many entries fell into each class (a directory merged into an existing one counts once).
  returned: always
  type: dict
  sample: {move: 234, move_symlink: 39, make_directory: 22, merge_directory: 6, duplicate: 0,
           equivalent_symlink: 0, points_back: 1, broken_symlink: 0, conflict: 0}
conflicts:
  description: Every pair that differs, with how it was (or, with O(conflicts=fail), would have to be) resolved.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The root entry, as seen inside O(root).
      type: str
    usr_path:
      description: The C(usr/) entry it meets.
      type: str
    problem:
      description: What differs.
      type: str
    resolution:
      description: V(fail), or which one is kept and where the other is saved.
      type: str
  sample:
    - path: /bin/cat
      usr_path: /usr/bin/cat
      problem: "both exist and differ (file sha256=… vs file sha256=…)"
      resolution: fail
symlinks:
  description: The managed top-level symlinks after the run (predicted in check mode), path to symlink text.
  returned: always
  type: dict
  sample: {/bin: usr/bin, /sbin: usr/sbin, /lib: usr/lib, /lib64: usr/lib64}
layout:
  description: Each managed top-level path after the run (predicted in check mode).
  returned: always
  type: dict
  sample: {/bin: symlink -> usr/bin, /lib32: absent}
moved:
  description: Entries moved into C(usr/) (files, symlinks, directories, and files replacing a symlink there).
  returned: always
  type: int
  sample: 296
deduplicated:
  description: Identical duplicates whose root copy was replaced by a symlink.
  returned: always
  type: int
  sample: 0
verified:
  description: Whether the manifest of every original path matched after the run; null when nothing ran.
  returned: always
  type: bool
  sample: true
actions:
  description: The steps taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: dict
  sample:
    - action: merge
      target: /bin
      detail: "into /usr/bin: 86 move, 7 move symlink, 1 points back"
    - action: replace_with_symlink
      target: /bin
      detail: "-> usr/bin (atomic exchange, then the old directory is removed)"
differing:
  description: On a failed verification, every path whose content changed, with the expected and found values.
  returned: failure
  type: list
  elements: str
"""

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._core.actions import as_dicts
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    ImmutableRootError, ParameterError, failure,
)
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    ALLOWED, CONFLICT_MODES, Request, SKIP_FLAG_MODES, UsrMergeError, show,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.plan import plan_usrmerge
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.render import (
    check_space, layout_state, predicted_tops, remaining_work, shown_names, symlinks,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.execute import Executor
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import (
    Hasher, after, before, differences, expected,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.lock import locked_root
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.observe import observe

MAX_LISTED = 20


def build_request(params: dict) -> Request:
    root = validate_path("root", params["root"], must_exist=True, directory=True)
    if os.path.realpath(root) != root:
        raise ParameterError("root", "%s resolves to %s through a symlink; give the resolved path"
                             % (root, os.path.realpath(root)))
    directories = params["directories"]
    if directories is not None:
        unknown = [name for name in directories if name not in ALLOWED]
        if unknown:
            raise ParameterError("directories", "%s not allowed; choose from %s" % (
                ", ".join(repr(name) for name in unknown), ", ".join(ALLOWED)))
        directories = tuple(dict.fromkeys(directories))
    return Request(root=root, directories=directories, merge_sbin=params["merge_sbin"],
                   conflicts=params["conflicts"], skip_flag=params["skip_flag"])


def conflict_message(conflicts: list) -> str:
    listed = "; ".join("%s vs %s: %s" % (item.path, item.usr_path, item.problem) for item in conflicts[:MAX_LISTED])
    more = " (and %d more)" % (len(conflicts) - MAX_LISTED) if len(conflicts) > MAX_LISTED else ""
    return "conflicts: %d entries differ between the root and /usr, nothing was changed: %s%s" % (
        len(conflicts), listed, more)


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            directories=dict(type="list", elements="str"),
            merge_sbin=dict(type="bool", default=False),
            conflicts=dict(type="str", choices=list(CONFLICT_MODES), default="fail"),
            skip_flag=dict(type="str", choices=list(SKIP_FLAG_MODES), default="remove"),
        ),
        supports_check_mode=True,
    )
    executor = None
    verified = None
    held = contextlib.ExitStack()
    try:
        request = build_request(module.params)
        for warning in held.enter_context(locked_root(request.root, exclusive=not module.check_mode)):
            module.warn(warning)
        hasher = Hasher()
        observed, layout = observe(request, hasher)
        plan = plan_usrmerge(request, observed)
        for warning in layout.warnings:
            module.warn(warning)
        if plan.blocking:
            module.fail_json(msg=conflict_message(list(plan.blocking)), actions=[], plan=dict(plan.counts),
                             conflicts=[item.as_dict() for item in plan.conflicts])
        check_space(plan, observed, request.root)
        tops = predicted_tops(plan, observed.tops)
        if not plan.empty and not module.check_mode:
            manifest = before(observed.trees, observed.usr_nodes)
            executor = Executor(request.root, plan, observed)
            executor.prepare()
            wrong = differences(expected(plan, manifest), after(executor.root_fd, manifest, hasher, layout.mapping))
            if wrong:
                raise UsrMergeError("verification failed: %d original paths no longer resolve to what they did "
                                    "(the old directories are kept as %s…): %s" % (
                                        len(wrong), show(".usrmerge~*"), "; ".join(wrong[:MAX_LISTED])),
                                    extra=dict(differing=wrong))
            executor.finish()
            verified = True
            settled, _layout = observe(request)
            remaining = remaining_work(plan_usrmerge(request, settled))
            if remaining:
                raise UsrMergeError("verification failed: after the run %s still need work" % ", ".join(remaining))
            tops = dict(settled.tops)
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(changed=bool(executor and executor.done), actions=as_dicts(executor.done) if executor else [],
                         **failure(exc))
    finally:
        if executor is not None:
            executor.close()
        held.close()

    done = executor.done if executor else list(plan.actions)
    counts = dict(plan.counts)
    names = shown_names(request)
    result = dict(
        changed=bool(done),
        actions=as_dicts(done),
        plan=counts,
        conflicts=[item.as_dict() for item in plan.conflicts],
        symlinks=symlinks(tops, request),
        layout=layout_state(tops, names),
        moved=counts["move"] + counts["move_symlink"] + counts["make_directory"] + counts["points_back"],
        deduplicated=counts["duplicate"],
        verified=verified,
    )
    if module._diff:
        result["diff"] = dict(
            before=dict(layout=layout_state(observed.tops, names), skip_flag=observed.skip_flag,
                        conflicts=["%s vs %s: %s" % (c.path, c.usr_path, c.problem) for c in plan.conflicts]),
            after=dict(layout=result["layout"], skip_flag=observed.skip_flag and not plan.remove_skip_flag,
                       conflicts=["%s vs %s: %s" % (c.path, c.usr_path, c.resolution) for c in plan.conflicts]),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
