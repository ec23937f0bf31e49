# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Generated argument sets and file trees for every module, each run in check mode, for real and (when accepted)
once more; the verdict (outcomes.py) must be a clear error or ok, and each is tallied for `make hostile`'s table.

Every path option points into a fresh work directory, inside a private mount namespace: never at this machine."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import typing as t

from hypothesis import Phase, given, settings, strategies as st

from support.modules import direct_module
from support.namespace import MountNamespace
from support.sysext import DEBIAN_12, make_extension, make_root

from campaign import CAMPAIGN_EXAMPLES, component, odd_text
from outcomes import Run, record, verdict

RUN_TIMEOUT = 60

OPTIONS = {
    "usrmerge_symlinks": ("root", "directories", "merge_sbin", "conflicts", "skip_flag"),
    "sysext_build": ("name", "root", "dest", "format", "compression", "compression_level", "sources", "hierarchies",
                     "release"),
    "sysext_merge": ("state", "root", "make_shared", "hierarchies", "required", "force", "image_policy", "mutable"),
    "immutability_facts": ("root", "btrfs_top", "esp", "probe_esp"),
    "btrfs_generation": ("top", "state", "name", "from", "source", "slots", "keep", "pinned", "unhealthy", "commons",
                         "fill_commons", "tentative", "building", "boot_files", "fstab_template", "root"),
}


def fingerprint(ns: MountNamespace, work: str) -> tuple[tuple[t.Any, ...], str]:
    """Every entry of the work tree (type, mode, owner, size, content hash or link target) and the mount table."""
    entries = []
    for current, directories, files in os.walk(work):
        for name in directories + files:
            path = os.path.join(current, name)
            status = os.lstat(path)
            content: str | None = None
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            entries.append((os.path.relpath(path, work), status.st_mode, status.st_uid, status.st_gid, status.st_size, content))
    return tuple(sorted(entries)), ns.mountinfo()


def run(ns: MountNamespace, module: str, args: dict[str, t.Any], work: str, check: bool) -> Run:
    before = fingerprint(ns, work)
    try:
        result, stderr = direct_module(ns, module, args, check=check, timeout=RUN_TIMEOUT)[1:]
    except subprocess.TimeoutExpired:
        return Run(None, "", True, True)
    return Run(result, stderr, False, fingerprint(ns, work) != before)


def campaign(ns: MountNamespace, module: str, args: dict[str, t.Any], work: str, read_only: bool = False) -> None:
    check = run(ns, module, args, work, check=True)
    applied = run(ns, module, args, work, check=False)
    accepted = applied.result is not None and not applied.result.get("failed")
    rerun = run(ns, module, args, work, check=False) if accepted else None
    outcome, why = verdict(check, applied, rerun, OPTIONS[module], work, always_changes=args.get("state") == "refreshed")
    if read_only and outcome == "ok" and applied.changed_something:
        outcome, why = "damage", "a read-only module changed the tree or the mounts"
    record(module, outcome)
    assert outcome in ("clear error", "ok"), "%s %s: %s (arguments %r)" % (module, outcome, why, args)


@contextlib.contextmanager
def scratch(ns: MountNamespace) -> t.Iterator[str]:
    """A fresh work directory; afterwards whatever a run mounted under it is unmounted and it is removed."""
    work = tempfile.mkdtemp(prefix="immutable-root-campaign-")
    try:
        yield work
    finally:
        ns.sh('for m in $(awk \'{print $5}\' /proc/self/mountinfo | grep "^%s" | sort -r); do '
              'umount -l "$(printf "%%b" "$m")" || true; done' % work, check=False)
        shutil.rmtree(work, ignore_errors=True)


def odd_choice(choices: t.Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(choices)), odd_text)


# A member of a generated tree: a relative path, and what it is (file bytes, a symlink target, or a directory).
member = st.tuples(st.lists(component, min_size=1, max_size=3).map("/".join),
                   st.one_of(st.binary(max_size=64), st.just("dir"),
                             st.tuples(st.just("link"), odd_text.map(lambda text: text.replace("\0", "")))))


def plant(base: str, members: t.Sequence[tuple[str, t.Any]]) -> None:
    for relative, what in members:
        path = os.path.join(base, relative)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if what == "dir":
                os.makedirs(path, exist_ok=True)
            elif isinstance(what, tuple):
                os.symlink(what[1] or ".", path)
            else:
                with open(path, "wb") as handle:
                    handle.write(what)
        except OSError:
            continue  # a parent is a file or a link: that member is simply absent


SETTINGS = settings(max_examples=CAMPAIGN_EXAMPLES, phases=[Phase.explicit, Phase.reuse, Phase.generate])


@SETTINGS
@given(data=st.data(), members=st.lists(member, max_size=6))
def test_usrmerge_symlinks_campaign(module_ns: MountNamespace, data: st.DataObject,
                                    members: list[tuple[str, t.Any]]) -> None:
    with scratch(module_ns) as work:
        root = os.path.join(work, "root")
        for directory in ("bin", "sbin", "lib", "usr/bin", "usr/sbin", "usr/lib", "etc"):
            os.makedirs(os.path.join(root, directory))
        with open(os.path.join(root, "bin/sh"), "wb") as handle:
            handle.write(b"#!/bin/true\n")
        plant(os.path.join(root, data.draw(st.sampled_from(["bin", "sbin", "lib", "usr/bin", "usr/lib"]))), members)
        args = data.draw(st.fixed_dictionaries({"root": st.just(root)}, optional={
            "directories": st.lists(odd_choice(["bin", "sbin", "lib", "lib64", "libx32"]), max_size=3),
            "merge_sbin": st.booleans(),
            "conflicts": odd_choice(["fail", "prefer_usr", "prefer_root"]),
            "skip_flag": odd_choice(["remove", "keep", "honour"]),
        }))
        campaign(module_ns, "usrmerge_symlinks", args, work)


@SETTINGS
@given(data=st.data(), members=st.lists(member, max_size=6))
def test_sysext_build_campaign(module_ns: MountNamespace, data: st.DataObject,
                               members: list[tuple[str, t.Any]]) -> None:
    with scratch(module_ns) as work:
        root = str(make_root(pathlib.Path(work) / "root"))
        source = os.path.join(work, "source")
        os.makedirs(os.path.join(source, "usr/bin"))
        with open(os.path.join(source, "usr/bin/hello"), "wb") as handle:
            handle.write(b"#!/bin/sh\necho hello\n")
        plant(os.path.join(source, data.draw(st.sampled_from(["", "usr", "usr/lib", "opt", "etc"]))), members)
        args = data.draw(st.fixed_dictionaries({
            "name": st.one_of(st.just("hello"), component, odd_text),
            "root": st.just(root),
            "dest": st.just(os.path.join(work, "out")),
            "sources": st.just([source]),
        }, optional={
            "format": odd_choice(["directory", "squashfs", "erofs"]),
            "compression": odd_text,
            "compression_level": st.integers(-3, 30),
            "hierarchies": st.lists(st.one_of(st.sampled_from(["/usr", "/opt"]), odd_text), max_size=3),
            "release": st.dictionaries(st.one_of(st.sampled_from(["ID", "VERSION_ID", "SYSEXT_LEVEL"]), odd_text),
                                       odd_text, max_size=3),
        }))
        campaign(module_ns, "sysext_build", args, work)


@SETTINGS
@given(data=st.data(), names=st.lists(component, max_size=3),
       release=st.one_of(st.just(DEBIAN_12), odd_text.map(lambda text: "ID=debian\n" + text)))
def test_sysext_merge_campaign(module_sxns: MountNamespace, data: st.DataObject, names: list[str], release: str) -> None:
    with scratch(module_sxns) as work:
        root = make_root(pathlib.Path(work) / "root")
        for name in names:
            make_extension(root / "var/lib/extensions" / name, name, release=release)
        args = data.draw(st.fixed_dictionaries({"root": st.just(str(root))}, optional={
            "state": odd_choice(["merged", "unmerged", "refreshed"]),
            "hierarchies": st.lists(st.one_of(st.sampled_from(["/usr", "/opt"]), odd_text), max_size=2),
            "required": st.lists(st.one_of(st.sampled_from(names or ["absent"]), odd_text), max_size=2),
            "force": st.booleans(),
            "mutable": odd_choice(["yes", "no", "auto", "import", "ephemeral", "ephemeral-import"]),
        }))
        campaign(module_sxns, "sysext_merge", args, work)


@SETTINGS
@given(data=st.data(), members=st.lists(member, max_size=6))
def test_immutability_facts_campaign(module_ns: MountNamespace, data: st.DataObject,
                                     members: list[tuple[str, t.Any]]) -> None:
    with scratch(module_ns) as work:
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(root, "etc"))
        plant(root, members)
        inside = st.one_of(component, odd_text).map(lambda name: os.path.join(work, name.lstrip("/")))
        args = data.draw(st.fixed_dictionaries({"root": st.just(root)}, optional={
            "btrfs_top": inside, "esp": inside, "probe_esp": st.booleans()}))
        campaign(module_ns, "immutability_facts", args, work, read_only=True)


@SETTINGS
@given(data=st.data())
def test_btrfs_generation_campaign(module_ns: MountNamespace, data: st.DataObject) -> None:
    # The top is a plain directory (no btrfs): every state must refuse it clearly and touch nothing.
    with scratch(module_ns) as work:
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(root, "etc"))
        top = os.path.join(work, "top")
        os.makedirs(top)
        name = st.one_of(st.just("gen1"), component, odd_text)
        args = data.draw(st.fixed_dictionaries({
            "top": st.just(top), "root": st.just(root),
            "state": odd_choice(["initialized", "present", "current", "absent", "pruned"]),
        }, optional={
            "name": name, "from": name, "slots": st.integers(-2, 9), "keep": st.integers(-2, 9),
            "pinned": st.lists(name, max_size=2), "commons": st.lists(odd_text, max_size=2),
            "tentative": st.booleans(), "fstab_template": odd_text,
        }))
        campaign(module_ns, "btrfs_generation", args, work)
