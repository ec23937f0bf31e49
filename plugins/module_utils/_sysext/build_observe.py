# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build: reading sources, the target root and existing images."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import CommandError, ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import resolve_in_root
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.elf import HEADER_BYTES, elf_architecture
from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import OS_RELEASE_PATHS
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_model import (
    BuildObserved, BuildRequest, DIGEST_KEY, ExistingImage,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_plan import (
    RELEASE_PARENTS, bsdtar_refusals, compose_release, default_release, digest, hardlink_targets, member_pattern,
    membership, normalize_member, refusal_problem, release_parent_problem, special_file_warning,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import SEARCH_DIRS
from ansible_collections.immutable.root.plugins.module_utils._sysext.inspect import (
    InspectJob, inspect_images, read_release, release_file_name,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_observe import (
    merged_names_now, running_architecture,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    HostRelease, ReleaseSyntaxError, SysextError, extension_release_problem, parse_env_pairs, read_release_bytes,
)

STAGING_PREFIX = ".#sysext-build."


def staging_prefix(name: str) -> str:
    return "%s%s." % (STAGING_PREFIX, name)


def staging_parent(dest: str) -> str:
    """Beside dest when that is the same filesystem (rename must not cross one), else inside it."""
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    return parent if os.stat(parent).st_dev == os.stat(dest).st_dev else dest


def sha256_file(path: str) -> str:
    digest_ = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest_.update(block)
    return digest_.hexdigest()


# Binaries every root has; the first that is an ELF file tells the architecture the root is built for.
ARCHITECTURE_PROBES = ("usr/bin/sh", "bin/sh", "usr/bin/env", "usr/lib/systemd/systemd")


def root_architecture(root: str) -> str:
    """The architecture of the root's binaries (a root prepared for another machine is not the controller's
    or this host's), falling back to this machine's when the root has none of the probes."""
    for relative in ARCHITECTURE_PROBES:
        try:
            with open(resolve_in_root(root, relative), "rb") as handle:
                architecture = elf_architecture(handle.read(HEADER_BYTES))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        if architecture:
            return architecture
    return running_architecture()


def target_release_pairs(root: str) -> dict[str, str]:
    for relative in OS_RELEASE_PATHS:
        path = resolve_in_root(root, relative)
        try:
            return parse_env_pairs(read_release_bytes(path), path)
        except FileNotFoundError:
            continue
        except ReleaseSyntaxError as exc:
            raise SysextError("root: %s" % exc.msg)
        except OSError as exc:
            raise SysextError("root: %s cannot be read: %s" % (path, exc.strerror))
    return {}


class SourceScan(t.NamedTuple):
    digests: list[str]
    files: set[str]  # relative paths of the non-directory entries the image will hold
    dropped: list[str]
    patterns: dict[str, list[str]]  # package path -> bsdtar patterns that select its included members
    owners: dict[str, list[tuple[str, str]]]  # relative path -> (source, member name) of every source shipping it
    warnings: list[str]  # setuid/setgid files and device nodes of directory sources
    members: dict[str, list[str]]  # package path -> its members, as bsdtar lists them
    hardlinks: dict[str, dict[str, str]]  # package path -> {member: the member it is a hard link to}, as listed


def list_package(runner: Runner, path: str) -> tuple[list[str], dict[str, str]]:
    """The members of a package as bsdtar lists them, and the hard link targets among them."""
    try:
        names = runner.run(["bsdtar", "-tf", path]).stdout.splitlines()
        verbose = runner.run(["bsdtar", "-tv", "--numeric-owner", "-f", path]).stdout.splitlines()
    except CommandError as exc:
        raise ParameterError("sources", "%s cannot be read as a package or tarball: %s" % (path, exc.msg))
    return names, hardlink_targets(names, verbose)


def extract_members(runner: Runner, source: str, into: str, patterns: t.Sequence[str],
                    members: t.Iterable[str]) -> None:
    """Unpack the members of source that patterns select into the directory into; a member bsdtar refuses (a
    path through a symlink, a '..', a hard link to a member that is not there) fails naming it and the reason."""
    try:
        runner.run(["bsdtar", "-xpf", source, "-C", into, "--numeric-owner", "--"] + list(patterns))
    except CommandError as exc:
        refusals = bsdtar_refusals(exc.stderr, members)
        problem = (refusal_problem(source, refusals) if refusals else "%s cannot be unpacked: %s" % (source, exc.msg))
        raise SysextError("sources: " + problem, cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout,
                          stderr=exc.stderr) from exc


def _forbidden(source: str) -> ParameterError:
    return ParameterError("sources", "%s ships usr/lib/os-release; an extension must not carry it (systemd-sysext "
                                     "refuses such images and fails the whole merge)" % source)


def scan_sources(runner: Runner, request: BuildRequest) -> SourceScan:
    scan = SourceScan([], set(), [], {}, {}, [], {}, {})
    for source in request.sources:
        if source.kind == "package":
            patterns: set[str] = set()
            members, hardlinks = list_package(runner, source.path)
            scan.members[source.path] = members
            scan.hardlinks[source.path] = hardlinks
            listed = _listed_by_path(source.path, members)
            for member in members:
                relative = _member_path(source.path, member)
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
                    if member in hardlinks:
                        patterns.update(_outside_link_targets(source.path, member, hardlinks, listed, request))
                    prefix = member[:len(member) - len(member.lstrip("./"))]
                    patterns.add(prefix + member_pattern(_hierarchy_of(relative, request.hierarchies)))
            scan.patterns[source.path] = sorted(patterns)
            scan.digests.append(sha256_file(source.path))
        else:
            tree = hashlib.sha256()
            for relative, st, extra in walk_source(source.path, request.hierarchies, scan.dropped):
                tree.update(("%s\0%o\0%d\0%d\0%s\0" % (relative, st.st_mode, st.st_uid, st.st_gid, extra)).encode(
                    "utf-8", "surrogateescape"))
                warning = special_file_warning(source.path, relative, st.st_mode)
                if warning:
                    scan.warnings.append(warning)
                if not stat.S_ISDIR(st.st_mode):
                    scan.files.add(relative)
                    scan.owners.setdefault(relative, []).append((source.path, relative))
            scan.digests.append(tree.hexdigest())
    check_conflicts(runner, scan.owners, scan.hardlinks)
    return scan


def _member_path(source: str, member: str) -> str:
    try:
        return normalize_member(member)
    except SysextError as exc:
        raise ParameterError("sources", "%s: %s" % (source, exc.msg.partition(": ")[2])) from exc


def _listed_by_path(source: str, members: t.Sequence[str]) -> dict[str, list[str]]:
    """relative path -> the member names that unpack to it (./usr/x and usr/x are one path)."""
    listed: dict[str, list[str]] = {}
    for member in members:
        listed.setdefault(_member_path(source, member), []).append(member)
    return listed


def _outside_link_targets(source: str, member: str, hardlinks: t.Mapping[str, str],
                          listed: t.Mapping[str, t.Sequence[str]], request: BuildRequest) -> list[str]:
    """Patterns for the member a kept hard link points to when the image drops that member: bsdtar can only
    make the link with its target unpacked, and the link then keeps the target's content once it is dropped."""
    target = hardlinks[member]
    try:
        relative = normalize_member(target)
    except SysextError as exc:
        raise ParameterError("sources", "%s ships %s as a hard link to %s, which climbs out with '..'"
                             % (source, member, target)) from exc
    if relative not in listed:
        raise ParameterError("sources", "%s ships %s as a hard link to %s, a member it does not ship"
                             % (source, member, target))
    if membership(relative, request.hierarchies) == "include":
        return []
    return [member_pattern(name) for name in listed[relative]]


def _with_link_targets(members: t.Iterable[str], hardlinks: t.Mapping[str, str]) -> list[str]:
    """members and, transitively, the members they are hard links to (bsdtar needs those unpacked first)."""
    found: list[str] = []
    pending = list(members)
    while pending:
        member = pending.pop()
        if member not in found:
            found.append(member)
            if member in hardlinks:
                pending.append(hardlinks[member])
    return found


def check_conflicts(runner: Runner, owners: t.Mapping[str, t.Sequence[tuple[str, str]]],
                    hardlinks: t.Mapping[str, t.Mapping[str, str]]) -> None:
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
            needed = _with_link_targets(members, hardlinks.get(source, {}))
            extract_members(runner, source, unpacked, [member_pattern(member) for member in needed], needed)
            located.update(((source, member), os.path.join(unpacked, normalize_member(member))) for member in members)
        for path, sources in sorted(shared.items()):
            first = located[sources[0]]
            for other in sources[1:]:
                if not same_content(first, os.lstat(first), located[other]):
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
        if path in RELEASE_PARENTS and not stat.S_ISDIR(st.st_mode):
            raise ParameterError("sources", release_parent_problem(top, path))
        if verdict == "include":
            yield path, st, _content_digest(entry.path, st)
        if stat.S_ISDIR(st.st_mode):
            yield from walk_source(top, hierarchies, dropped, path)


def _content_digest(path: str, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        content = "-> " + os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        content = sha256_file(path)
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
        problem = extension_release_problem(release, HostRelease.from_pairs(host), root_architecture(request.root))
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
    release = compose_release(default_release(host, root_architecture(request.root)), request.release)
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
        warnings=tuple(build_warnings(request, host, release) + scan.warnings),
    )
    return observed, scan


def same_content(path: str, st: os.stat_result, other: str) -> bool:
    other_st = os.lstat(other)
    if (st.st_mode, st.st_uid, st.st_gid) != (other_st.st_mode, other_st.st_uid, other_st.st_gid):
        return False
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path) == os.readlink(other)
    if stat.S_ISREG(st.st_mode):
        return st.st_size == other_st.st_size and sha256_file(path) == sha256_file(other)
    return st.st_rdev == other_st.st_rdev
