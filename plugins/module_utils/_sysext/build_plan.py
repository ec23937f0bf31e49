# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build: validating parameters, composing release data, and the pure planner."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_model import (
    BUILDER_VERSION, BuildObserved, BuildRequest, COMPRESSION, COMPRESSION_LEVELS, DIGEST_KEY, FORBIDDEN, Membership,
    PACKAGE_SUFFIXES, RELEASE_KEYS, TARBALL_SUFFIXES,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    ARCHITECTURES, RELEASE_DIR, SCOPES, SysextError, module_name_problem,
)

_ID_VALUE = re.compile(r"^(_any|[a-z0-9._-]+)$")
_KEY_ORDER = ("ID", "VERSION_ID", "SYSEXT_LEVEL", "ARCHITECTURE", "SYSEXT_SCOPE")


def source_kind(path: str, is_dir: bool, is_file: bool) -> t.Literal["package", "directory"]:
    if is_dir:
        return "directory"
    if is_file and path.endswith(PACKAGE_SUFFIXES + TARBALL_SUFFIXES):
        return "package"
    raise ParameterError("sources", "%s is neither a package or tarball (%s) nor a directory"
                         % (path, ", ".join(PACKAGE_SUFFIXES[:2] + TARBALL_SUFFIXES[:3])))


def validate_name(name: str) -> str:
    problem = module_name_problem(name)
    if problem:
        raise ParameterError("name", problem)
    return name


def validate_compression(image_format: str, compression: str | None) -> str:
    default, allowed = COMPRESSION[image_format]
    if compression is None:
        return default
    if compression not in allowed:
        raise ParameterError("compression", "%r is not available for format %s; choose one of %s"
                             % (compression, image_format, ", ".join(allowed)))
    return compression


def validate_compression_level(image_format: str, compression: str, level: int | None) -> int | None:
    bounds = COMPRESSION_LEVELS.get((image_format, compression))
    if bounds is None:
        if level is not None:
            raise ParameterError("compression_level", "%s with %s compression takes no level; levels exist for %s"
                                 % (image_format, compression, ", ".join("%s %s" % key for key in COMPRESSION_LEVELS)))
        return None
    lowest, highest, default = bounds
    if level is None:
        return default
    if not lowest <= level <= highest:
        raise ParameterError("compression_level", "%d is out of range for %s %s (%d to %d)"
                             % (level, image_format, compression, lowest, highest))
    return level


def validate_release(fields: t.Mapping[str, t.Any]) -> dict[str, str | None]:
    """The user's release fields, checked: known keys, one-line values, values systemd can match."""
    checked: dict[str, str | None] = {}
    for key, value in fields.items():
        if key == DIGEST_KEY:
            raise ParameterError("release", "%s is written by this module" % DIGEST_KEY)
        if key not in RELEASE_KEYS:
            raise ParameterError("release", "unknown key %r; known keys: %s" % (key, ", ".join(sorted(RELEASE_KEYS))))
        if value is None:
            checked[key] = None
            continue
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ParameterError("release", "%s must be a string, got %r" % (key, value))
        text = str(value)
        if any(char in text for char in "\n\r\0"):
            raise ParameterError("release", "%s must be a single line" % key)
        if key == "ID" and not _ID_VALUE.match(text):
            raise ParameterError("release", "ID=%r: use lower-case a-z, 0-9, '.', '_', '-' or '_any'" % text)
        if key == "ARCHITECTURE" and text not in ARCHITECTURES and text != "_any":
            raise ParameterError("release", "ARCHITECTURE=%r is not a systemd architecture name (e.g. x86-64, arm64, "
                                            "_any)" % text)
        if key == "SYSEXT_SCOPE" and (not text.split() or any(word not in SCOPES for word in text.split())):
            raise ParameterError("release", "SYSEXT_SCOPE=%r: use words from %s" % (text, ", ".join(SCOPES)))
        checked[key] = text
    return checked


def default_release(host: t.Mapping[str, str], architecture: str) -> dict[str, str]:
    """The fields that make the image match the target: ID, SYSEXT_LEVEL (or VERSION_ID), ARCHITECTURE.

    SYSEXT_LEVEL is preferred when the target has one, because then an OS update that keeps the level
    keeps the image compatible; a rolling release (no VERSION_ID) needs the ID only.
    """
    fields = {"ID": host.get("ID", "")}
    if host.get("SYSEXT_LEVEL"):
        fields["SYSEXT_LEVEL"] = host["SYSEXT_LEVEL"]
    elif host.get("VERSION_ID"):
        fields["VERSION_ID"] = host["VERSION_ID"]
    fields["ARCHITECTURE"] = architecture
    return fields


def compose_release(defaults: t.Mapping[str, str], user: t.Mapping[str, str | None]) -> dict[str, str]:
    merged: dict[str, str | None] = dict(defaults)
    merged.update(user)
    present = {key: value for key, value in merged.items() if value is not None}
    if not present.get("ID"):
        raise ParameterError("release", "no ID: the target has no os-release ID; set release.ID (or '_any')")
    ordered = {key: present[key] for key in _KEY_ORDER if key in present}
    ordered.update((key, present[key]) for key in sorted(present) if key not in ordered)
    return ordered


def with_digest(release: t.Mapping[str, str], digest: str) -> dict[str, str]:
    result = dict(release)
    result[DIGEST_KEY] = digest
    return result


def normalize_member(name: str) -> str:
    """An archive member name as a relative path: no leading './' or '/', no trailing '/'."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise SysextError("sources: member %r climbs out of the image with '..'" % name)
    return "/".join(parts)


# bsdtar lists a byte it cannot print as a C escape (a backslash as two) or, failing that, as three octal digits
# (under LANG=C every byte above 0x7f); a pattern does not read those escapes, so they are undone first.
_LISTING_ESCAPE = re.compile(rb"\\([0-7]{3}|[abfnrtv\\])")
_C_ESCAPES = {b"a": b"\a", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v", b"\\": b"\\"}


def member_pattern(listed: str) -> str:
    """A bsdtar pattern matching exactly the member bsdtar lists as listed (and, for a directory, what is under it).

    Bytes that are not UTF-8 come back as surrogate escapes, which the command line turns into those bytes again."""
    raw = _LISTING_ESCAPE.sub(lambda escape: _C_ESCAPES.get(escape.group(1)) or bytes([int(escape.group(1), 8)]),
                              listed.encode("utf-8", "surrogateescape"))
    return re.sub(r"([*?\[\\])", r"\\\1", raw.decode("utf-8", "surrogateescape"))


def hardlink_targets(names: t.Sequence[str], verbose: t.Sequence[str]) -> dict[str, str]:
    """member -> hard link target, as listed, from `bsdtar -tf` and `bsdtar -tvf` of one archive.

    The two listings have a line per member, in the same order and with the same escaping; a verbose hard link
    line ends with "NAME link to TARGET", and names may themselves contain " link to "."""
    if len(names) != len(verbose):
        raise SysextError("sources: bsdtar listed %d members, but %d in its verbose listing" % (
            len(names), len(verbose)))
    targets: dict[str, str] = {}
    for name, line in zip(names, verbose):
        if not line.startswith("h"):
            continue
        # The fields before the name (mode, link count, numeric owner, size, date) never hold " link to ", so
        # the first match is the name's own even when the target repeats " NAME link to ".
        marker = " %s link to " % name
        start = line.find(marker)
        if start < 0:
            raise SysextError("sources: cannot read the hard link target of %r from bsdtar's listing %r" % (name, line))
        targets[name] = line[start + len(marker):]
    return targets


# strerror() of errno 0 or -1, which bsdtar appends to refusals that carry no errno.
_NO_ERRNO = re.compile(r": (Success|Unknown error -?[0-9]+)$")


def bsdtar_refusals(stderr: str, members: t.Iterable[str]) -> list[tuple[str, str]]:
    """(member, reason) for each "MEMBER: REASON" line of bsdtar's stderr; bsdtar's own "bsdtar: ..." lines
    are not member refusals. members (as listed) resolve a name that itself contains ": "."""
    known = sorted({name for member in members for name in (member, member.lstrip("/"))}, key=len, reverse=True)
    refusals = []
    for line in stderr.splitlines():
        member = next((name for name in known if line.startswith(name + ": ")), None)
        if member is None:
            if line.startswith("bsdtar: ") or ": " not in line:
                continue
            member = line.partition(": ")[0]
        refusals.append((member, _NO_ERRNO.sub("", line[len(member) + 2:]).strip()))
    return refusals


def refusal_problem(source: str, refusals: t.Sequence[tuple[str, str]], limit: int = 10) -> str:
    shown = "; ".join("%s (%s)" % (member, reason) for member, reason in refusals[:limit])
    more = "; and %d more" % (len(refusals) - limit) if len(refusals) > limit else ""
    return "bsdtar refused to unpack %s of %s: %s%s" % (
        "a member" if len(refusals) == 1 else "%d members" % len(refusals), source, shown, more)


# The directories the module writes the release file into: a source must ship them as directories (a symlink
# there would carry that write out of the image).
RELEASE_PARENTS = tuple("/".join(RELEASE_DIR.split("/")[:depth]) for depth in range(1, RELEASE_DIR.count("/") + 2))


def release_parent_problem(source: str, path: str) -> str:
    return ("%s ships %s as something other than a directory (a symlink?); the release file is written into %s, "
            "so it must be a real directory" % (source, path, RELEASE_DIR))


def special_file_warning(source: str, path: str, mode: int) -> str | None:
    """A warning for a setuid/setgid file or a device node an image would carry; None for an ordinary entry."""
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "%s ships a device node %s: the image will carry it" % (source, path)
    if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
        return "%s ships %s with the %s bit set: the image keeps its owner and mode" % (
            source, path, "setuid" if mode & stat.S_ISUID else "setgid")
    return None


def membership(path: str, hierarchies: t.Sequence[str]) -> Membership:
    """Whether a relative path goes into the image, is only a parent directory of a hierarchy, or is dropped."""
    if path.startswith(RELEASE_DIR + "/"):
        return "drop"  # this module writes the image's release file itself
    for hierarchy in hierarchies:
        relative = hierarchy.strip("/")
        if path == relative or path.startswith(relative + "/"):
            return "forbidden" if path == FORBIDDEN else "include"
    if any(hierarchy.strip("/").startswith(path + "/") for hierarchy in hierarchies):
        return "parent"
    return "drop"


def digest(request: BuildRequest, release: t.Mapping[str, str], source_digests: t.Sequence[str]) -> str:
    """sha256 over everything that decides the image's content; recorded in its release file."""
    canonical = json.dumps({
        "builder": BUILDER_VERSION,
        "name": request.name,
        "format": request.format,
        "compression": request.compression,
        "compression_level": request.compression_level,
        "hierarchies": list(request.hierarchies),
        "release": dict(release),
        "sources": [[source.kind, value] for source, value in zip(request.sources, source_digests)],
    }, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def image_path(request: BuildRequest) -> str:
    suffix = "" if request.format == "directory" else ".raw"
    return "%s/%s%s" % (request.dest.rstrip("/"), request.name, suffix)


def plan_build(request: BuildRequest, observed: BuildObserved) -> tuple[Action, ...]:
    """Nothing when the image in place was built from the same inputs; else build, then install over it."""
    target = image_path(request)
    current = [image for image in observed.existing if image.path == target]
    others = [image for image in observed.existing if image.path != target]
    stale = [Action("remove_stale", path, "staging directory of an interrupted build") for path in observed.stale]
    if current and current[0].digest == observed.digest and not others:
        return tuple(stale)
    for image in observed.existing:
        if image.format == "directory" and image.merged:
            raise SysextError("name: the directory image %s is merged right now; replacing or removing it would pull "
                              "files from under the running overlay. Unmerge first (sysext_merge state=unmerged), or "
                              "build a raw format (squashfs, erofs), which can be replaced while merged" % image.path)
    actions = stale + [Action("build", target, "%s, %d files from %d sources (%s)" % (
        request.format, observed.file_count, len(request.sources), observed.digest))]
    actions.extend(Action("remove", image.path, "same name, other format") for image in others)
    actions.append(Action("install", target, "replaces the image built from %s" % current[0].digest
                          if current and current[0].digest else "replaces an image of unknown origin"
                          if current else "new image"))
    return tuple(actions)
