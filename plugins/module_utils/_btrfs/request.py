# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: module parameters validated and turned into a typed Request."""

from __future__ import annotations

import os
import random
import re
import string
import time
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    COMMON_PATTERN, GenerationError, Layout, MAX_FSTAB_BYTES, NAME_MAX, NAME_PATTERN, ROOT_SUBVOLUME, Request,
    SNAPSHOTS, Source,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.observe import (
    boot_file_problems, filesystem_uuid, injection_problem, source_kind,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import common_mountpoint, default_template
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._linux.mountinfo import MountEntry


def validate_name(param: str, value: object) -> str:
    """A generation or link-directory name: one path component the seed's tools and rEFInd can handle."""
    if not isinstance(value, str) or not value:
        raise ParameterError(param, "must be a non-empty name, got %r" % (value,))
    if "/" in value or ".." in value:
        raise ParameterError(param, "must be a single name without '/' or '..', got %r" % value)
    if len(value) > NAME_MAX or not NAME_PATTERN.match(value):
        raise ParameterError(param, "must match [A-Za-z0-9][A-Za-z0-9._-]* (at most %d characters), got %r"
                             % (NAME_MAX, value))
    return value


def validate_common(param: str, value: object) -> str:
    """A commons subvolume name such as @var@log ('@' stands for '/' in the mount point)."""
    if not isinstance(value, str) or not COMMON_PATTERN.match(value) or ".." in value or len(value) > NAME_MAX:
        raise ParameterError(param, "each entry must look like @home or @var@log ([@A-Za-z0-9._-], starting "
                             "with '@', no '..'), got %r" % (value,))
    if common_mountpoint(value) == "/":
        raise ParameterError(param, "%r would be mounted on / ; name a directory such as @home" % value)
    return value


def new_stamp(utc_time: str, letters: str) -> str:
    """The seed's stamp: UTC %Y%m%d%H%M%S followed by 8 random letters (both given, so this stays pure)."""
    stamp = utc_time + letters
    if not re.match(r"^\d{14}[A-Za-z]{8}$", stamp):
        # A clock outside years 1000-9999 gives another width: an error the module reports, not a traceback.
        raise GenerationError("a generation stamp is 14 digits and 8 letters, got %r (is the clock right?)" % stamp)
    return stamp


def validate_template(param: str, value: str) -> str:
    """The fstab template: written to top/fstab as UTF-8, and read back (by every later run) with a cap."""
    size = len(value.encode("utf-8", "surrogateescape"))
    if size > MAX_FSTAB_BYTES:
        raise ParameterError(param, "is %d bytes; at most %d bytes (1 MiB) are allowed" % (size, MAX_FSTAB_BYTES))
    return value


MAX_SLOTS = 64
NAMED_STATES = ("current", "absent")


def validate_options(params: dict) -> dict:
    """The options, checked before anything is touched; errors name the parameter."""
    state = params["state"]
    checked = dict(params)
    for param in ("top", "device", "root"):
        if params[param] is not None:
            checked[param] = validate_path(param, params[param], must_exist=True, directory=param != "device")
    for param in ("name", "from"):
        if params[param] is not None:
            validate_name(param, params[param])
    if params["name"] is None and state in NAMED_STATES:
        raise ParameterError("name", "state=%s needs the name of a generation" % state)
    if params["name"] is not None and state == "pruned":
        raise ParameterError("name", "is not used by state=pruned; list generations to keep in pinned")
    if params["from"] is not None and state != "present":
        raise ParameterError("from", "is only used by state=present")
    if params["source"] is not None:
        if state not in ("initialized", "present"):
            raise ParameterError("source", "is only used by state=initialized and state=present")
        checked["source"] = validate_path("source", params["source"], must_exist=True, directory=True)
    if not 1 <= params["slots"] <= MAX_SLOTS:
        raise ParameterError("slots", "must be between 1 and %d, got %d" % (MAX_SLOTS, params["slots"]))
    if params["keep"] < 1:
        raise ParameterError("keep", "must be at least 1, got %d" % params["keep"])
    checked["pinned"] = tuple(validate_name("pinned", name) for name in params["pinned"])
    checked["unhealthy"] = tuple(validate_name("unhealthy", name) for name in params.get("unhealthy") or ())
    commons = tuple(validate_common("commons", common) for common in params["commons"])
    if len(set(commons)) != len(commons):
        raise ParameterError("commons", "lists a name twice: %s" % ", ".join(commons))
    checked["commons"] = commons
    if params.get("tentative") and state != "current":
        raise ParameterError("tentative", "is only used by state=current")
    if params.get("building") and state != "present":
        raise ParameterError("building", "is only used by state=present")
    boot_files = tuple(params.get("boot_files") or ())
    if boot_files and state not in ("present", "current"):
        raise ParameterError("boot_files", "is only used by state=present and state=current")
    for path in boot_files:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise ParameterError("boot_files", "each entry must be an absolute path inside the generation, got %r"
                                 % (path,))
    checked["boot_files"] = boot_files
    if params.get("fstab_template") is not None:
        validate_template("fstab_template", params["fstab_template"])
    if params.get("fill_commons"):
        if state != "initialized":
            raise ParameterError("fill_commons", "is only used by state=initialized")
        if params["source"] is None:
            raise ParameterError("fill_commons", "needs source: the commons are filled from the same places "
                                 "below source (source/var/log for @var@log)")
    return checked


def fill_sources(options: dict) -> dict[str, str]:
    """For fill_commons: each common's directory below source, when it is a real directory (no symlink)."""
    if not options.get("fill_commons") or options["source"] is None:
        return {}
    found = {}
    for common in options["commons"]:
        path = os.path.normpath(options["source"].rstrip("/") + common_mountpoint(common))
        if os.path.isdir(path) and not os.path.islink(path):
            found[common] = path
    return found


def fresh_stamp(taken: t.Collection[str]) -> str:
    letters = random.SystemRandom()
    while True:
        stamp = new_stamp(time.strftime("%Y%m%d%H%M%S", time.gmtime()),
                          "".join(letters.choice(string.ascii_letters) for _letter in range(8)))
        if stamp not in taken:
            return stamp


def origin_problem(options: dict, layout: Layout, top: str) -> tuple[str, str] | None:
    """(parameter, why) when the root a new generation would start from cannot take an injected etc/fstab."""
    if options["source"] is not None:
        problem = injection_problem(options["source"])
        return ("source", problem) if problem else None
    origin = options["from"] or layout.current_name()
    if options["state"] != "present" or layout.generation(origin) is None:
        return None
    problem = injection_problem(os.path.join(top, SNAPSHOTS, t.cast(str, origin), ROOT_SUBVOLUME))
    if problem is None:
        return None
    return "from", "generation %s%s: %s" % (origin, "" if options["from"] else " (current, the default)", problem)


def build_request(options: dict, layout: Layout, runner: Runner, top: str, top_mount: MountEntry) -> Request:
    taken = set(layout.names()) | {stray.path.split("/", 1)[1] for stray in layout.strays}
    new_name = fresh_stamp(taken)
    links_name = fresh_stamp({directory.name for directory in layout.link_directories})
    source = None
    if options["source"] is not None:
        source = Source(t.cast(t.Any, source_kind(runner, top_mount, options["source"])), options["source"])
    template = None
    if options["state"] == "initialized" and options["fstab_template"] is None and layout.template is None:
        template = default_template(filesystem_uuid(runner, top), options["commons"])
    name = options["name"]
    if options["state"] == "present" and name is None:
        name = new_name
    return Request(state=options["state"], name=name, new_name=new_name, links_name=links_name,
                   origin=options["from"], source=source, slots=options["slots"], keep=options["keep"],
                   pinned=options["pinned"], commons=options["commons"], fstab_template=options["fstab_template"],
                   default_template=template, root=options["root"], fill_sources=fill_sources(options),
                   tentative=bool(options.get("tentative")), unhealthy=options.get("unhealthy", ()),
                   building=bool(options.get("building")), origin_problem=origin_problem(options, layout, top),
                   boot_problems=boot_file_problems(top, name, options.get("boot_files", ())))
