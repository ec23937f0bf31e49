# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: the pure planner that classifies every entry."""

from __future__ import annotations

import typing as t
from dataclasses import replace

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    ALLOWED, ARCH_LIBS, BACKUP_DIR, BLOCK, Cleanup, Conflict, EntryOp, KINDS, Layout, Node, Observed, PREFIX, Plan,
    Request, SKIP_FLAG, Source, UsrMergeError, is_broken, meaning, parent, relocated_text, show, value,
)


def _resolves_into(physical: str, wanted: t.Sequence[str]) -> bool:
    return any(physical == prefix or physical.startswith(prefix + "/") for prefix in wanted)


def destination(name: str, request: Request, tops: t.Mapping[str, Node | None],
                links: t.Mapping[str, str]) -> str:
    """Physical directory that name's content goes to."""
    if name == "usr/sbin" or (name == "sbin" and request.merge_sbin):
        return "usr/bin"
    usr_name = "usr/" + name
    node = tops.get(usr_name)
    if node is None or node.kind == "dir":
        return usr_name
    physical = links.get(usr_name, "")
    if node.kind == "link" and physical.startswith("usr/"):
        return physical
    raise ParameterError("directories", "%s cannot receive %s: it is a %s%s" % (
        show(usr_name), show(name), node.kind, " to %s" % node.target if node.kind == "link" else ""))


def plan_layout(request: Request, tops: t.Mapping[str, Node | None], links: t.Mapping[str, str]) -> Layout:
    """Which directories are merged, which are already symlinks, and where every top-level path ends up."""
    usr = tops.get("usr")
    if usr is None or usr.kind != "dir":
        raise ParameterError("root", "%s/usr must be a directory, it is %s" % (
            request.root.rstrip("/"), "missing" if usr is None else "a " + usr.kind))
    names = list(request.directories) if request.directories is not None else [
        name for name in ALLOWED if (tops.get(name) or Node("none")).kind == "dir"]
    if request.merge_sbin and "sbin" not in names and (tops.get("sbin") or Node("none")).kind == "dir":
        names.append("sbin")
    sources: list[Source] = []
    new_links: list[tuple[str, str]] = []
    mapping: dict[str, str] = {}
    warnings: list[str] = []
    if request.merge_sbin:
        usr_sbin = tops.get("usr/sbin")
        mapping["usr/sbin"] = "usr/bin"
        if usr_sbin is not None and usr_sbin.kind == "dir":
            sources.append(Source("usr/sbin", "usr/bin", "bin"))
        elif usr_sbin is None:
            new_links.append(("usr/sbin", "bin"))
        elif links.get("usr/sbin") != "usr/bin":
            raise ParameterError("merge_sbin", "/usr/sbin is a %s that does not resolve to /usr/bin" % usr_sbin.kind)
    for name in ALLOWED:
        node = tops.get(name)
        wanted = ["usr/bin"] if request.merge_sbin and name == "sbin" else ["usr/" + name]
        if name == "sbin" and request.merge_sbin:
            wanted.append("usr/sbin")
        elif name in ARCH_LIBS:
            wanted = ["usr/lib", "usr/lib32", "usr/lib64", "usr/libo32", "usr/libx32"]
        if node is not None and node.kind == "link":
            if _resolves_into(links.get(name, ""), wanted):
                mapping[name] = links[name]
            elif name in names:
                raise ParameterError("directories", "%s is a symlink to %s, which does not resolve into %s" % (
                    show(name), node.target, " or ".join(show(path) for path in wanted)))
            else:
                warnings.append("%s is a symlink to %s, not into /usr; left alone" % (show(name), node.target))
            continue
        if name not in names:
            continue
        if node is None:
            dst = destination(name, request, tops, links)
            if tops.get(dst) is not None:
                new_links.append((name, "usr/bin" if dst == "usr/bin" and name == "sbin" else "usr/" + name))
                mapping[name] = dst
            continue
        if node.kind != "dir":
            raise ParameterError("directories", "%s is a %s, not a directory" % (show(name), node.kind))
        dst = destination(name, request, tops, links)
        mapping[name] = dst
        sources.append(Source(name, dst, "usr/bin" if dst == "usr/bin" and name == "sbin" else "usr/" + name))
    return Layout(tuple(sources), tuple(new_links), mapping, tuple(warnings))


class _Classifier:
    """Walks each source tree against the destination, as it will be after the sources before it."""

    def __init__(self, request: Request, observed: Observed, layout: Layout) -> None:
        self.request = request
        self.observed = observed
        self.mapping = layout.mapping
        self.planned: dict[str, Node | None] = {}
        self.ops: list[EntryOp] = []
        self.conflicts: list[Conflict] = []
        self.overrides: dict[str, str] = {}

    def dst_node(self, path: str) -> Node | None:
        if path in self.planned:
            return self.planned[path]
        return self.observed.usr_nodes.get(path)

    def dst_dev(self, path: str) -> int:
        top = "/".join(path.split("/")[:2])
        node = self.observed.tops.get(top) or self.observed.usr_nodes.get(top) or self.observed.tops.get("usr")
        return node.dev if node else 0

    def fill(self, src: str, dst: str, node: Node) -> str:
        """How a copy of node gets to dst: a hard link on the same filesystem, else a copy."""
        if node.kind == "link":
            return "symlink"
        if node.dev and node.dev == self.dst_dev(dst):
            return "link"
        return "copy" if node.kind == "file" else "special"

    def add(self, kind: str, src: str, dst: str, node: Node, **flags: t.Any) -> None:
        if flags.get("create") == "symlink":
            flags["symlink_text"] = relocated_text(src, dst, node.target, self.mapping)
        self.ops.append(EntryOp(kind, src, dst, node, **flags))

    def merge(self, src: str, dst: str, node: Node) -> None:
        other = self.dst_node(dst)
        if other is None:
            self.into_absent(src, dst, node)
        elif other.kind == "dir":
            self.into_directory(src, dst, node, other)
        elif other.kind == "link":
            self.onto_symlink(src, dst, node, other)
        else:
            self.onto_file(src, dst, node, other)

    def children(self, src: str, dst: str, node: Node) -> None:
        for name, child in sorted((node.children or {}).items()):
            self.merge(src + "/" + name, dst + "/" + name, child)

    def into_absent(self, src: str, dst: str, node: Node) -> None:
        if node.kind == "dir":
            self.add("make_directory", src, dst, node, create="mkdir")
            self.planned[dst] = replace(node, children=None)
            self.children(src, dst, node)
        elif node.kind == "link":
            # A link that would point at itself once copied (/sbin/x -> /usr/sbin/x) is dropped; one that already
            # does (x -> x, a loop before the merge) is moved as it is, or the path would turn from a loop to missing.
            if meaning(src, node.target, self.mapping) == dst and node.resolved != "loop":
                self.add("broken_symlink", src, dst, node)
                return
            self.add("move_symlink", src, dst, node, create="symlink")
            self.planned[dst] = node
        else:
            self.add("move", src, dst, node, create=self.fill(src, dst, node), replace_src=True)
            self.planned[dst] = node

    def into_directory(self, src: str, dst: str, node: Node, other: Node) -> None:
        if node.kind == "dir":
            self.add("merge_directory", src, dst, node)
            if (node.mode, node.uid, node.gid) != (other.mode, other.uid, other.gid):
                self.conflict(src, dst, node, other, "directory modes or owners differ (%s vs %s)" % (
                    value(node), value(other)))
            self.children(src, dst, node)
        elif node.kind == "link" and meaning(src, node.target, self.mapping) == dst:
            self.equivalent(src, dst, node, other)
        elif is_broken(node):
            self.broken_source(src, dst, node, other)
        else:
            self.conflict(src, dst, node, other, "%s is a directory and %s is not" % (show(dst), show(src)))

    def equivalent(self, src: str, dst: str, node: Node, other: Node) -> None:
        """Two names for one thing once merged. One may dangle now because its target is not merged yet (an
        interrupted run's symlink in /usr, say); afterwards it reads like the other."""
        self.add("equivalent_symlink", src, dst, node)
        if is_broken(node) and not is_broken(other):
            self.overrides[src] = value(other)
        elif is_broken(other) and not is_broken(node):
            self.overrides[dst] = value(node)

    def onto_symlink(self, src: str, dst: str, node: Node, other: Node) -> None:
        dst_meaning = meaning(dst, other.target, self.mapping)
        if node.kind == "link" and meaning(src, node.target, self.mapping) in (dst, dst_meaning):
            self.equivalent(src, dst, node, other)
        elif dst_meaning == dst and node.kind == "dir":
            self.conflict(src, dst, node, other, "%s is a symlink to the directory %s" % (show(dst), show(src)))
        elif dst_meaning == dst:
            self.add("points_back", src, dst, node, create=self.fill(src, dst, node), over=True,
                     replace_src=node.kind != "link")
            self.planned[dst] = node
        elif node.kind == "dir":
            self.conflict(src, dst, node, other, "%s is a directory and %s is not" % (show(src), show(dst)))
        elif is_broken(node) and not is_broken(other):
            self.broken_source(src, dst, node, other)
        elif is_broken(other) and not is_broken(node):
            self.add("broken_symlink", src, dst, node, create=self.fill(src, dst, node), over=True,
                     replace_src=node.kind != "link", backup=dst)
            self.overrides[dst] = value(node)
            self.planned[dst] = node
        else:
            self.conflict(src, dst, node, other, "both exist and differ (%s vs %s)" % (value(node), value(other)))

    def onto_file(self, src: str, dst: str, node: Node, other: Node) -> None:
        # A link resolving to a copy of the file is replaced by the file itself: same content. (Two links that
        # resolve alike are not: one may lead through the other, and merging them would make a loop.)
        if node.kind == "link" and (meaning(src, node.target, self.mapping) == dst or (
                not is_broken(node) and node.resolved == value(other))):
            self.equivalent(src, dst, node, other)
        elif node.kind == "dir":
            self.conflict(src, dst, node, other, "%s is a directory and %s is not" % (show(src), show(dst)))
        elif is_broken(node):
            self.broken_source(src, dst, node, other)
        elif identical(node, other):
            self.add("duplicate", src, dst, node, replace_src=True)
        else:
            self.conflict(src, dst, node, other, "both exist and differ (%s vs %s)" % (value(node), value(other)))

    def broken_source(self, src: str, dst: str, node: Node, other: Node) -> None:
        """A dangling symlink in the root holds nothing: the /usr entry wins, the link is saved."""
        self.add("broken_symlink", src, dst, node, backup=src)
        self.overrides[src] = value(other)

    def conflict(self, src: str, dst: str, node: Node, other: Node, problem: str) -> None:
        mode = self.request.conflicts
        directories = node.kind == "dir" and other.kind == "dir"
        keep_usr = node.kind != "dir" or directories
        keep_root = (node.kind != "dir" and other.kind != "dir") or directories
        if mode == "prefer_usr" and keep_usr:
            resolution = "keep %s, save %s under %s" % (show(dst), show(src), show(BACKUP_DIR))
            if directories:
                resolution = "keep the mode and owner of %s" % show(dst)
            else:
                self.add("conflict", src, dst, node, backup=src, replace_src=node.kind != "link")
            self.overrides[src] = value(other)
        elif mode == "prefer_root" and keep_root:
            resolution = "keep %s, save %s under %s" % (show(src), show(dst), show(BACKUP_DIR))
            if directories:
                resolution = "give %s the mode and owner of %s" % (show(dst), show(src))
                self.ops.append(EntryOp("conflict", src, dst, node, chmod_dst=True))
                self.planned[dst] = replace(other, mode=node.mode, uid=node.uid, gid=node.gid)
            else:
                self.add("conflict", src, dst, node, create=self.fill(src, dst, node), over=True,
                         replace_src=node.kind != "link", backup=dst)
                self.planned[dst] = node
            self.overrides[dst] = value(node)
        elif mode == "fail":
            resolution = "fail"
        else:
            resolution = "fail"
            problem += "; %s cannot resolve this, move one of them away by hand" % mode
        self.conflicts.append(Conflict(show(src), show(dst), problem, resolution, resolution != "fail"))


def identical(node: Node, other: Node) -> bool:
    """Same object, or same type, content, mode, owner and extended attributes."""
    if node.dev and (node.dev, node.ino) == (other.dev, other.ino):
        return True
    if node.kind != other.kind or (node.mode, node.uid, node.gid, node.xattrs) != (
            other.mode, other.uid, other.gid, other.xattrs):
        return False
    if node.kind == "file":
        return bool(node.digest) and node.digest == other.digest
    return node.rdev == other.rdev


def copied_bytes(node: Node) -> int:
    """What a copy of node takes: its allocated blocks, since the holes of a sparse file are not copied."""
    return node.size if node.allocated < 0 else min(node.size, node.allocated)


def _walk(path: str, node: Node) -> t.Iterator[tuple[str, Node]]:
    yield path, node
    for name, child in sorted((node.children or {}).items()):
        yield from _walk(path + "/" + name, child)


def plan_cleanup(observed: Observed) -> tuple[Cleanup, ...]:
    """Our temporary names: staging entries are dropped, a swapped-out old directory is removed."""
    cleanup = []
    for path, node in sorted(observed.leftovers.items()):
        if node.kind != "dir":
            cleanup.append(Cleanup(path, "unlink", "temporary entry of an interrupted run"))
            continue
        name = path.rpartition("/")[2]
        owner = (parent(path) + "/" if parent(path) else "") + name[len(PREFIX):]
        kept = [sub for sub, child in _walk(path, node) if child.kind not in ("dir", "link")]
        if kept:
            raise UsrMergeError("%s, left by an interrupted run, still holds %s; not removing it, inspect it by hand"
                                % (show(path), ", ".join(show(sub) for sub in kept[:5])))
        owner_node = observed.tops.get(owner)
        if owner_node is not None and owner_node.kind == "link":
            cleanup.append(Cleanup(path, "rmtree", "old directory of %s, already replaced by a symlink" % show(owner)))
        else:
            cleanup.append(Cleanup(path, "rmtree", "temporary directory of an interrupted run"))
    return tuple(cleanup)


def _summary(counts: t.Mapping[str, int]) -> str:
    return ", ".join("%d %s" % (number, kind.replace("_", " ")) for kind, number in counts.items() if number)


def _actions(plan_ops: t.Sequence[EntryOp], layout: Layout, cleanup: t.Sequence[Cleanup],
             remove_flag: bool) -> tuple[Action, ...]:
    actions = [Action("remove_leftover", show(item.path), item.why) for item in cleanup]
    if remove_flag:
        actions.append(Action("remove_skip_flag", show(SKIP_FLAG), "debootstrap's request not to merge /usr"))
    backups = [op.backup for op in plan_ops if op.backup]
    if backups:
        actions.append(Action("backup", show(BACKUP_DIR), ", ".join(show(path) for path in backups)))
    for source in layout.sources:
        counts = {kind: 0 for kind in KINDS}
        for op in plan_ops:
            if op.src == source.path or op.src.startswith(source.path + "/"):
                counts[op.kind] += 1
        actions.append(Action("merge", show(source.path), "into %s: %s" % (show(source.dst), _summary(counts))))
    for source in layout.sources:
        actions.append(Action("replace_with_symlink", show(source.path),
                              "-> %s (atomic exchange, then the old directory is removed)" % source.link_text))
    for path, text in layout.new_links:
        actions.append(Action("symlink", show(path), "-> %s" % text))
    return tuple(actions)


def plan_usrmerge(request: Request, observed: Observed) -> Plan:
    """Classify every entry of every source directory and decide every change, before any is made."""
    layout = plan_layout(request, observed.tops, observed.links)
    cleanup = plan_cleanup(observed)
    classifier = _Classifier(request, observed, layout)
    for source in layout.sources:
        classifier.merge(source.path, source.dst, observed.trees[source.path])
    ops = tuple(classifier.ops)
    converting = bool(layout.sources or layout.new_links)
    if converting and observed.skip_flag_problem and request.skip_flag != "keep":
        raise UsrMergeError("root: %s, nothing was changed (skip_flag=keep merges without looking)"
                            % observed.skip_flag_problem)
    if converting and observed.skip_flag and request.skip_flag == "honour":
        raise ParameterError("skip_flag", "%s exists (debootstrap's request to keep /usr split); set skip_flag=remove "
                             "or keep to merge anyway" % show(SKIP_FLAG))
    if observed.mounts_inside and (layout.sources or cleanup):
        raise UsrMergeError("%s is a mount point inside a directory this run would move or remove; unmount it "
                            "first (nothing was changed)" % ", ".join(show(path) for path in observed.mounts_inside),
                            extra=dict(mounts=[show(path) for path in observed.mounts_inside]))
    if any(op.backup for op in ops) and observed.backup_problem:
        raise UsrMergeError("cannot save replaced entries: %s" % observed.backup_problem)
    counts = {kind: sum(1 for op in ops if op.kind == kind) for kind in KINDS}
    counts["conflict"] = len(classifier.conflicts)
    copies = [op for op in ops if op.create == "copy"]
    created = [op for op in ops if op.create]
    remove_flag = converting and observed.skip_flag and request.skip_flag == "remove"
    return Plan(
        layout=layout,
        ops=ops,
        conflicts=tuple(classifier.conflicts),
        overrides=dict(classifier.overrides),
        cleanup=cleanup,
        remove_skip_flag=remove_flag,
        needed_bytes=sum(-(-copied_bytes(op.node) // BLOCK) * BLOCK for op in copies)
        + BLOCK * sum(1 for op in created if op.create == "mkdir"),
        needed_inodes=len(created),
        counts=counts,
        actions=_actions(ops, layout, cleanup, remove_flag),
    )
