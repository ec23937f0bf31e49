# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build: building an image in a staging directory and swapping it into place."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._core.durable import fsync_directory
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.fs import AT_FDCWD, FLAG_UNSUPPORTED, exchange, syncfs_path
from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import render_release
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_model import (
    BuildObserved, BuildRequest, Membership,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_observe import (
    SourceScan, extract_members, same_content, staging_parent, staging_prefix,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_plan import (
    RELEASE_PARENTS, membership, release_parent_problem, special_file_warning, with_digest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import (
    InspectJob, inspect_images, inspect_tree, probe_filesystem,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import RELEASE_DIR, SysextError


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
        self.warnings: list[str] = []  # setuid/setgid files and device nodes found in unpacked packages

    def run(self, actions: t.Sequence[Action]) -> None:
        created = not os.path.lexists(self.request.dest)
        os.makedirs(self.request.dest, mode=0o755, exist_ok=True)
        try:
            for action in actions:
                getattr(self, "_" + action.action)(action.target)
                self.done.append(action)
                step_boundary("sysext_build.%s" % action.action)
        finally:
            if self.staging:
                shutil.rmtree(self.staging)
            if created and not self.done and not os.listdir(self.request.dest):
                # A build that failed before its first step leaves no trace, not even the dest it made.
                os.rmdir(self.request.dest)

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
                extract_members(self.runner, source.path, unpacked, self.scan.patterns[source.path],
                                self.scan.members[source.path])
                merge_tree(unpacked, tree, "", self.request.hierarchies, move=True, origin=source.path,
                           warnings=self.warnings)
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
        # Owners are kept as the directory format keeps them: -all-root (and erofs' --all-root) would turn a
        # setuid file of uid 1000 into a setuid-root one.
        compression, level = self.request.compression, self.request.compression_level
        if self.request.format == "squashfs":
            argv = ["mksquashfs", tree, image, "-noappend", "-quiet", "-no-progress",
                    "-mkfs-time", str(epoch)]
            argv += ["-noI", "-noD", "-noF", "-noX"] if compression == "none" else ["-comp", compression]
            argv += ["-Xcompression-level", str(level)] if level is not None else []
            self.runner.run(argv)
        else:
            # A fixed UUID and SOURCE_DATE_EPOCH make erofs images reproducible; file mtimes are kept.
            uuid = self.observed.digest.split(":")[-1]
            uuid = "%s-%s-%s-%s-%s" % (uuid[:8], uuid[8:12], uuid[12:16], uuid[16:20], uuid[20:32])
            argv = ["mkfs.erofs", "--quiet", "-U", uuid]
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
            syncfs_path(image)
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


def merge_tree(src: str, dst: str, relative: str, hierarchies: t.Sequence[str], move: bool, origin: str,
               warnings: list[str] | None = None) -> None:
    """Bring the hierarchy content of src into dst; a path two sources ship differently is an error.

    warnings, when given, collects a warning for each setuid/setgid file and device node."""
    for entry in sorted(os.scandir(os.path.join(src, relative) if relative else src), key=lambda item: item.name):
        path = "%s/%s" % (relative, entry.name) if relative else entry.name
        verdict: Membership = membership(path, hierarchies)
        st = entry.stat(follow_symlinks=False)
        if verdict in ("drop", "forbidden") or (verdict == "parent" and not stat.S_ISDIR(st.st_mode)):
            continue
        if path in RELEASE_PARENTS and not stat.S_ISDIR(st.st_mode):
            raise SysextError(release_parent_problem(origin, path))
        warning = special_file_warning(origin, path, st.st_mode) if warnings is not None else None
        if warning and warnings is not None:
            warnings.append(warning)
        target = os.path.join(dst, path)
        if stat.S_ISDIR(st.st_mode):
            if not os.path.lexists(target):
                os.mkdir(target)
                _copy_metadata(entry.path, target, st)
            elif not os.path.isdir(target) or os.path.islink(target):
                raise SysextError("sources: %s ships %s as a directory, an earlier source does not" % (origin, path))
            merge_tree(src, dst, path, hierarchies, move, origin, warnings)
        elif os.path.lexists(target):
            if not same_content(entry.path, st, target):
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


def _write_release(tree: str, name: str, release: t.Mapping[str, str]) -> int:
    """Write the release file; give every directory and the release file one timestamp; return it.

    The timestamp is the newest file's mtime from the sources, so the same inputs give the same image,
    while files keep their own mtimes (Python's .pyc files check them).
    """
    newest = 0
    for current, _directories, files in os.walk(tree):
        for file_name in files:
            newest = max(newest, int(os.lstat(os.path.join(current, file_name)).st_mtime))
    release_dir = os.path.join(tree, RELEASE_DIR)
    path = os.path.join(release_dir, "extension-release." + name)
    release_fd = _open_release_dir(tree)
    try:
        fd = os.open("extension-release." + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=release_fd)
    finally:
        os.close(release_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_release(release))
        os.fchmod(handle.fileno(), 0o644)
    for current, directories, _files in os.walk(tree, topdown=False):
        for directory in directories:
            os.utime(os.path.join(current, directory), (newest, newest), follow_symlinks=False)
    os.utime(path, (newest, newest))
    os.utime(tree, (newest, newest))
    return newest


def _open_release_dir(tree: str) -> int:
    """A descriptor of tree/usr/lib/extension-release.d, made one component at a time without following a
    symlink: a source that shipped one of them as a link must never make this write land outside the tree."""
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in RELEASE_DIR.split("/"):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise SysextError("the staged tree's %s is not a directory (%s): refusing to write the release file "
                                  "through it" % (part, exc.strerror))
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _exchange(new: str, target: str) -> None:
    """Swap a directory image in atomically (renameat2 RENAME_EXCHANGE); the old one ends up at new."""
    try:
        exchange(AT_FDCWD, new, AT_FDCWD, target)
        return
    except OSError as exc:
        if exc.errno not in FLAG_UNSUPPORTED:
            raise
    # No RENAME_EXCHANGE on this filesystem: a short moment without the image, never a mixed one.
    aside = new + ".old"
    os.rename(target, aside)
    os.rename(new, target)
    os.rename(aside, new)
