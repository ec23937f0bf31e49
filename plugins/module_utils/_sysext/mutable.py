# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext: the --mutable mode of a merged hierarchy, read back from its overlay's options (pure).

systemd-sysext 257 mounts, for /usr with the mutable directory /var/lib/extensions.mutable/usr (DIR):
  no                ro, DIR not in lowerdir          import            ro, DIR in lowerdir
  yes               rw, upperdir=DIR                 ephemeral         rw, upperdir under /run, DIR not in lowerdir
  ephemeral-import  rw, upperdir under /run, DIR in lowerdir
auto is yes when DIR exists and no otherwise; import and ephemeral-import fall back to no and ephemeral without DIR;
yes creates DIR. Without --mutable, 257 merges read-only (no) even when DIR exists.
"""

from __future__ import annotations

import posixpath
import typing as t

MUTABLE_ROOT = "/var/lib/extensions.mutable"
Mode = t.Literal["no", "yes", "import", "ephemeral", "ephemeral-import"]


def mutable_dir(hierarchy: str) -> str:
    """The hierarchy's mutable directory, as inside the root: /usr -> /var/lib/extensions.mutable/usr."""
    return posixpath.join(MUTABLE_ROOT, hierarchy.lstrip("/"))


def _option(super_options: t.Sequence[str], key: str) -> str | None:
    prefix = key + "="
    return next((option[len(prefix):] for option in super_options if option.startswith(prefix)), None)


def observed_mode(super_options: t.Sequence[str], mutable_path: str) -> Mode:
    """The mode a sysext overlay was merged with; mutable_path is the mutable directory as this namespace sees it."""
    lower = (_option(super_options, "lowerdir") or "").split(":")
    imported = mutable_path in lower
    if "rw" not in super_options:
        return "import" if imported else "no"
    if _option(super_options, "upperdir") == mutable_path:
        return "yes"
    return "ephemeral-import" if imported else "ephemeral"


def effective_mode(requested: str, mutable_dir_exists: bool) -> Mode:
    """The mode systemd-sysext 257 merges with for a requested --mutable value."""
    if requested == "auto":
        return "yes" if mutable_dir_exists else "no"
    if requested == "import":
        return "import" if mutable_dir_exists else "no"
    if requested == "ephemeral-import":
        return "ephemeral-import" if mutable_dir_exists else "ephemeral"
    if requested in ("yes", "no", "ephemeral"):
        return t.cast(Mode, requested)
    raise ValueError("unknown mutable mode %r" % requested)
