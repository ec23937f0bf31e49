# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: the texts it writes (link targets, fstab) and the state it returns."""

from __future__ import annotations

import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    COMMONS, LINKS, Layout, LinkDirectory, PLACEHOLDER, ROOT_SUBVOLUME, SNAPSHOTS,
)


def slot_target(name: str) -> str:
    return "../../%s/%s" % (SNAPSHOTS, name)


def current_target(links: str) -> str:
    return "./%s/%s" % (LINKS, links)


def generation_path(name: str) -> str:
    """Path of a generation's root inside the filesystem, as subvol= and mountinfo write it."""
    return "/%s/%s/%s" % (SNAPSHOTS, name, ROOT_SUBVOLUME)


def render_fstab(template: str, name: str) -> str:
    """The seed's `sed s#CURRENT_SNAPSHOTS_PATH#/snapshots/<NAME>#g`."""
    return template.replace(PLACEHOLDER, "/%s/%s" % (SNAPSHOTS, name))


def common_mountpoint(common: str) -> str:
    """@var@lib@flatpak is mounted on /var/lib/flatpak (the seed's naming)."""
    return "/" + "/".join(part for part in common.split("@") if part)


def default_template(fs_uuid: str, commons: t.Sequence[str]) -> str:
    """An fstab template for the root generation and the commons of the filesystem with fs_uuid."""
    # The comment must not name the placeholder itself: it would be replaced in every generation's copy.
    lines = ["# fstab template of immutable.root.btrfs_generation; each generation gets a copy naming its own root.",
             "UUID=%s / btrfs subvol=%s/%s,ro,noatime 0 0" % (fs_uuid, PLACEHOLDER, ROOT_SUBVOLUME)]
    for common in commons:
        lines.append("UUID=%s %s btrfs subvol=/%s/%s,rw,noatime 0 0"
                     % (fs_uuid, common_mountpoint(common), COMMONS, common))
    return "\n".join(lines) + "\n"


def generations_state(layout: Layout, pinned: t.Collection[str]) -> list[dict[str, t.Any]]:
    """The `generations` result: oldest first, with the slots of current each one fills."""
    slots = layout.slots()
    booted = layout.booted_name()
    mounted = layout.mounted_names()
    return [{
        "name": generation.name,
        "path": generation_path(generation.name),
        "subvolid": generation.subvolid,
        "created": generation.created,
        "read_only": generation.read_only,
        "slots": [number for number, target in enumerate(slots) if target == generation.name],
        "booted": generation.name == booted,
        "mounted": generation.name in mounted,
        "pinned": generation.name in pinned,
    } for generation in layout.generations]


def summary_state(layout: Layout) -> dict[str, t.Any]:
    """Generation names and current's slots: what diff mode compares."""
    return {"generations": layout.names(), "slots": list(layout.slots()),
            "current": layout.current_name(), "links": (layout.current_links() or LinkDirectory("", ())).name or None}
