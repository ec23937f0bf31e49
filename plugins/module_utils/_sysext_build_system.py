# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build: reading sources and existing images, and building, checking and installing an image.

An image is assembled in a staging directory whose name starts with '.#' and lies beside the
destination, never in it when that can be avoided: systemd-sysext skips '.#' names (image_name_is_valid)
and never looks outside its search directories, so a half-built image is never picked up. Only a
checked image is renamed into place.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._actions import Action
from ansible_collections.immutable.root.plugins.module_utils._checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._durable import fsync_directory
from ansible_collections.immutable.root.plugins.module_utils._errors import CommandError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._osrelease import OS_RELEASE_PATHS, render_release
from ansible_collections.immutable.root.plugins.module_utils._paths import resolve_in_root
from ansible_collections.immutable.root.plugins.module_utils._runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._sysext_build import (
    DIGEST_KEY, BuildObserved, BuildRequest, ExistingImage, Membership, compose_release, default_release, digest,
    membership, normalize_member, with_digest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext_inspect import (
    InspectJob, inspect_images, inspect_tree, probe_filesystem, read_release, release_file_name,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext_images import SEARCH_DIRS
from ansible_collections.immutable.root.plugins.module_utils._sysext_release import (
    HostRelease, ReleaseSyntaxError, SysextError, extension_release_problem, parse_env_pairs,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext_system import (
    merged_names_now, running_architecture,
)

STAGING_PREFIX = ".#sysext-build."
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def staging_prefix(name: str) -> str:
    return "%s%s." % (STAGING_PREFIX, name)


def staging_parent(dest: str) -> str:
    """Beside dest when that is the same filesystem (rename must not cross one), else inside it."""
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    return parent if os.stat(parent).st_dev == os.stat(dest).st_dev else dest


def _sha256_file(path: str) -> str:
    digest_ = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest_.update(block)
    return digest_.hexdigest()


def target_release_pairs(root: str) -> dict[str, str]:
    for relative in OS_RELEASE_PATHS:
        path = resolve_in_root(root, relative)
        try:
            with open(path, "rb") as handle:
                return parse_env_pairs(handle.read(), path)
        except FileNotFoundError:
            continue
        except ReleaseSyntaxError as exc:
            raise SysextError("root: %s" % exc.msg)
    return {}


class SourceScan(t.NamedTuple):
    digests: list[str]
    files: set[str]  # relative paths of the non-directory entries the image will hold
    dropped: list[str]
    patterns: dict[str, list[str]]  # package path -> bsdtar patterns that select its included members
    owners: dict[str, list[tuple[str, str]]]  # relative path -> (source, member name) of every source shipping it


def list_package(runner: Runner, path: str) -> list[str]:
    try:
        return runner.run(["bsdtar", "-tf", path]).stdout.splitlines()
    except CommandError as exc:
        raise ParameterError("sources", "%s cannot be read as a package or tarball: %s" % (path, exc.msg))


def _forbidden(source: str) -> ParameterError:
    return ParameterError("sources", "%s ships usr/lib/os-release; an extension must not carry it (systemd-sysext "
                                     "refuses such images and fails the whole merge)" % source)


def scan_sources(runner: Runner, request: BuildRequest) -> SourceScan:
    scan = SourceScan([], set(), [], {}, {})
    for source in request.sources:
        if source.kind == "package":
            patterns: set[str] = set()
            for member in list_package(runner, source.path):
                relative = normalize_member(member)
                if not relative:
                    continue
                verdict = membership(relative, request.hierarchies)
                if verdict == "forbidden":
                    raise _forbidden(source.path)
                if verdict == "drop":
                    scan.dropped.append(relative + ("/" if member.endswith("/") else ""))
                elif verdict == "include":
                    if not member.endswith("/"):
                        scan.files.add(relative)
                        scan.owners.setdefault(relative, []).append((source.path, member))
                    prefix = member[:len(member) - len(member.lstrip("./"))]
                    patterns.add(prefix + _hierarchy_of(relative, request.hierarchies))
            scan.patterns[source.path] = sorted(patterns)
            scan.digests.append(_sha256_file(source.path))
        else:
            tree = hashlib.sha256()
            for relative, st, extra in walk_source(source.path, request.hierarchies, scan.dropped):
                tree.update(("%s\0%o\0%d\0%d\0%s\0" % (relative, st.st_mode, st.st_uid, st.st_gid, extra)).encode(
                    "utf-8", "surrogateescape"))
                if not stat.S_ISDIR(st.st_mode):
                    scan.files.add(relative)
                    scan.owners.setdefault(relative, []).append((source.path, relative))
            scan.digests.append(tree.hexdigest())
    check_conflicts(runner, scan.owners)
    return scan


def check_conflicts(runner: Runner, owners: t.Mapping[str, t.Sequence[tuple[str, str]]]) -> None:
    """Refuse a path that two sources ship differently, before anything is written (packages are unpacked
    to a temporary directory outside the root for the comparison)."""
    shared = {path: sources for path, sources in owners.items() if len(sources) > 1}
    if not shared:
        return
    workdir = tempfile.mkdtemp(prefix="immutable-root-sysext-conflicts-")
    try:
        located: dict[tuple[str, str], str] = {}
        for number, source in enumerate(sorted({owner for sources in shared.values() for owner, _member in sources})):
            members = [member for sources in shared.values() for owner, member in sources if owner == source]
            if os.path.isdir(source):
                located.update(((source, member), os.path.join(source, member)) for member in members)
                continue
            unpacked = os.path.join(workdir, str(number))
            os.mkdir(unpacked)
            runner.run(["bsdtar", "-xpf", source, "-C", unpacked, "--numeric-owner", "--"] + members)
            located.update(((source, member), os.path.join(unpacked, normalize_member(member))) for member in members)
        for path, sources in sorted(shared.items()):
            first = located[sources[0]]
            for other in sources[1:]:
                if not _same_entry(first, os.lstat(first), located[other]):
                    raise ParameterError("sources", "%s and %s both ship %s, with different content or metadata"
                                         % (sources[0][0], other[0], path))
    finally:
        shutil.rmtree(workdir)


def _hierarchy_of(relative: str, hierarchies: t.Sequence[str]) -> str:
    return next(h.strip("/") for h in hierarchies if relative == h.strip("/") or relative.startswith(h.strip("/") + "/"))


def walk_source(top: str, hierarchies: t.Sequence[str], dropped: list[str],
                relative: str = "") -> t.Iterator[tuple[str, os.stat_result, str]]:
    """(path, lstat, content digest or link target + xattrs) of every included entry of a directory source."""
    for entry in sorted(os.scandir(os.path.join(top, relative) if relative else top), key=lambda item: item.name):
        path = "%s/%s" % (relative, entry.name) if relative else entry.name
        st = entry.stat(follow_symlinks=False)
        verdict = membership(path, hierarchies)
        if verdict == "forbidden":
            raise _forbidden(top)
        if verdict == "drop" or (verdict == "parent" and not stat.S_ISDIR(st.st_mode)):
            dropped.append(path + ("/" if stat.S_ISDIR(st.st_mode) else ""))
            continue
        if verdict == "include":
            yield path, st, _content_digest(entry.path, st)
        if stat.S_ISDIR(st.st_mode):
            yield from walk_source(top, hierarchies, dropped, path)


def _content_digest(path: str, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        content = "-> " + os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        content = _sha256_file(path)
    else:
        content = "rdev %d" % st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else ""
    xattrs = sorted((key, os.getxattr(path, key, follow_symlinks=False).hex())
                    for key in os.listxattr(path, follow_symlinks=False))
    return "%s %r" % (content, xattrs)


def existing_images(runner: Runner, request: BuildRequest) -> tuple[ExistingImage, ...]:
    merged = set(merged_names_now(request.root, ("/usr", "/opt") + request.hierarchies))
    found: list[ExistingImage] = []
    directory = "%s/%s" % (request.dest.rstrip("/"), request.name)
    raw = directory + ".raw"
    if os.path.isdir(directory) and not os.path.islink(directory):
        release = read_release(directory, request.name)[0] or {}
        found.append(ExistingImage(directory, "directory", release.get(DIGEST_KEY), request.name in merged))
    if os.path.isfile(raw) and not os.path.islink(raw):
        content = inspect_images(runner, [InspectJob(raw, request.name, "raw")], request.hierarchies)[raw][0]
        release = content.release or {}
        found.append(ExistingImage(raw, "raw", release.get(DIGEST_KEY), request.name in merged))
    return tuple(found)


def stale_staging(request: BuildRequest) -> tuple[str, ...]:
    prefix = staging_prefix(request.name)
    found: list[str] = []
    for parent in sorted({os.path.dirname(request.dest.rstrip("/")) or "/", request.dest}):
        try:
            found.extend(os.path.join(parent, entry) for entry in sorted(os.listdir(parent)) if entry.startswith(prefix))
        except FileNotFoundError:
            continue
    return tuple(found)


def build_warnings(request: BuildRequest, host: t.Mapping[str, str], release: t.Mapping[str, str]) -> list[str]:
    """An image that the root will not merge, or that a same-named image in a higher search directory hides."""
    found = []
    if host.get("ID"):
        problem = extension_release_problem(release, HostRelease.from_pairs(host), running_architecture())
        if problem:
            found.append("%s will not be merged on %s: it %s" % (request.name, request.root, problem))
    for search_dir in SEARCH_DIRS:
        directory = resolve_in_root(request.root, search_dir)
        if directory == request.dest.rstrip("/"):
            break
        for candidate in (os.path.join(directory, request.name), os.path.join(directory, request.name + ".raw")):
            if os.path.lexists(candidate):
                found.append("%s is masked by %s, which systemd-sysext finds first" % (request.name, candidate))
    return found


def observe_build(runner: Runner, request: BuildRequest) -> tuple[BuildObserved, SourceScan]:
    host = target_release_pairs(request.root)
    release = compose_release(default_release(host, running_architecture()), request.release)
    scan = scan_sources(runner, request)
    if not scan.files:
        raise ParameterError("sources", "nothing to build: no files under %s in %s" % (
            ", ".join(request.hierarchies), ", ".join(source.path for source in request.sources)))
    observed = BuildObserved(
        release=release,
        digest=digest(request, release, scan.digests),
        file_count=len(scan.files | {release_file_name(request.name)}),
        dropped=tuple(scan.dropped),
        existing=existing_images(runner, request),
        stale=stale_staging(request),
        warnings=tuple(build_warnings(request, host, release)),
    )
    return observed, scan


class Builder:
    """Carries out sysext_build actions in order; `done` lists what completed."""

    def __init__(self, runner: Runner, request: BuildRequest, observed: BuildObserved, scan: SourceScan) -> None:
        self.runner = runner
        self.request = request
        self.observed = observed
        self.scan = scan
        self.done: list[Action] = []
        self.staging: str | None = None
        self.built: str | None = None

    def run(self, actions: t.Sequence[Action]) -> None:
        os.makedirs(self.request.dest, mode=0o755, exist_ok=True)
        try:
            for action in actions:
                getattr(self, "_" + action.action)(action.target)
                self.done.append(action)
                step_boundary("sysext_build.%s" % action.action)
        finally:
            if self.staging:
                shutil.rmtree(self.staging)

    def _staged(self) -> str:
        if self.staging is None:
            raise SysextError("remove: no staging directory to move the old image into")
        return self.staging

    def _remove_stale(self, path: str) -> None:
        shutil.rmtree(path)

    def _build(self, target: str) -> None:
        self.staging = tempfile.mkdtemp(prefix=staging_prefix(self.request.name), dir=staging_parent(self.request.dest))
        os.chmod(self.staging, 0o755)
        tree = os.path.join(self.staging, "tree")
        os.mkdir(tree, 0o755)
        for number, source in enumerate(self.request.sources):
            if source.kind == "package":
                unpacked = os.path.join(self.staging, "source-%d" % number)
                os.mkdir(unpacked, 0o700)
                self.runner.run(["bsdtar", "-xpf", source.path, "-C", unpacked, "--numeric-owner", "--"]
                                + self.scan.patterns[source.path])
                merge_tree(unpacked, tree, "", self.request.hierarchies, move=True, origin=source.path)
            else:
                merge_tree(source.path, tree, "", self.request.hierarchies, move=False, origin=source.path)
        step_boundary("sysext_build.staged")
        epoch = _write_release(tree, self.request.name, with_digest(self.observed.release, self.observed.digest))
        if self.request.format == "directory":
            self.built = tree
        else:
            self.built = os.path.join(self.staging, "image")
            self._mkfs(tree, self.built, epoch)
        self._validate(self.built)

    def _mkfs(self, tree: str, image: str, epoch: int) -> None:
        compression, level = self.request.compression, self.request.compression_level
        if self.request.format == "squashfs":
            argv = ["mksquashfs", tree, image, "-all-root", "-noappend", "-quiet", "-no-progress",
                    "-mkfs-time", str(epoch)]
            argv += ["-noI", "-noD", "-noF", "-noX"] if compression == "none" else ["-comp", compression]
            argv += ["-Xcompression-level", str(level)] if level is not None else []
            self.runner.run(argv)
        else:
            # A fixed UUID and SOURCE_DATE_EPOCH make erofs images reproducible; file mtimes are kept.
            uuid = self.observed.digest.split(":")[-1]
            uuid = "%s-%s-%s-%s-%s" % (uuid[:8], uuid[8:12], uuid[12:16], uuid[16:20], uuid[20:32])
            argv = ["mkfs.erofs", "--quiet", "--all-root", "-U", uuid]
            if compression != "none":
                argv.append("-z%s%s" % (compression, ",%d" % level if level is not None else ""))
            self.runner.run(argv + [image, tree], environ={"SOURCE_DATE_EPOCH": str(epoch)})
        step_boundary("sysext_build.image_written")

    def _validate(self, image: str) -> None:
        expected = with_digest(self.observed.release, self.observed.digest)
        if self.request.format == "directory":
            content = inspect_tree(image, self.request.name, self.request.hierarchies)
        else:
            fstype, problem = probe_filesystem(self.runner, image)
            if fstype != self.request.format:
                raise SysextError("the built image is not %s: %s" % (self.request.format, problem or fstype))
            self.runner.run(["unsquashfs", "-s", image] if fstype == "squashfs" else ["fsck.erofs", image])
            content = inspect_images(self.runner, [InspectJob(image, self.request.name, "raw")],
                                     self.request.hierarchies)[image][0]
        if content.error or content.release != expected or content.os_release:
            raise SysextError("the built image does not check out: %s" % (
                content.error or ("usr/lib/os-release present" if content.os_release else
                                  "release data %r, expected %r" % (content.release, expected))))
        if self.request.format == "directory":
            _syncfs(image)
        else:
            with open(image, "rb") as handle:
                os.fsync(handle.fileno())
        step_boundary("sysext_build.validated")

    def _remove(self, path: str) -> None:
        # Out of the search directory in one rename first, so systemd-sysext never sees it half-deleted.
        aside = os.path.join(self._staged(), "old-" + os.path.basename(path))
        os.rename(path, aside)
        fsync_directory(os.path.dirname(path))

    def _install(self, target: str) -> None:
        built = self.built
        if built is None:
            raise SysextError("install: nothing was built")
        if os.path.isdir(target) and not os.path.islink(target):
            _exchange(built, target)
        else:
            os.rename(built, target)
        fsync_directory(os.path.dirname(target))


def merge_tree(src: str, dst: str, relative: str, hierarchies: t.Sequence[str], move: bool, origin: str) -> None:
    """Bring the hierarchy content of src into dst; a path two sources ship differently is an error."""
    for entry in sorted(os.scandir(os.path.join(src, relative) if relative else src), key=lambda item: item.name):
        path = "%s/%s" % (relative, entry.name) if relative else entry.name
        verdict: Membership = membership(path, hierarchies)
        st = entry.stat(follow_symlinks=False)
        if verdict in ("drop", "forbidden") or (verdict == "parent" and not stat.S_ISDIR(st.st_mode)):
            continue
        target = os.path.join(dst, path)
        if stat.S_ISDIR(st.st_mode):
            if not os.path.lexists(target):
                os.mkdir(target)
                _copy_metadata(entry.path, target, st)
            elif not os.path.isdir(target) or os.path.islink(target):
                raise SysextError("sources: %s ships %s as a directory, an earlier source does not" % (origin, path))
            merge_tree(src, dst, path, hierarchies, move, origin)
        elif os.path.lexists(target):
            if not _same_entry(entry.path, st, target):
                raise SysextError("sources: %s and an earlier source both ship %s, with different content or "
                                  "metadata" % (origin, path))
        elif move:
            os.rename(entry.path, target)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry.path), target)
            os.lchown(target, st.st_uid, st.st_gid)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(entry.path, target)
            _copy_metadata(entry.path, target, st)
        else:
            os.mknod(target, st.st_mode, st.st_rdev)
            _copy_metadata(entry.path, target, st)


def _copy_metadata(source: str, target: str, st: os.stat_result) -> None:
    # chown clears setuid/setgid bits, so the mode comes after it.
    os.lchown(target, st.st_uid, st.st_gid)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    for key in os.listxattr(source, follow_symlinks=False):
        os.setxattr(target, key, os.getxattr(source, key, follow_symlinks=False), follow_symlinks=False)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _same_entry(path: str, st: os.stat_result, other: str) -> bool:
    other_st = os.lstat(other)
    if (st.st_mode, st.st_uid, st.st_gid) != (other_st.st_mode, other_st.st_uid, other_st.st_gid):
        return False
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path) == os.readlink(other)
    if stat.S_ISREG(st.st_mode):
        return st.st_size == other_st.st_size and _sha256_file(path) == _sha256_file(other)
    return st.st_rdev == other_st.st_rdev


def _write_release(tree: str, name: str, release: t.Mapping[str, str]) -> int:
    """Write the release file; give every directory and the release file one timestamp; return it.

    The timestamp is the newest file's mtime from the sources, so the same inputs give the same image,
    while files keep their own mtimes (Python's .pyc files check them).
    """
    newest = 0
    for current, _directories, files in os.walk(tree):
        for file_name in files:
            newest = max(newest, int(os.lstat(os.path.join(current, file_name)).st_mtime))
    release_dir = os.path.join(tree, "usr/lib/extension-release.d")
    os.makedirs(release_dir, mode=0o755, exist_ok=True)
    path = os.path.join(release_dir, "extension-release." + name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_release(release))
    os.chmod(path, 0o644)
    for current, directories, _files in os.walk(tree, topdown=False):
        for directory in directories:
            os.utime(os.path.join(current, directory), (newest, newest), follow_symlinks=False)
    os.utime(path, (newest, newest))
    os.utime(tree, (newest, newest))
    return newest


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc().syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, "syncfs(%s): %s" % (path, os.strerror(code)))
    finally:
        os.close(fd)


def _exchange(new: str, target: str) -> None:
    """Swap a directory image in atomically (renameat2 RENAME_EXCHANGE); the old one ends up at new."""
    result = _libc().renameat2(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(target), RENAME_EXCHANGE)
    if result == 0:
        return
    code = ctypes.get_errno()
    if code not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(code, "renameat2(%s, %s, RENAME_EXCHANGE): %s" % (new, target, os.strerror(code)))
    # No RENAME_EXCHANGE on this filesystem: a short moment without the image, never a mixed one.
    aside = new + ".old"
    os.rename(target, aside)
    os.rename(new, target)
    os.rename(aside, new)
