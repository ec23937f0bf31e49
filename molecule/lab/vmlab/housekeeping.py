# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the cache holds, and removing entries superseded by a newer key of the same tree or image.

Only superseded entries of names the lab itself defines are removed: other code (host tests) may keep trees
of its own in the same cache, and an entry in use by a builder (its lock held) is skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vmlab import guest, images, rootfs
from vmlab.cache import KEY_LENGTH, CacheEntry, locked, remove_entry_dir
from vmlab.errors import LabError

KNOWN_TREES = (rootfs.MINBASE_TREE, rootfs.SPLIT_USR_TREE, guest.VM_TREE, guest.VM_SPLIT_USR_TREE, guest.VM_OPENRC_TREE,
               guest.VM_TRIXIE_TREE)


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    kind: str
    name: str
    path: Path
    bytes_on_disk: int
    status: str  # "current", "superseded" or "other" (a name the lab does not define)


def _current(cache: Path) -> dict[tuple[str, str], Path]:
    current = {("trees", spec.name): rootfs.tree_entry(spec, cache).path for spec in KNOWN_TREES}
    current.update({("images", name): images.image_entry(name, cache).path for name in images.VARIANTS})
    return current


def entries(cache: Path) -> list[EntryInfo]:
    current = _current(cache)
    found = []
    for kind in ("trees", "images"):
        directory = cache / kind
        if not directory.is_dir():
            continue
        for path in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
            name = path.name[:-(KEY_LENGTH + 1)]
            known = current.get((kind, name))
            status = "other" if known is None else ("current" if known == path else "superseded")
            size = sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
            found.append(EntryInfo(kind, name, path, size, status))
    return found


def prune(cache: Path) -> list[Path]:
    """Delete superseded entries that no process holds; return what was deleted."""
    removed = []
    for info in entries(cache):
        if info.status != "superseded":
            continue
        entry = CacheEntry(cache, info.kind, info.name, info.path.name[-KEY_LENGTH:])
        try:
            with locked(entry.lock_path, f"cache entry {info.path.name}", timeout=0):
                remove_entry_dir(info.path)
                removed.append(info.path)
        except LabError:
            continue  # a builder holds it right now
    return removed
