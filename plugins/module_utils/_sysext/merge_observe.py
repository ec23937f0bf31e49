# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge: reading the root into a MergeObserved state."""

from __future__ import annotations

import os
import posixpath
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import resolve_in_root
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, mount_containing, read_mountinfo, stack_at,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import OS_RELEASE_PATHS
from ansible_collections.immutable.root.plugins.module_utils._sysext.image_policy import (
    ImagePolicy, PolicyTableError, parse_analysis,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import (
    ImageContent, Kind, SEARCH_DIRS, SearchEntry, classify, to_inspect,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import (
    FileImpact, InspectJob, inspect_images,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_model import (
    HierarchyState, MergeObserved, MergeRequest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_plan import parse_systemd_version
from ansible_collections.immutable.root.plugins.module_utils._sysext.mutable import mutable_dir, observed_mode
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    HostRelease, ReleaseSyntaxError, SysextError, parse_env_pairs, read_release_bytes, systemd_architecture,
)


def systemd_version(runner: Runner) -> int:
    return parse_systemd_version(runner.run(["systemd-sysext", "--version"]).stdout)


def image_policy(runner: Runner, policy: str) -> ImagePolicy:
    """The policy as systemd itself parses it; a policy systemd refuses is a parameter error."""
    try:
        output = runner.run(["systemd-analyze", "image-policy", policy]).stdout
        return parse_analysis(policy, output)
    except CommandError as exc:
        said = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise ParameterError("image_policy", "systemd-analyze image-policy could not read %r: %s"
                             % (policy, said[-1] if said else exc))
    except PolicyTableError as exc:
        raise ParameterError("image_policy", "cannot read systemd-analyze's table for %r: %s" % (policy, exc))


def host_release(root: str) -> HostRelease:
    """The root's os-release as systemd-sysext reads it (parse_os_release: /etc first, then /usr/lib)."""
    for relative in OS_RELEASE_PATHS:
        path = resolve_in_root(root, relative)
        try:
            host = HostRelease.from_pairs(parse_env_pairs(read_release_bytes(path), path))
        except FileNotFoundError:
            continue
        except (OSError, ReleaseSyntaxError) as exc:
            raise SysextError("%s cannot be read: %s" % (path, exc))
        if not host.os_id:
            raise SysextError("%s has no ID: systemd-sysext would refuse every extension (and still exit 0)" % path)
        return host
    raise SysextError("root: %s has no etc/os-release or usr/lib/os-release; systemd-sysext needs one to match "
                      "extensions against (without it, it merges nothing and still exits 0)" % root)


def running_architecture() -> str:
    machine = os.uname().machine
    return systemd_architecture(machine) or machine


def sysext_scope() -> str:
    # in_initrd() (252) looks at the running system, not at --root.
    return "initrd" if os.path.exists("/etc/initrd-release") else "system"


def _kind(mode: int, file_name: str) -> Kind:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode) and file_name.endswith(".raw"):
        return "raw"
    if stat.S_ISBLK(mode):
        return "block"
    return "other"


def search_entries(root: str) -> list[SearchEntry]:
    """Every entry of every search directory under root, highest priority first (lstat, no symlinks)."""
    entries = []
    for search_dir in SEARCH_DIRS:
        directory = resolve_in_root(root, search_dir)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for file_name in names:
            path = os.path.join(directory, file_name)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            entries.append(SearchEntry(search_dir, file_name, path, _kind(mode, file_name)))
    return entries


def _is_sysext_overlay(mount: MountEntry) -> bool:
    return mount.fstype == "overlay" and mount.source == "sysext"


def hierarchy_state(hierarchy: str, root: str, mounts: t.Sequence[MountEntry]) -> HierarchyState:
    """Merged when the top mount is an overlay whose .systemd-sysext/dev names its own device (systemd's test)."""
    path = resolve_in_root(root, hierarchy)
    stack = stack_at(mounts, path)
    below = list(stack)
    while below and _is_sysext_overlay(below[-1]):
        below.pop()
    anchor = below[-1] if below else mount_containing(mounts, posixpath.dirname(path))
    shared = anchor is not None and any(field.startswith("shared:") for field in anchor.optional_fields)
    mutable_path = resolve_in_root(root, mutable_dir(hierarchy))
    state = HierarchyState(hierarchy, path, shared=shared, anchor=anchor.mountpoint if anchor else "/",
                           creatable=_creatable(path), mutable_dir=os.path.isdir(mutable_path))
    top = stack[-1] if stack else None
    if top is None or top.fstype != "overlay":
        return state
    try:
        st = os.stat(path)
        with open(os.path.join(path, ".systemd-sysext/dev"), encoding="utf-8") as handle:
            marker = handle.read().strip()
        with open(os.path.join(path, ".systemd-sysext/extensions"), encoding="utf-8") as handle:
            names = tuple(line for line in handle.read().splitlines() if line)
    except FileNotFoundError:
        return state  # an overlay without systemd-sysext's markers is not a merge of ours
    except OSError as exc:
        # Anything else (EACCES, EIO, a directory where a marker should be) must not read as "not merged":
        # the planner would merge again on top of a live merge.
        raise SysextError("%s: cannot read systemd-sysext's merge markers: %s" % (path, exc))
    if marker != "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev)):
        return state  # an offline copy of a merged tree, not a live merge
    mode = observed_mode(top.super_options, mutable_path) if _is_sysext_overlay(top) else None
    return HierarchyState(hierarchy, path, True, names, st.st_mtime, top.mount_id, top.device, shared, state.anchor,
                          mode=mode, mutable_dir=state.mutable_dir)


def _creatable(path: str) -> bool:
    """Whether the directory exists or mkdir_p() can make it (its nearest existing parent is writable)."""
    if os.path.isdir(path):
        return True
    parent = path
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return os.path.isdir(parent) and os.access(parent, os.W_OK)


def observe_hierarchies(request: MergeRequest) -> tuple[tuple[HierarchyState, ...], bool]:
    mounts = read_mountinfo()
    states = tuple(hierarchy_state(hierarchy, request.root, mounts) for hierarchy in request.hierarchies)
    return states, any(mount.mountpoint == "/run" for mount in mounts)


def merged_names_now(root: str, hierarchies: t.Iterable[str]) -> list[str]:
    """The names merged into any of the hierarchies of root right now."""
    mounts = read_mountinfo()
    names: list[str] = []
    for hierarchy in dict.fromkeys(hierarchies):
        names.extend(name for name in hierarchy_state(hierarchy, root, mounts).extensions if name not in names)
    return names


def observe(runner: Runner, request: MergeRequest, version: int | None = None,
            impact_for: t.Callable[[str], bool] | None = None) -> tuple[MergeObserved, dict[str, FileImpact]]:
    """The MergeObserved state; with impact_for, also the FileImpact of the images it selects by name."""
    host = host_release(request.root)
    hierarchies, run_mounted = observe_hierarchies(request)
    entries = search_entries(request.root)
    jobs = [InspectJob(entry.path, entry.name, entry.kind, bool(impact_for and impact_for(entry.name)))
            for entry in to_inspect(entries)]
    peel = [state.path for state in hierarchies if state.merged] if any(job.impact for job in jobs) else []
    inspected = inspect_images(runner, jobs, request.hierarchies, request.root, peel)
    contents: dict[str, ImageContent] = {path: content for path, (content, _impact) in inspected.items()}
    impacts = {}
    for job in jobs:
        impact = inspected[job.path][1]
        if impact is not None:
            impacts[job.name] = impact
    policy = image_policy(runner, request.image_policy) if request.image_policy is not None else None
    images = classify(entries, contents, host, running_architecture(), sysext_scope(), request.force, policy)
    observed = MergeObserved(version if version is not None else systemd_version(runner), host,
                             running_architecture(), images, hierarchies, run_mounted)
    return observed, impacts
