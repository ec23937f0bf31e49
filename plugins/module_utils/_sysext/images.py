# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext: which images systemd-sysext would see and merge, decided from typed observations (pure)."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.immutable.root.plugins.module_utils._sysext.image_policy import ImagePolicy
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    HostRelease, extension_release_problem, module_name_problem, systemd_image_name_is_valid, version_sorted,
)

# Highest priority first (image_search_path[IMAGE_EXTENSION], 252).
SEARCH_DIRS = ("/etc/extensions", "/run/extensions", "/var/lib/extensions", "/usr/local/lib/extensions",
               "/usr/lib/extensions")

Kind = t.Literal["directory", "raw", "block", "symlink", "other"]
Verdict = t.Literal["compatible", "incompatible", "masked", "ignored", "invalid"]

SYMLINK_REASON = ("is a symlink: systemd-sysext does not follow symlinks in its search directories when given "
                  "--root, which this module always passes (at boot, systemd-sysext.service runs without --root "
                  "and would follow it); copy or bind-mount the image instead")


@dataclass(frozen=True)
class SearchEntry:
    """One directory entry in a search directory, classified by lstat()."""

    search_dir: str  # "/var/lib/extensions", as inside the root
    file_name: str
    path: str  # absolute path on the managed node
    kind: Kind

    @property
    def name(self) -> str:
        """The image name: a raw image's file name without .raw."""
        if self.kind in ("raw", "symlink") and self.file_name.endswith(".raw"):
            return self.file_name[:-4]
        return self.file_name

    @property
    def image_type(self) -> str:
        return {"directory": "directory", "raw": "raw", "block": "block"}.get(self.kind, self.kind)


@dataclass(frozen=True)
class ImageContent:
    """What is inside an image, read the way systemd reads it (see _sysext_inspect)."""

    error: str | None = None  # the image could not be read at all (raw: no filesystem, mount failed)
    fstype: str | None = None  # raw images: the filesystem blkid found
    release: dict[str, str] | None = None  # None: no extension-release data found
    release_path: str | None = None  # the file it came from, relative to the image
    release_problem: str | None = None  # why no release data was found (a note, or systemd's error)
    os_release: bool = False  # usr/lib/os-release exists: validate_version() refuses the image
    os_tree: bool = False  # etc/os-release or usr/lib/os-release: a raw image passes dissection with it
    hierarchies: tuple[str, ...] = ()  # requested hierarchies that have content in the image
    not_directories: tuple[str, ...] = ()  # requested hierarchies that exist in the image as something else


@dataclass(frozen=True)
class ImageVerdict:
    entry: SearchEntry
    verdict: Verdict
    reason: str | None = None
    content: ImageContent | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def compatible(self) -> bool:
        return self.verdict == "compatible"

    @property
    def blocking(self) -> bool:
        """systemd-sysext would fail the whole merge on it (or the module cannot predict the result)."""
        return self.verdict == "invalid"


def visible_entries(entries: t.Sequence[SearchEntry]) -> list[SearchEntry]:
    """The entries systemd-sysext discovers, before masking: directories, raw images and block devices."""
    return [entry for entry in entries if entry.kind in ("directory", "raw", "block")
            and systemd_image_name_is_valid(entry.name)]


def _ignored(entry: SearchEntry) -> ImageVerdict | None:
    if entry.kind == "symlink":
        return ImageVerdict(entry, "ignored", SYMLINK_REASON)
    if entry.kind == "other" or entry.name.startswith(".#"):
        # A README, or a temporary name of systemd's or sysext_build's: systemd-sysext skips these silently.
        return None
    return ImageVerdict(entry, "ignored", "systemd-sysext ignores it: %r is not a valid image name" % entry.name)


def discover(entries: t.Sequence[SearchEntry]) -> tuple[list[ImageVerdict], list[SearchEntry]]:
    """(verdicts decided by discovery alone, the entries that remain to be judged by their content).

    entries must be in search-directory priority order. Masking is by name across directories; two
    images of one name in the same directory (NAME and NAME.raw) are ambiguous, because systemd keeps
    whichever readdir() returns first.
    """
    decided: list[ImageVerdict] = []
    winners: dict[str, SearchEntry] = {}
    ambiguous: dict[tuple[str, str], list[SearchEntry]] = {}
    visible = visible_entries(entries)
    for entry in entries:
        if entry in visible:
            ambiguous.setdefault((entry.search_dir, entry.name), []).append(entry)
            continue
        ignored = _ignored(entry)
        if ignored:
            decided.append(ignored)
    judged: list[SearchEntry] = []
    for entry in entries:
        group = ambiguous.get((entry.search_dir, entry.name))
        if not group or entry not in group:
            continue
        winner = winners.get(entry.name)
        if winner is not None and winner.search_dir != entry.search_dir:
            decided.append(ImageVerdict(entry, "masked", "masked by %s" % winner.path))
        elif len(group) > 1:
            others = ", ".join(other.path for other in group if other is not entry)
            decided.append(ImageVerdict(entry, "invalid", "ambiguous: %s has the same name; systemd-sysext keeps "
                                                          "whichever readdir() returns first" % others))
            winners.setdefault(entry.name, entry)
        else:
            winners[entry.name] = entry
            judged.append(entry)
    return decided, judged


def judge(entry: SearchEntry, content: ImageContent, host: HostRelease, architecture: str, scope: str = "system",
          force: bool = False, policy: ImagePolicy | None = None) -> ImageVerdict:
    """The verdict on a discovered, unmasked image from its content."""
    problem = module_name_problem(entry.name)
    if problem:
        return ImageVerdict(entry, "invalid", "%s (systemd-sysext would still try it, and names like 'a:b' break "
                                              "the overlay mount and the whole merge)" % problem, content)
    if entry.kind == "block":
        return ImageVerdict(entry, "invalid", "block devices are not inspected by this module", content)
    if content.error:
        return ImageVerdict(entry, "invalid", "cannot be read (%s): systemd-sysext aborts the whole merge on it"
                            % content.error, content)
    if entry.kind == "raw" and policy is not None and not policy.allows_plain_file_system:
        # systemd checks the policy when it dissects the image, before release data and regardless of --force.
        return ImageVerdict(entry, "invalid", "image_policy %r lets the root partition only be %s, and this raw image "
                            "is a bare %s file system, which systemd counts as an unprotected root partition (no "
                            "verity, no signature): systemd-sysext refuses it and fails the whole merge"
                            % (policy.text, policy.describe_root(), content.fstype or "unknown"), content)
    if entry.kind == "raw" and content.release is None and not content.os_tree:
        return ImageVerdict(entry, "invalid", "has no usable extension-release.%s (%s): systemd-sysext 252 fails "
                            "the whole merge on such a raw image ('No medium found')"
                            % (entry.name, content.release_problem or "not found"), content)
    if content.not_directories:
        return ImageVerdict(entry, "invalid", "its %s is not a directory: systemd-sysext fails the whole merge on it"
                            % ", ".join(content.not_directories), content)
    if force:
        return ImageVerdict(entry, "compatible", None, content)
    if content.os_release:
        return ImageVerdict(entry, "invalid", "ships usr/lib/os-release: systemd-sysext refuses it and the whole merge "
                                              "fails", content)
    if not content.release:
        detail = content.release_problem or "its extension-release file is empty"
        return ImageVerdict(entry, "incompatible", "carries no extension-release data (%s)" % detail, content)
    problem = extension_release_problem(content.release, host, architecture, scope)
    if problem:
        return ImageVerdict(entry, "incompatible", problem, content)
    return ImageVerdict(entry, "compatible", None, content)


def classify(entries: t.Sequence[SearchEntry], contents: t.Mapping[str, ImageContent], host: HostRelease,
             architecture: str, scope: str = "system", force: bool = False,
             policy: ImagePolicy | None = None) -> tuple[ImageVerdict, ...]:
    """Every reportable entry's verdict, in search-directory order. contents is keyed by entry path."""
    decided, judged = discover(entries)
    verdicts = {verdict.entry.path: verdict for verdict in decided}
    for entry in judged:
        verdicts[entry.path] = judge(entry, contents.get(entry.path, ImageContent(error="not inspected")), host,
                                     architecture, scope, force, policy)
    return tuple(verdicts[entry.path] for entry in entries if entry.path in verdicts)


def to_inspect(entries: t.Sequence[SearchEntry]) -> list[SearchEntry]:
    """The entries whose content decides their verdict (unmasked directories and raw images)."""
    return [entry for entry in discover(entries)[1] if entry.kind in ("directory", "raw")
            and module_name_problem(entry.name) is None]


def merge_candidates(verdicts: t.Iterable[ImageVerdict]) -> list[str]:
    """The names systemd-sysext will merge, lowest layer first (its version sort)."""
    return version_sorted(verdict.name for verdict in verdicts if verdict.compatible)


def contributes(verdict: ImageVerdict, hierarchy: str) -> bool:
    return verdict.content is not None and hierarchy in verdict.content.hierarchies
