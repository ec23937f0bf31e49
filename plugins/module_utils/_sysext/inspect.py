# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext: reading an image's content (release data, hierarchies, file impact) from trees and raw images."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import signal
import stat
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ImmutableRootError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import resolve_in_root
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux import libc
from ansible_collections.immutable.root.plugins.module_utils._linux.namespace import enter_private_mount_namespace
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import ImageContent
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    RELEASE_DIR, ReleaseSyntaxError, parse_boolean, parse_env_pairs, read_release_bytes, systemd_image_name_is_valid,
)

STRICT_XATTR = "user.extension-release.strict"
# getxattr(2): the attribute is not set (ENODATA), or the filesystem has none (ENOTSUP).
NO_XATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
IMPACT_LIMIT = 100  # paths listed per image and kind in diff mode; the counts are always complete


class InspectError(ImmutableRootError):
    """The private inspection process failed."""


def release_file_name(name: str) -> str:
    return "%s/extension-release.%s" % (RELEASE_DIR, name)


def read_release(tree: str, name: str) -> tuple[dict[str, str] | None, str | None, str | None]:
    """(release data, its path inside the tree, why there is none) following open_extension_release() (252).

    The file named after the image wins; without it, exactly one regular extension-release.* file carrying
    the xattr user.extension-release.strict=false is accepted (an image renamed on deployment).
    """
    wanted = release_file_name(name)
    path = resolve_in_root(tree, wanted)
    if not os.path.exists(path):
        directory = resolve_in_root(tree, RELEASE_DIR)
        if not os.path.isdir(directory):
            return None, None, "no %s" % wanted
        candidates = sorted(entry.name for entry in os.scandir(directory) if _relaxed_release(entry))
        if not candidates:
            return None, None, "no %s, and no other extension-release file marked %s=false" % (wanted, STRICT_XATTR)
        if len(candidates) > 1:
            return None, None, "no %s, and more than one file marked %s=false: %s" % (
                wanted, STRICT_XATTR, ", ".join(candidates))
        wanted = "%s/%s" % (RELEASE_DIR, candidates[0])
        path = os.path.join(directory, candidates[0])
    try:
        return parse_env_pairs(read_release_bytes(path), wanted), wanted, None
    except (OSError, ReleaseSyntaxError) as exc:
        return None, wanted, "%s cannot be read: %s" % (wanted, exc)


def _relaxed_release(entry: os.DirEntry) -> bool:
    image_name = entry.name[len("extension-release."):]
    if not entry.name.startswith("extension-release.") or not systemd_image_name_is_valid(image_name):
        return False
    if not entry.is_file(follow_symlinks=False):
        return False
    try:
        value = os.getxattr(entry.path, STRICT_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in NO_XATTR:
            return False
        raise
    return parse_boolean(value.decode("utf-8", "replace").rstrip("\0")) is False


def has_content(tree: str, hierarchy: str) -> bool:
    """Whether systemd-sysext would use this image for the hierarchy: it exists there and is not empty."""
    path = resolve_in_root(tree, hierarchy)
    try:
        with os.scandir(path) as entries:
            return any(True for _entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


def inspect_tree(tree: str, name: str, hierarchies: t.Sequence[str]) -> ImageContent:
    """What systemd-sysext reads from an image whose files are at tree (a directory or a mounted raw image)."""
    release, release_path, problem = read_release(tree, name)
    os_release = os.path.exists(resolve_in_root(tree, "usr/lib/os-release"))
    return ImageContent(
        release=release,
        release_path=release_path,
        release_problem=problem,
        os_release=os_release,
        os_tree=os_release or os.path.exists(resolve_in_root(tree, "etc/os-release")),
        hierarchies=tuple(hierarchy for hierarchy in hierarchies if has_content(tree, hierarchy)),
        not_directories=tuple(hierarchy for hierarchy in hierarchies if _exists_not_directory(tree, hierarchy)),
    )


def _exists_not_directory(tree: str, hierarchy: str) -> bool:
    path = resolve_in_root(tree, hierarchy)
    return os.path.lexists(path) and not os.path.isdir(path)


@dataclasses.dataclass
class FileImpact:
    """For diff mode: what an image adds to the base tree, and which base entries it hides."""

    adds: list[str] = dataclasses.field(default_factory=list)
    adds_count: int = 0
    shadows: list[str] = dataclasses.field(default_factory=list)
    shadows_count: int = 0

    def add(self, path: str) -> None:
        self.adds_count += 1
        if len(self.adds) < IMPACT_LIMIT:
            self.adds.append(path)

    def shadow(self, path: str) -> None:
        self.shadows_count += 1
        if len(self.shadows) < IMPACT_LIMIT:
            self.shadows.append(path)


def file_impact(tree: str, base_root: str, hierarchies: t.Sequence[str]) -> FileImpact:
    """Files (non-directories) the image adds, and base entries an overlay of it hides.

    Overlayfs merges directories only: an image file over a base file hides it, and an image directory
    over a base symlink or file (say usr/lib64 -> lib) replaces it, so everything below counts as added.
    base_root must show the base tree (no sysext overlay on it).
    """
    impact = FileImpact()
    for hierarchy in hierarchies:
        relative = hierarchy.strip("/")
        image_dir = resolve_in_root(tree, relative)
        if os.path.isdir(image_dir):
            _compare(image_dir, resolve_in_root(base_root, relative), "/" + relative, impact)
    return impact


def _compare(image_dir: str, base_dir: str | None, shown: str, impact: FileImpact) -> None:
    for entry in sorted(os.scandir(image_dir), key=lambda item: item.name):
        path = "%s/%s" % (shown, entry.name)
        base_mode = _lstat_mode(os.path.join(base_dir, entry.name)) if base_dir else None
        if entry.is_dir(follow_symlinks=False):
            if base_mode is not None and not stat.S_ISDIR(base_mode):
                impact.shadow(path)
            _compare(entry.path, os.path.join(base_dir, entry.name) if base_dir and base_mode is not None
                     and stat.S_ISDIR(base_mode) else None, path, impact)
        elif base_mode is None:
            impact.add(path)
        else:
            impact.shadow(path)


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


class InspectJob(t.NamedTuple):
    path: str
    name: str
    kind: str  # directory or raw
    impact: bool = False  # also compute the FileImpact (diff mode)


# The superblock magics of the formats extension images come in, read directly: blkid -p cost a process (about 3 ms)
# per image on every run. (offset, bytes, filesystem type); anything else is left to blkid.
SUPERBLOCK_MAGICS = ((0, b"hsqs", "squashfs"), (1024, b"\xe2\xe1\xf5\xe0", "erofs"))
MAGIC_BYTES = max(offset + len(magic) for offset, magic, _fstype in SUPERBLOCK_MAGICS)


# A GPT header in LBA 1 makes systemd read the file as a partitioned image, whatever else it holds.
GPT_SIGNATURE = (512, b"EFI PART")


def superblock_type(head: bytes) -> str | None:
    """The filesystem whose superblock magic the image's first bytes hold, among SUPERBLOCK_MAGICS; None where
    it holds none of them or also a GPT header (blkid decides those)."""
    offset, signature = GPT_SIGNATURE
    if head[offset:offset + len(signature)] == signature:
        return None
    for offset, magic, fstype in SUPERBLOCK_MAGICS:
        if head[offset:offset + len(magic)] == magic:
            return fstype
    return None


def read_head(image: str) -> bytes:
    """The first MAGIC_BYTES of a regular file (never blocking on a FIFO, never through a symlink); b"" otherwise."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.pread(fd, MAGIC_BYTES, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    finally:
        os.close(fd)


def probe_filesystem(runner: Runner, image: str) -> tuple[str | None, str | None]:
    """(filesystem type, problem) of a raw image: squashfs and erofs by their magic, the rest as blkid's
    low-level probe sees it."""
    fstype = superblock_type(read_head(image))
    if fstype:
        return fstype, None
    probe = runner.run(["blkid", "-p", "-o", "export", image], check=False)
    fields = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    if fields.get("TYPE"):
        return fields["TYPE"], None
    if fields.get("PTTYPE"):
        return None, "a partitioned image (%s); this module reads plain filesystem images only" % fields["PTTYPE"]
    return None, "blkid finds no filesystem in it"


def _inspect_raw(runner: Runner, job: InspectJob, mountpoint: str, hierarchies: t.Sequence[str],
                 base_root: str) -> dict[str, t.Any]:
    fstype, problem = probe_filesystem(runner, job.path)
    if problem or fstype is None:
        return {"content": dataclasses.asdict(ImageContent(error=problem))}
    os.mkdir(mountpoint)
    mounted = runner.run(["mount", "-t", fstype, "-o", "ro,nodev,nosuid,loop", job.path, mountpoint], check=False)
    if mounted.rc != 0:
        lines = (mounted.stderr or mounted.stdout).strip().splitlines()
        error = "%s: mount failed: %s" % (fstype, lines[0].strip() if lines else "rc %d" % mounted.rc)
        return {"content": dataclasses.asdict(ImageContent(error=error, fstype=fstype))}
    try:
        return _inspect_directory(job, mountpoint, hierarchies, base_root, fstype)
    finally:
        # Explicitly, so the loop device is released before the module returns.
        runner.run(["umount", mountpoint])


def _inspect_directory(job: InspectJob, tree: str, hierarchies: t.Sequence[str], base_root: str,
                       fstype: str | None = None) -> dict[str, t.Any]:
    content = dataclasses.replace(inspect_tree(tree, job.name, hierarchies), fstype=fstype)
    result: dict[str, t.Any] = {"content": dataclasses.asdict(content)}
    if job.impact:
        result["impact"] = dataclasses.asdict(file_impact(tree, base_root, content.hierarchies))
    return result


def _content_from_dict(data: dict[str, t.Any]) -> ImageContent:
    return ImageContent(**dict(data, hierarchies=tuple(data["hierarchies"]),
                               not_directories=tuple(data["not_directories"])))


def inspect_images(runner: Runner, jobs: t.Sequence[InspectJob], hierarchies: t.Sequence[str], base_root: str = "/",
                   peel: t.Sequence[str] = ()) -> dict[str, tuple[ImageContent, FileImpact | None]]:
    """Inspect every job's image in one private mount namespace; keyed by image path.

    peel: mountpoints whose sysext overlay is unmounted inside that namespace only, so that base_root
    shows the base tree for file_impact().
    """
    if not jobs:
        return {}
    workdir = tempfile.mkdtemp(prefix="immutable-root-sysext-")

    def work() -> dict[str, t.Any]:
        for path in peel:
            runner.run(["umount", "-l", path])
        results = {}
        for number, job in enumerate(jobs):
            if job.kind == "raw":
                results[job.path] = _inspect_raw(runner, job, os.path.join(workdir, str(number)), hierarchies,
                                                 base_root)
            else:
                results[job.path] = _inspect_directory(job, job.path, hierarchies, base_root)
        return results

    try:
        raw = in_private_mount_namespace(work)
    finally:
        for name in os.listdir(workdir):
            os.rmdir(os.path.join(workdir, name))
        os.rmdir(workdir)
    return {path: (_content_from_dict(item["content"]), FileImpact(**item["impact"]) if "impact" in item else None)
            for path, item in raw.items()}


# The inspection child mounts and reads images; nothing it does should take minutes. Past this it is killed.
INSPECT_SECONDS = 600
PR_SET_PDEATHSIG = 1


def bound_child_lifetime() -> None:  # pragma: no cover - runs in the child
    """Die with the parent (a killed module run must not leave its child blocked) and after INSPECT_SECONDS."""
    libc.call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
              ctypes.c_ulong(0), ctypes.c_ulong(0), what="prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:
        os._exit(1)  # the parent died before the prctl took effect
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(INSPECT_SECONDS)


def in_private_mount_namespace(work: t.Callable[[], t.Any]) -> t.Any:
    """Run work() in a forked child inside a new, fully private mount namespace; return its JSON result.

    Nothing the child mounts is visible to any other process, and it all goes away when the child exits.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(reader)
        try:
            bound_child_lifetime()
            enter_private_mount_namespace()
            payload = {"result": work()}
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # The child must always report and exit: returning would run the caller's code twice.
            payload = {"error": "%s: %s" % (type(exc).__name__, exc)}
        try:
            with os.fdopen(writer, "w") as handle:
                json.dump(payload, handle)
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as handle:
        data = handle.read()
    _pid, status = os.waitpid(pid, 0)
    try:
        payload = json.loads(data)
    except ValueError:
        raise InspectError("the image inspection process died (wait status %d) without a result" % status)
    if "error" in payload:
        raise InspectError("inspecting extension images failed: %s" % payload["error"])
    return payload["result"]
