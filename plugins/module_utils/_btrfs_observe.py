# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: reading the top level into a Layout. The filesystem is the only state there is.

A generation is snapshots/<NAME>/@ that lstat() shows as a real directory with the subvolume root inode
(256) *and* that `btrfs subvolume list` names; `current` and its slots are read with readlink().
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs_layout import (
    COMMONS, CURRENT, FSTAB, LAYOUT_DIRECTORIES, LINKS, NEXT, ROOT_SUBVOLUME, SNAPSHOTS, STAGING_PREFIX,
    TEMPORARY_LINK_PREFIX, Generation, Layout, LinkDirectory, Stray, generation_name_of, parse_current_target,
    parse_filesystem_uuid, mounted_subvolumes, parse_slot_target, parse_subvolume_list, parse_subvolume_show, sort_generations,
    utc_iso,
)
from ansible_collections.immutable.root.plugins.module_utils._errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._mountinfo import MountEntry, mount_containing
from ansible_collections.immutable.root.plugins.module_utils._runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._btrfs_top import SUBVOLUME_ROOT_INODE, read_mountinfo

MAX_FSTAB_BYTES = 1 << 20


def _kind(path: str) -> str | None:
    """'dir', 'link', 'other' or None when missing (never follows a symlink)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "other"


def _read_regular(path: str) -> str | None:
    """Content of a regular file, None when missing; never follows a symlink at the last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_FSTAB_BYTES)
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")


def read_generation_fstab(top: str, name: str) -> str | None:
    """etc/fstab of a generation, None when missing, not a regular file, or behind a symlinked etc."""
    root = os.path.join(top, SNAPSHOTS, name, ROOT_SUBVOLUME)
    if _kind(os.path.join(root, "etc")) != "dir":
        return None
    return _read_regular(os.path.join(root, "etc", "fstab"))


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _link_directory(path: str, name: str) -> LinkDirectory:
    slots: dict[int, str | None] = {}
    foreign = False
    for entry in _listdir(path):
        full = os.path.join(path, entry)
        if not entry.isdigit() or str(int(entry)) != entry or _kind(full) != "link":
            foreign = True
            continue
        slots[int(entry)] = parse_slot_target(os.readlink(full))
    count = max(slots) + 1 if slots else 0
    return LinkDirectory(name, tuple(slots.get(number) for number in range(count)), foreign)


def _created(runner: Runner, top: str, path: str) -> str | None:
    """Creation time of a subvolume that is no snapshot (`list -s` only shows snapshots)."""
    created = parse_subvolume_show(runner.run(["btrfs", "subvolume", "show", os.path.join(top, path)]).stdout)[1]
    return utc_iso(created) if created else None


def observe_generations(runner: Runner, top: str) -> tuple[tuple[Generation, ...], dict[str, int]]:
    """Generations (oldest first) and every listed subvolume path -> id, cross-checked against lstat()."""
    listed = parse_subvolume_list(runner.run(["btrfs", "subvolume", "list", top]).stdout)
    snapshots = {line.subvolid: line.otime for line in
                 parse_subvolume_list(runner.run(["btrfs", "subvolume", "list", "-s", top]).stdout)}
    read_only = {line.subvolid for line in
                 parse_subvolume_list(runner.run(["btrfs", "subvolume", "list", "-r", top]).stdout)}
    generations = []
    for line in listed:
        name = generation_name_of(line.path)
        if name is None:
            continue
        status = os.lstat(os.path.join(top, line.path)) if _kind(os.path.join(top, line.path)) == "dir" else None
        if status is None or status.st_ino != SUBVOLUME_ROOT_INODE:
            continue  # listed, but what lstat sees there is no subvolume root: not a generation
        otime = snapshots.get(line.subvolid)
        created = utc_iso(otime) if otime else _created(runner, top, line.path)
        generations.append(Generation(name, line.subvolid, created, line.subvolid in read_only))
    return sort_generations(generations), {line.path: line.subvolid for line in listed}


def _snapshot_strays(top: str, generations: t.Collection[str], subvolumes: t.Mapping[str, int]) -> list[Stray]:
    strays = []
    for entry in _listdir(os.path.join(top, SNAPSHOTS)):
        path = "%s/%s" % (SNAPSHOTS, entry)
        full = os.path.join(top, path)
        if entry in generations:
            continue
        if entry.startswith(STAGING_PREFIX) and path in subvolumes:
            strays.append(Stray("staging", path, "copy of an interrupted run, subvolume id %d" % subvolumes[path],
                                subvolumes[path]))
        elif _kind(full) == "dir" and not _listdir(full):
            strays.append(Stray("empty_directory", path, "left by an interrupted run"))
        else:
            content = ", ".join(_listdir(full)) if _kind(full) == "dir" else "a %s" % _kind(full)
            strays.append(Stray("foreign", path, content or "unknown"))
    for entry in _listdir(os.path.join(top, NEXT)):
        path = "%s/%s" % (NEXT, entry)
        kind = _kind(os.path.join(top, path))
        if entry.startswith(TEMPORARY_LINK_PREFIX) and kind == "link":
            strays.append(Stray("temporary_link", path, "staged link of an interrupted switch"))
        else:
            strays.append(Stray("foreign", path, "a %s" % kind))
    return strays


def observe(runner: Runner, top: str, root: str = "/", commons: t.Sequence[str] = (),
            fstabs_of: t.Iterable[str | None] = ()) -> Layout:
    """Read the layout under top; fstabs are read for fstabs_of plus the newest and the current generation."""
    blocked = set()
    directories = set()
    for directory in LAYOUT_DIRECTORIES:
        kind = _kind(os.path.join(top, directory))
        if kind == "dir":
            directories.add(directory)
        elif kind is not None:
            blocked.add(directory)
    current_kind = _kind(os.path.join(top, CURRENT))
    current_text = os.readlink(os.path.join(top, CURRENT)) if current_kind == "link" else None
    if current_kind not in (None, "link"):
        blocked.add(CURRENT)
    template = _read_regular(os.path.join(top, FSTAB))
    if template is None and _kind(os.path.join(top, FSTAB)) is not None:
        blocked.add(FSTAB)  # a symlink, directory or device where the template belongs

    generations, subvolumes = observe_generations(runner, top)
    names = {generation.name for generation in generations}
    common_subvolumes = frozenset(path.split("/", 1)[1] for path in subvolumes
                                  if path.startswith(COMMONS + "/") and path.count("/") == 1)
    for common in commons:
        if common not in common_subvolumes and _kind(os.path.join(top, COMMONS, common)) is not None:
            blocked.add("%s/%s" % (COMMONS, common))

    link_directories = []
    strays = _snapshot_strays(top, names, subvolumes)
    for entry in _listdir(os.path.join(top, LINKS)):
        full = os.path.join(top, LINKS, entry)
        if _kind(full) == "dir":
            link_directories.append(_link_directory(full, entry))
        else:
            strays.append(Stray("foreign", "%s/%s" % (LINKS, entry), "a %s" % _kind(full)))

    booted, mounted = mounted_subvolumes(read_mountinfo(), top, root)
    layout = Layout(top=top, directories=frozenset(directories), commons=common_subvolumes, template=template,
                    generations=generations, current_text=current_text, link_directories=tuple(link_directories),
                    strays=tuple(strays), booted=booted, mounted=mounted, blocked=frozenset(blocked))
    wanted = {name for name in fstabs_of if name in names}
    if generations:
        wanted.add(generations[-1].name)
    links_name = parse_current_target(current_text) if current_text else None
    for directory in link_directories:
        if directory.name == links_name and directory.targets and directory.targets[0] in names:
            wanted.add(t.cast(str, directory.targets[0]))
    return dataclasses.replace(layout, fstabs={name: read_generation_fstab(top, name) for name in sorted(wanted)})


def filesystem_uuid(runner: Runner, top: str) -> str:
    return parse_filesystem_uuid(runner.run(["btrfs", "filesystem", "show", top]).stdout)


def source_kind(runner: Runner, top_mount: MountEntry, path: str) -> str:
    """'snapshot' for the root of a subvolume on top's filesystem (other than the top level), else 'copy'."""
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode):
        raise ParameterError("source", "%s is not a directory" % path)
    mount = mount_containing(read_mountinfo(), os.path.realpath(path))
    if status.st_ino != SUBVOLUME_ROOT_INODE or mount is None or mount.fstype != "btrfs" \
            or mount.device != top_mount.device:
        return "copy"
    if runner.run(["btrfs", "inspect-internal", "rootid", path]).stdout.strip() == "5":
        raise ParameterError("source", "%s is the btrfs top level itself; give the subvolume of the root to start "
                             "from (such as @)" % path)
    return "snapshot"
