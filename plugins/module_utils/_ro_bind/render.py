# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ro_bind: the texts it writes (fstab line, mount unit) and the state it returns."""

from __future__ import annotations

import typing as t

from ansible_collections.immutable.root.plugins.module_utils._linux.fstab import (
    FstabEntry, parse_fstab, render_entry, rewrite,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry, root_for
from ansible_collections.immutable.root.plugins.module_utils._linux.units import escape_specifiers, mount_unit_name
from ansible_collections.immutable.root.plugins.module_utils._ro_bind.model import (
    Layer, Observed, Request, UNIT_WANTED_BY, mount_request, wanted_by,
)


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


def unit_text(path: str, bound_to: str | None = None) -> str:
    if bound_to is None:
        # Default dependencies order a local mount before local-fs.target and after its parents.
        unit, wanted = "Description=Read-only self-bind of %s\n" % path, UNIT_WANTED_BY
    else:
        # BindsTo= with After= keeps the mount active exactly while bound_to is: it starts after the unit,
        # stops with it, and is stopped when the unit is skipped by a failed condition. The default
        # Before=local-fs.target would form a cycle with units ordered after local-fs.target.
        unit = ("Description=Read-only self-bind of %s while %s is active\n"
                "DefaultDependencies=no\nBindsTo=%s\nAfter=%s\nConflicts=umount.target\nBefore=umount.target\n"
                % (path, bound_to, bound_to, bound_to))
        wanted = bound_to
    return (
        "# Managed by immutable.root.ro_bind.\n"
        "[Unit]\n"
        "%(unit)s"
        "\n"
        "[Mount]\n"
        "What=%(path)s\n"
        "Where=%(path)s\n"
        "Type=none\n"
        "Options=bind,ro\n"
        "\n"
        "[Install]\n"
        "WantedBy=%(wanted_by)s\n"
    ) % {"unit": escape_specifiers(unit), "path": escape_specifiers(path), "wanted_by": wanted}


def unit_paths(request: Request) -> tuple[str, str]:
    """(unit file, enablement symlink) for the path's mount unit under unit_dir."""
    name = mount_unit_name(request.path)
    return ("%s/%s" % (request.unit_dir, name), "%s/%s.wants/%s" % (request.unit_dir, wanted_by(request), name))


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
    request = mount_request(request, observed)
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
        return {"unit": unit_text(request.path, request.bound_to) if present else None}
    return {}
