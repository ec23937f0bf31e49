# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: pure planning of the self-bind, the fstab entry and the mount unit."""

from __future__ import annotations

import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.errors import MountError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import same_entry
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, by_id, mount_containing, root_for, stack_at,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.units import mount_unit_name
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.model import (
    Layer, Observed, Request, mount_request, wanted_by,
)
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.render import (
    desired_fstab_line, is_own_fstab_entry, unit_paths, unit_text,
)


def classify_layers(entries: t.Sequence[MountEntry], path: str) -> tuple[tuple[Layer, ...], MountEntry | None]:
    """The layers on path (bottom first) and the mount below them.

    A layer is a self-bind when it has the device of the mount below it and shows that mount's directory at
    path: root == below.root + (path - below.mountpoint). A bind of some other directory onto path, or a
    different filesystem mounted there, is foreign.
    Where / is shared, a mount made on a locked path propagates a copy that the kernel tucks under the lock, so
    the lock's mount-tree parent becomes that foreign copy: up to the first self-bind, a layer that self-binds
    the parent counts too (nothing else can show the parent's directory above a foreign layer).
    """
    stack = stack_at(entries, path)
    mounts = by_id(entries)
    layers: list[Layer] = []
    parent = mounts.get(stack[0].parent_id) if stack else mount_containing(entries, path)
    below = parent
    for mount in stack:
        candidates = [below] if any(layer.self_bind for layer in layers) else [below, parent]
        self_bind = any(lower is not None and mount.device == lower.device and mount.root == root_for(lower, path)
                        for lower in candidates)
        layers.append(Layer(mount, self_bind))
        below = mount
    return tuple(layers), parent


def _describe(mount: MountEntry) -> str:
    return "%s %r (mount id %d, root %s)" % (mount.fstype, mount.source, mount.mount_id, mount.root)


def plan_mounts(request: Request, layers: tuple[Layer, ...]) -> list[Action]:
    """Mount actions, from the observed layers, for the requested state."""
    path = request.path
    foreign = [layer for layer in layers if not layer.self_bind]
    if request.state == "present":
        if foreign:
            raise ParameterError("path", "%s has a foreign mount on it: %s; ro_bind only manages self-binds "
                                 "and never stacks on or unmounts other mounts" % (path, _describe(foreign[-1].mount)))
        if not layers:
            return [Action("lock", path, "read-only self-bind")]
        actions = [Action("unmount", path, "extra self-bind layer (mount id %d)" % layer.mount.mount_id)
                   for layer in reversed(layers[1:])]
        if not layers[0].mount.read_only:
            actions.append(Action("remount_ro", path, "self-bind (mount id %d) is writable" % layers[0].mount.mount_id))
        return actions
    # absent: peel self-binds from the top; a foreign mount above a self-bind cannot be peeled.
    top_foreign = 0
    for index, layer in enumerate(layers):
        if not layer.self_bind:
            top_foreign = index + 1
    peel = layers[top_foreign:]
    if top_foreign and any(layer.self_bind for layer in layers[:top_foreign]):
        raise MountError("path: %s has a foreign mount on top of its self-bind layers: %s; refusing to unmount "
                         "a mount ro_bind did not make" % (path, _describe(layers[top_foreign - 1].mount)))
    return [Action("unmount", path, "self-bind layer (mount id %d)" % layer.mount.mount_id) for layer in reversed(peel)]


def _plan_fstab(request: Request, observed: Observed) -> list[Action]:
    ours = [entry for entry in observed.fstab_entries if is_own_fstab_entry(entry, request.path)]
    if request.state == "absent":
        return [Action("remove_fstab_entry", request.fstab_path, entry.raw) for entry in ours]
    foreign = [entry for entry in observed.fstab_entries if not is_own_fstab_entry(entry, request.path)]
    if foreign:
        raise ParameterError("persist", "%s already mounts something else on %s (line %d: %r)"
                             % (request.fstab_path, request.path, foreign[0].line_number, foreign[0].raw))
    line = desired_fstab_line(request.path)
    if len(ours) == 1 and same_entry(ours[0], line):
        return []
    return [Action("write_fstab_entry", request.fstab_path, line)]


def _plan_unit(request: Request, observed: Observed) -> list[Action]:
    unit_file, wants_link = unit_paths(request)
    actions = [Action("disable_unit", link, "stale enablement") for link in observed.stale_wants]
    if request.state == "absent":
        if observed.unit_enabled:
            actions.append(Action("disable_unit", wants_link, wanted_by(request)))
        if observed.unit_text is not None:
            actions.append(Action("remove_unit", unit_file, ""))
    else:
        if observed.unit_text != unit_text(request.path, request.bound_to):
            actions.append(Action("write_unit", unit_file, "Options=bind,ro"))
        if not observed.unit_enabled:
            actions.append(Action("enable_unit", wants_link, wanted_by(request)))
    if actions and observed.systemd_running:
        actions.append(Action("daemon_reload", "systemd", "pick up the changed mount unit"))
    return actions


def plan_persistence(request: Request, observed: Observed) -> list[Action]:
    """fstab or unit actions for the requested persistence."""
    if request.persist == "fstab":
        return _plan_fstab(request, observed)
    if request.persist == "systemd":
        return _plan_unit(request, observed)
    return []


def plan_ro_bind(request: Request, observed: Observed) -> tuple[Action, ...]:
    """Ordered actions that bring path to the requested state; raises on what must not be touched.

    Locking happens before persisting and unpersisting before unlocking, so a crash in between never
    leaves a boot-time lock that the running system does not have.
    """
    mounts = plan_mounts(mount_request(request, observed), observed.layers)
    persistence = plan_persistence(request, observed)
    if request.state == "present":
        return tuple(mounts + persistence)
    return tuple(persistence + mounts)


def persistence_warnings(request: Request, observed: Observed) -> list[str]:
    """Warn when unlocking leaves a boot-time lock behind because persist was not named."""
    if request.state != "absent" or request.persist != "none":
        return []
    warnings = []
    if any(is_own_fstab_entry(entry, request.path) for entry in observed.fstab_entries):
        warnings.append("%s still has a bind entry for %s, which locks it again at boot; use persist=fstab to "
                        "remove it" % (request.fstab_path, request.path))
    if observed.unit_enabled:
        warnings.append("%s is still enabled and locks %s again at boot; use persist=systemd to remove it"
                        % (mount_unit_name(request.path), request.path))
    return warnings


def writer_warnings(writers: t.Sequence[t.Mapping[str, t.Any]]) -> list[str]:
    return ["%s (pid %d) holds %s open for writing; the lock does not stop writes through that descriptor"
            % (writer["command"], writer["pid"], writer["file"]) for writer in writers]
