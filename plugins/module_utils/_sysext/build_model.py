# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_build: the request and the observed state."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

Format = t.Literal["directory", "squashfs", "erofs"]
Membership = t.Literal["include", "parent", "drop", "forbidden"]

# Bump when the same inputs would build a different image, so existing images are rebuilt.
BUILDER_VERSION = 1
DIGEST_KEY = "IMMUTABLE_ROOT_SYSEXT_DIGEST"
FORBIDDEN = "usr/lib/os-release"
DROPPED_LIMIT = 1000

PACKAGE_SUFFIXES = (".pkg.tar.zst", ".pkg.tar.xz", ".pkg.tar.gz", ".pkg.tar.bz2", ".pkg.tar")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.bz2", ".tbz2")

COMPRESSION = {
    "squashfs": ("zstd", ("gzip", "xz", "zstd", "lz4", "lzo", "none")),
    "erofs": ("lz4hc", ("lz4", "lz4hc", "none")),
    "directory": ("none", ("none",)),
}
# (format, compression) -> (lowest, highest, default level; None keeps the tool's default). mksquashfs's own
# zstd default, level 15, took 17 times as long as level 3 on 50 MB of package content (the whole build about
# 5 times, bench/sysext.py) for an image about 10% smaller.
COMPRESSION_LEVELS = {
    ("squashfs", "zstd"): (1, 22, 3),
    ("squashfs", "gzip"): (1, 9, None),
    ("erofs", "lz4hc"): (0, 12, None),
}

# os-release(5) fields plus the ones systemd reads from extension-release files; anything else is a typo.
RELEASE_KEYS = frozenset((
    "ID", "VERSION_ID", "SYSEXT_LEVEL", "ARCHITECTURE", "SYSEXT_SCOPE", "SYSEXT_ID", "SYSEXT_VERSION_ID",
    "SYSEXT_PRETTY_NAME", "EXTENSION_RELOAD_MANAGER", "PORTABLE_PREFIXES", "NAME", "PRETTY_NAME", "VERSION",
    "VERSION_CODENAME", "BUILD_ID", "IMAGE_ID", "IMAGE_VERSION", "VARIANT", "VARIANT_ID", "HOME_URL",
    "DOCUMENTATION_URL", "SUPPORT_URL", "BUG_REPORT_URL", "CPE_NAME",
))


@dataclass(frozen=True)
class Source:
    path: str
    kind: t.Literal["package", "directory"]


@dataclass(frozen=True)
class BuildRequest:
    name: str
    root: str
    dest: str
    format: Format
    sources: tuple[Source, ...]
    hierarchies: tuple[str, ...]
    release: t.Mapping[str, str | None]  # the user's fields; None removes a default
    compression: str
    compression_level: int | None = None


@dataclass(frozen=True)
class ExistingImage:
    path: str
    format: str  # directory or raw
    digest: str | None
    merged: bool = False


@dataclass(frozen=True)
class BuildObserved:
    release: t.Mapping[str, str]  # what the release file will say, without the digest
    digest: str
    file_count: int  # non-directory entries the image will hold, the release file included
    dropped: tuple[str, ...]
    existing: tuple[ExistingImage, ...]  # images named like this one in dest (NAME and NAME.raw)
    stale: tuple[str, ...] = ()  # staging directories left by an interrupted run
    warnings: tuple[str, ...] = ()
