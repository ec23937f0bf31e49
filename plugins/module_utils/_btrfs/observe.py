# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: reading the top level into a typed Layout."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    BUILDING, COMMONS, CURRENT, FSTAB, Generation, GenerationError, LAYOUT_DIRECTORIES, LINKS, Layout, LinkDirectory,
    MAX_FSTAB_BYTES, MAX_RENDERED_FSTAB_BYTES, NEXT, ROOT_SUBVOLUME, NAME_PATTERN, SNAPSHOTS, STAGING_PREFIX, Stray,
    SubvolumeInfo, TEMPORARY_LINK_PREFIX, parse_slot_target,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.parse import (
    generation_name_of, mounted_subvolumes, parse_filesystem_uuid, parse_subvolume_info, parse_subvolume_list,
    parse_subvolume_show,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.plan import sort_generations
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import resolve_in_root
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux import btrfs_ioctl
from ansible_collections.immutable.root.plugins.module_utils._linux.btrfs_ioctl import SUBVOLUME_ROOT_INODE
from ansible_collections.immutable.root.plugins.module_utils._linux.fs import read_regular
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import (
    MountEntry, mount_containing, read_mountinfo,
)


def _kind(path: str) -> str | None:
    """'dir', 'link', 'other' or None when missing (never follows a symlink)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "other"


def _read_regular(path: str, limit: int = MAX_FSTAB_BYTES) -> str | None:
    """Content of a regular file of at most limit bytes, None when missing, larger or not a regular file; never
    follows a symlink at the last component (and never blocks on a FIFO)."""
    try:
        return read_regular(path, limit).decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL, errno.EFBIG):
            return None
        raise


def read_template(top: str) -> str:
    """top/fstab, the template, as observe() reads it; an error when it is no longer a regular file of at most
    MAX_FSTAB_BYTES (replaced since the layout was observed)."""
    text = _read_regular(os.path.join(top, FSTAB))
    if text is None:
        raise GenerationError("top: %s/%s, the fstab template, is missing or not a regular file of at most %d "
                              "bytes" % (top, FSTAB, MAX_FSTAB_BYTES))
    return text


def read_generation_fstab(top: str, name: str) -> str | None:
    """etc/fstab of a generation, None when missing, not a regular file, or behind a symlinked etc."""
    root = os.path.join(top, SNAPSHOTS, name, ROOT_SUBVOLUME)
    if _kind(os.path.join(root, "etc")) != "dir":
        return None
    return _read_regular(os.path.join(root, "etc", "fstab"), MAX_RENDERED_FSTAB_BYTES)


def _described(path: str) -> str:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "a symlink to %r" % os.readlink(path)
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a device node"


def injection_problem(root: str) -> str | None:
    """Why a generation made from root could not have its etc/fstab written: etc must be a directory (or
    missing) and etc/fstab anything but a directory, since the write goes through etc without following a
    symlink and renames a new file over etc/fstab."""
    etc = os.path.join(root.rstrip("/") or "/", "etc")
    kind = _kind(etc)
    if kind is None:
        return None
    if kind != "dir":
        return "%s is not a directory but %s; the new generation's etc/fstab must be written into a real etc" % (
            etc, _described(etc))
    if _kind(os.path.join(etc, "fstab")) == "dir":
        return "%s/fstab is a directory; the new generation's etc/fstab must be a file" % etc
    return None


def read_building(top: str) -> tuple[str | None, Stray | None]:
    """The generation top/building names as unfinished; a file there that is not our record is a stray."""
    text = _read_regular(os.path.join(top, BUILDING))
    if text is None:
        kind = _kind(os.path.join(top, BUILDING))
        return None, (Stray("foreign", BUILDING, "a %s" % kind) if kind is not None else None)
    try:
        name = json.loads(text).get("name")
    except (ValueError, AttributeError):
        name = None
    if isinstance(name, str) and NAME_PATTERN.match(name):
        return name, None
    return None, Stray("foreign", BUILDING, "not a record of btrfs_generation: %r" % text[:80])


def boot_file_problems(top: str, name: str | None, paths: t.Sequence[str]) -> tuple[str, ...]:
    """Why each of paths (absolute inside generation name, symlinks resolved within it) would not boot."""
    if name is None or not paths:
        return ()
    root = os.path.join(top, SNAPSHOTS, name, ROOT_SUBVOLUME)
    if _kind(root) != "dir":
        return ()
    problems = []
    for path in paths:
        try:
            resolved = resolve_in_root(root, path)
        except OSError as exc:
            problems.append("%s: %s" % (path, exc))
            continue
        relative = os.path.relpath(resolved, root)
        inside = "/" if relative == "." else "/" + relative
        shown = path if inside == os.path.normpath(path) else "%s (-> %s)" % (path, inside)
        try:
            status = os.lstat(resolved)
        except OSError as exc:
            problems.append("%s is missing (%s)" % (shown, exc.strerror))
            continue
        if not stat.S_ISREG(status.st_mode):
            problems.append("%s is not a regular file" % shown)
        elif status.st_size == 0:
            problems.append("%s is empty" % shown)
    return tuple(problems)


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


class _NoIoctl(Exception):
    pass


def subvolume_info(path: str) -> SubvolumeInfo | None:
    """Id, read-only flag and creation time of the subvolume whose root is path; None when path is no
    subvolume root (a symlink, a plain directory). Opened with O_NOFOLLOW and checked on the descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    try:
        if os.fstat(fd).st_ino != SUBVOLUME_ROOT_INODE:
            return None
        try:
            buffer = btrfs_ioctl.get_subvol_info(fd)
        except OSError as exc:
            if exc.errno in btrfs_ioctl.IOCTL_UNAVAILABLE:
                raise _NoIoctl()
            raise
        return parse_subvolume_info(buffer)
    finally:
        os.close(fd)


def _show(runner: Runner, path: str) -> SubvolumeInfo | None:
    if _kind(path) != "dir" or os.lstat(path).st_ino != SUBVOLUME_ROOT_INODE:
        return None
    return parse_subvolume_show(runner.run(["btrfs", "subvolume", "show", path]).stdout)


def observe_generations(runner: Runner, top: str) -> tuple[tuple[Generation, ...], dict[str, int]]:
    """Generations (oldest first) and every listed subvolume path -> id.

    A listed snapshots/<NAME>/@ counts when what is there now (opened without following symlinks) is a
    subvolume root with the listed id: a foreign mount or a symlink in its place is no generation.
    """
    listed = parse_subvolume_list(runner.run(["btrfs", "subvolume", "list", top]).stdout)
    generations = []
    ioctl = True
    for line in listed:
        name = generation_name_of(line.path)
        if name is None:
            continue
        path = os.path.join(top, line.path)
        info = None
        if ioctl:
            try:
                info = subvolume_info(path)
            except _NoIoctl:
                ioctl = False
        if not ioctl:
            info = _show(runner, path)
        if info is not None and info.subvolid == line.subvolid:
            generations.append(Generation(name, info.subvolid, info.created, info.read_only))
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

    building, building_stray = read_building(top)
    if building_stray is not None:
        strays.append(building_stray)
    booted, mounted = mounted_subvolumes(read_mountinfo(), top, root)
    layout = Layout(top=top, directories=frozenset(directories), commons=common_subvolumes, template=template,
                    generations=generations, current_text=current_text, link_directories=tuple(link_directories),
                    strays=tuple(strays), booted=booted, mounted=mounted, blocked=frozenset(blocked),
                    building=building)
    wanted = {name for name in fstabs_of if name in names}
    for name in (generations[-1].name if generations else None, layout.current_name()):
        if name is not None:
            wanted.add(name)
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
