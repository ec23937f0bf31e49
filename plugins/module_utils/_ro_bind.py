# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: the state of self-binds on a path, and the pure planner that decides what to change."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.immutable.root.plugins.module_utils._actions import Action
from ansible_collections.immutable.root.plugins.module_utils._errors import MountError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._fstab import (
    FstabEntry, parse_fstab, render_entry, rewrite, same_entry,
)
from ansible_collections.immutable.root.plugins.module_utils._mountinfo import (
    MountEntry, by_id, mount_containing, root_for, stack_at,
)
from ansible_collections.immutable.root.plugins.module_utils._units import mount_unit_name

State = t.Literal["present", "absent"]
Persist = t.Literal["none", "fstab", "systemd"]

UNIT_WANTED_BY = "local-fs.target"


@dataclass(frozen=True)
class Layer:
    """A mount stacked on the path; self_bind means it shows the path's own directory read-only or not."""

    mount: MountEntry
    self_bind: bool


@dataclass(frozen=True)
class Request:
    path: str
    state: State
    persist: Persist
    fstab_path: str
    unit_dir: str


@dataclass(frozen=True)
class Observed:
    """Everything the planner needs, read from the system beforehand."""

    layers: tuple[Layer, ...]  # bottom first
    parent: MountEntry | None  # the mount the bottom layer sits on (or that holds path when nothing does)
    fstab_entries: tuple[FstabEntry, ...]  # entries of fstab_path whose mountpoint is path
    unit_text: str | None  # current content of the mount unit file, None when absent
    unit_enabled: bool
    systemd_running: bool


def classify_layers(entries: t.Sequence[MountEntry], path: str) -> tuple[tuple[Layer, ...], MountEntry | None]:
    """The layers on path (bottom first) and the mount below them.

    A layer is a self-bind when it has its parent's device and shows the parent's directory at path:
    root == parent.root + (path - parent.mountpoint). A bind of some other directory onto path, or a
    different filesystem mounted there, is foreign.
    """
    stack = stack_at(entries, path)
    mounts = by_id(entries)
    layers = []
    parent = mounts.get(stack[0].parent_id) if stack else mount_containing(entries, path)
    below = parent
    for mount in stack:
        self_bind = below is not None and mount.device == below.device and mount.root == root_for(below, path)
        layers.append(Layer(mount, self_bind))
        below = mount
    return tuple(layers), parent


def desired_fstab_line(path: str) -> str:
    return render_entry(path, path, "none", ("bind", "ro"))


def is_own_fstab_entry(entry: FstabEntry, path: str) -> bool:
    """An fstab entry this module could have written: path bound onto itself."""
    return entry.spec == entry.mountpoint == path and "bind" in entry.options


def fstab_text(text: str, path: str, present: bool) -> str:
    """fstab text with exactly one own entry for path (present) or none (absent), other lines untouched."""
    ours = [entry.line_number for entry in parse_fstab(text) if is_own_fstab_entry(entry, path)]
    replace: dict[int, str | None] = {number: None for number in ours}
    append: tuple[str, ...] = ()
    if present and ours:
        replace[ours[0]] = desired_fstab_line(path)  # keep the user's position in the file
    elif present:
        append = (desired_fstab_line(path),)
    return rewrite(text, replace, append)


def unit_text(path: str) -> str:
    # Default dependencies order a local mount before local-fs.target and after its parents.
    return (
        "# Managed by immutable.root.ro_bind.\n"
        "[Unit]\n"
        "Description=Read-only self-bind of %(path)s\n"
        "\n"
        "[Mount]\n"
        "What=%(path)s\n"
        "Where=%(path)s\n"
        "Type=none\n"
        "Options=bind,ro\n"
        "\n"
        "[Install]\n"
        "WantedBy=%(wanted_by)s\n"
    ) % {"path": path, "wanted_by": UNIT_WANTED_BY}


def unit_paths(request: Request) -> tuple[str, str]:
    """(unit file, enablement symlink) for the path's mount unit under unit_dir."""
    name = mount_unit_name(request.path)
    return ("%s/%s" % (request.unit_dir, name), "%s/%s.wants/%s" % (request.unit_dir, UNIT_WANTED_BY, name))


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
    actions = []
    if request.state == "absent":
        if observed.unit_enabled:
            actions.append(Action("disable_unit", wants_link, UNIT_WANTED_BY))
        if observed.unit_text is not None:
            actions.append(Action("remove_unit", unit_file, ""))
    else:
        if observed.unit_text != unit_text(request.path):
            actions.append(Action("write_unit", unit_file, "Options=bind,ro"))
        if not observed.unit_enabled:
            actions.append(Action("enable_unit", wants_link, UNIT_WANTED_BY))
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
    mounts = plan_mounts(request, observed.layers)
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


def mount_state(path: str, layers: t.Sequence[Layer]) -> dict[str, t.Any]:
    """The `mount` result: the top mount on path and how many layers are stacked there."""
    top = layers[-1].mount if layers else None
    return {
        "path": path,
        "mount_id": top.mount_id if top else None,
        "source": top.source if top else None,
        "fstype": top.fstype if top else None,
        "fs_root": top.root if top else None,
        "mount_options": list(top.mount_options) if top else [],
        "super_options": list(top.super_options) if top else [],
        "propagation": top.propagation if top else None,
        "layers": len(layers),
        "self_bind_layers": sum(1 for layer in layers if layer.self_bind),
        "self_bind": bool(layers and layers[-1].self_bind),
        "read_only": bool(top and top.read_only),
    }


def predict_mount_state(request: Request, observed: Observed) -> dict[str, t.Any]:
    """The `mount` result the plan would produce (check mode reports this)."""
    layers = observed.layers
    if request.state == "absent":
        remaining = list(layers)
        while remaining and remaining[-1].self_bind:
            remaining.pop()
        return mount_state(request.path, remaining)
    template = layers[0].mount if layers else observed.parent
    if template is None:
        return mount_state(request.path, ())
    options = tuple("ro" if option == "rw" else option for option in template.mount_options)
    predicted = MountEntry(
        mount_id=layers[0].mount.mount_id if layers else -1,
        parent_id=template.parent_id if layers else template.mount_id,
        device=template.device,
        root=template.root if layers else root_for(template, request.path),
        mountpoint=request.path,
        mount_options=options,
        optional_fields=template.optional_fields,
        fstype=template.fstype,
        source=template.source,
        super_options=template.super_options,
    )
    state = mount_state(request.path, (Layer(predicted, True),))
    if not layers:
        state["mount_id"] = None  # the kernel assigns it
    return state


def persistence_state(request: Request, fstab_entries: t.Sequence[FstabEntry], unit: str | None) -> dict[str, t.Any]:
    """The persisted side for diff mode: our fstab line or the unit text."""
    if request.persist == "fstab":
        ours = [entry.raw for entry in fstab_entries if is_own_fstab_entry(entry, request.path)]
        return {"fstab_entry": ours[0] if len(ours) == 1 else (ours or None)}
    if request.persist == "systemd":
        return {"unit": unit}
    return {}


def predict_persistence_state(request: Request) -> dict[str, t.Any]:
    present = request.state == "present"
    if request.persist == "fstab":
        return {"fstab_entry": desired_fstab_line(request.path) if present else None}
    if request.persist == "systemd":
        return {"unit": unit_text(request.path) if present else None}
    return {}
