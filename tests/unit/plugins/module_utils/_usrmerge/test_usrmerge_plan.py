# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The usrmerge planner over synthetic lstat snapshots: one case per kind of entry, and its refusals."""

from __future__ import annotations

import hashlib
import typing as t
from dataclasses import replace

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    ALLOWED, Node, Observed, Request, UsrMergeError, canonical, describe, meaning, relative, relocated_text, value,
)
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.plan import identical, plan_usrmerge
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.render import (
    check_space, layout_state, predicted_tops, remaining_work, symlinks,
)

ROOT_DEV = 1
USR_DEV = 2
_inodes = iter(range(1000, 100000))


def F(content: str = "x", mode: int = 0o755, uid: int = 0, dev: int = ROOT_DEV, ino: int = 0, xattrs: str = "",
      size: int = 100) -> Node:
    digest = hashlib.sha256(content.encode()).hexdigest()
    return Node("file", mode, uid, 0, dev, ino or next(_inodes), size, digest=digest, xattrs=xattrs)


def L(target: str, resolves_to: Node | None = None, physical: str = "") -> Node:
    """A symlink; resolves_to None means dangling."""
    resolved = value(resolves_to) if resolves_to is not None else "missing /" + target.lstrip("/")
    return Node("link", 0o777, target=target, resolved=resolved, resolved_path=physical if resolves_to else "",
                ino=next(_inodes), dev=ROOT_DEV)


def D(mode: int = 0o755, uid: int = 0, dev: int = ROOT_DEV, **children: Node) -> Node:
    return Node("dir", mode, uid, 0, dev, next(_inodes), children=children)


def special(kind: str = "fifo", rdev: int = 0, dev: int = ROOT_DEV) -> Node:
    return Node(kind, 0o644, dev=dev, ino=next(_inodes), rdev=rdev)


def flatten(prefix: str, node: Node) -> t.Iterator[tuple[str, Node]]:
    yield prefix, node
    for name, child in (node.children or {}).items():
        yield from flatten(prefix + "/" + name, child)


def observed(root: t.Mapping[str, Node], usr: t.Mapping[str, Node] | None = None,
             links: t.Mapping[str, str] | None = None, **extra: t.Any) -> Observed:
    usr = {"bin": D(dev=USR_DEV), "sbin": D(dev=USR_DEV), "lib": D(dev=USR_DEV)} if usr is None else usr
    tops: dict[str, Node | None] = {"usr": D(dev=USR_DEV)}
    usr_nodes = {}
    for name in ALLOWED:
        tops[name] = root.get(name)
        tops["usr/" + name] = usr.get(name)
        if name in usr:
            usr_nodes.update(flatten("usr/" + name, usr[name]))
    trees = {name: node for name, node in root.items() if node.kind == "dir"}
    if "sbin" in usr and usr["sbin"].kind == "dir":
        trees["usr/sbin"] = usr["sbin"]
    return Observed(tops=tops, links=dict(links or {}), trees=trees, usr_nodes=usr_nodes, **extra)


def plan(root: t.Mapping[str, Node], usr: t.Mapping[str, Node] | None = None, conflicts: str = "fail",
         **kwargs: t.Any) -> t.Any:
    request = Request("/r", kwargs.pop("directories", None), merge_sbin=kwargs.pop("merge_sbin", False),
                      conflicts=conflicts, skip_flag=kwargs.pop("skip_mode", "remove"))
    return plan_usrmerge(request, observed(root, usr, **kwargs))


def ops(result: t.Any) -> list[tuple[str, str, str]]:
    return [(op.kind, op.src, op.create) for op in result.ops]


def only(result: t.Any, kind: str) -> t.Any:
    found = [op for op in result.ops if op.kind == kind]
    assert len(found) == 1, ops(result)
    return found[0]


# --- one case per kind of entry ---------------------------------------------------------------------------------

def test_move_is_a_hard_link_on_the_same_filesystem_and_a_copy_across() -> None:
    same = plan({"bin": D(cat=F())}, {"bin": D(dev=ROOT_DEV)})
    move = only(same, "move")
    assert (move.src, move.dst, move.create, move.replace_src, move.over) == ("bin/cat", "usr/bin/cat", "link",
                                                                              True, False)
    assert same.needed_bytes == 0 and same.needed_inodes == 1
    across = plan({"bin": D(cat=F(size=5000))})
    assert only(across, "move").create == "copy"
    assert across.needed_bytes == 8192, "rounded up to whole blocks"


def test_a_sparse_copy_needs_its_allocated_blocks_only() -> None:
    sparse = replace(F(size=256 * 1048576), allocated=1048576 + 512)
    assert plan({"bin": D(big=sparse)}).needed_bytes == 1048576 + 4096
    preallocated = replace(F(size=5000), allocated=65536)
    assert plan({"bin": D(big=preallocated)}).needed_bytes == 8192, "never more than the apparent size"


def test_move_of_special_files() -> None:
    assert only(plan({"lib": D(fifo=special())}, {"lib": D(dev=ROOT_DEV)}), "move").create == "link"
    assert only(plan({"lib": D(fifo=special())}), "move").create == "special"


def test_move_symlink_keeps_its_text_or_is_rewritten_when_it_leaves_its_directory() -> None:
    bin_dir = D(sh=L("dash", F()), pidof=L("/sbin/killall5", F()), cfg=L("../etc/x", F()), lib=L("../lib/libc.so", F()))
    result = plan({"bin": bin_dir, "lib": D()})
    texts = {op.src: op.symlink_text for op in result.ops if op.kind == "move_symlink"}
    assert texts == {"bin/sh": "dash", "bin/pidof": "/sbin/killall5", "bin/cfg": "../../etc/x",
                     "bin/lib": "../lib/libc.so"}, "lib is merged too: usr/bin/../lib is the same place"
    alone = plan({"bin": D(lib=L("../lib/libc.so", F()))})
    assert only(alone, "move_symlink").symlink_text == "../../lib/libc.so", "lib stays: point at it"
    assert all(not op.replace_src for op in result.ops), "a symlink stays where it is until its directory goes"


def test_make_directory_recurses_into_an_absent_destination() -> None:
    result = plan({"lib": D(terminfo=D(x=D(xterm=F())), mode=0o755)})
    assert ops(result) == [("merge_directory", "lib", ""), ("make_directory", "lib/terminfo", "mkdir"),
                           ("make_directory", "lib/terminfo/x", "mkdir"), ("move", "lib/terminfo/x/xterm", "copy")]
    assert result.needed_bytes == 4096 + 2 * 4096 and result.needed_inodes == 3


def test_make_directory_for_a_missing_usr_top_directory() -> None:
    result = plan({"lib64": D(ld=L("/lib/x86_64-linux-gnu/ld", F()))})
    assert ops(result)[:2] == [("make_directory", "lib64", "mkdir"), ("move_symlink", "lib64/ld", "symlink")]
    assert result.layout.sources[0].dst == "usr/lib64" and result.layout.sources[0].link_text == "usr/lib64"


def test_merge_directory_with_equal_metadata() -> None:
    result = plan({"lib": D(systemd=D(a=F()))}, {"lib": D(dev=USR_DEV, systemd=D(dev=USR_DEV))})
    assert [op.kind for op in result.ops] == ["merge_directory", "merge_directory", "move"]
    assert not result.conflicts


def test_identical_duplicates_are_deduplicated() -> None:
    twin = F("same")
    result = plan({"bin": D(cat=twin)}, {"bin": D(dev=USR_DEV, cat=F("same", dev=USR_DEV))})
    duplicate = only(result, "duplicate")
    assert duplicate.replace_src and not duplicate.create and result.counts["duplicate"] == 1
    hard_linked = plan({"bin": D(cat=twin)}, {"bin": D(dev=ROOT_DEV, cat=twin)})
    assert only(hard_linked, "duplicate").replace_src, "the same inode (an interrupted run's hard link)"


@pytest.mark.parametrize("root_link, usr_entry", [
    (L("../usr/bin/foo", F()), F()),  # our own per-file link from an interrupted run
    (L("/usr/bin/foo", F()), F()),
    (L("/bin/bash", F("bash")), L("../../bin/bash", F("bash"))),  # absolute vs relative form of one target
    (L("bash", F("bash")), L("bash", F("bash"))),
    (L("/etc/alternatives/foo", F("same")), F("same")),  # resolves to identical content
    (L("/usr/bin/foo", D()), D(dev=USR_DEV)),
], ids=["resume", "absolute", "absolute-vs-relative", "same-text", "same-content", "to-usr-directory"])
def test_equivalent_symlinks_need_nothing(root_link: Node, usr_entry: Node) -> None:
    result = plan({"bin": D(foo=root_link), "lib": D(foo=L("/usr/lib/foo", D()))},
                  {"bin": D(dev=USR_DEV, foo=usr_entry, bash=F("bash")), "lib": D(dev=USR_DEV, foo=D(dev=USR_DEV))})
    assert result.counts["equivalent_symlink"] == 2 and not result.conflicts, ops(result)
    assert all(not op.create and not op.replace_src for op in result.ops)


def test_equivalent_symlink_that_dangles_until_the_merge() -> None:
    deep = F("deep")
    usr_dangles = plan({"lib": D(link=L("x/z", deep), x=D(z=deep))}, {"lib": D(dev=USR_DEV, link=L("x/z"))})
    assert usr_dangles.overrides == {"usr/lib/link": value(deep)}, "an interrupted run's link, target not moved yet"
    root_dangles = plan({"bin": D(foo=L("bar"))}, {"bin": D(dev=USR_DEV, foo=L("bar", F("bar")))})
    assert only(root_dangles, "equivalent_symlink") and root_dangles.overrides == {"bin/foo": value(F("bar"))}


def test_symlink_in_usr_pointing_back_is_replaced_by_the_file() -> None:
    touch = F("touch")
    result = plan({"bin": D(touch=touch)}, {"bin": D(dev=ROOT_DEV, touch=L("/bin/touch", touch, "bin/touch"))})
    op = only(result, "points_back")
    assert (op.create, op.over, op.replace_src) == ("link", True, True)
    linked = plan({"bin": D(sh=L("dash", F()))}, {"bin": D(dev=USR_DEV, sh=L("../../bin/sh", F()))})
    op = only(linked, "points_back")
    assert (op.create, op.symlink_text, op.over, op.replace_src) == ("symlink", "dash", True, False)


def test_symlink_pointing_back_to_a_directory_cannot_be_merged() -> None:
    result = plan({"lib": D(foo=D())}, {"lib": D(dev=USR_DEV, foo=L("/lib/foo", D()))}, conflicts="prefer_root")
    assert [c.problem for c in result.blocking] == [
        "/usr/lib/foo is a symlink to the directory /lib/foo; prefer_root cannot resolve this, move one of them "
        "away by hand"]


def test_dangling_symlinks_never_win() -> None:
    root_dangles = plan({"bin": D(foo=L("nowhere"))}, {"bin": D(dev=USR_DEV, foo=F("real"))})
    op = only(root_dangles, "broken_symlink")
    assert (op.backup, op.create, op.replace_src) == ("bin/foo", "", False)
    assert root_dangles.overrides == {"bin/foo": value(F("real"))} and not root_dangles.conflicts
    usr_dangles = plan({"bin": D(foo=F("real"))}, {"bin": D(dev=USR_DEV, foo=L("gone"))})
    op = only(usr_dangles, "broken_symlink")
    assert (op.backup, op.create, op.over, op.replace_src) == ("usr/bin/foo", "copy", True, True)
    into_dir = plan({"lib": D(foo=L("gone"))}, {"lib": D(dev=USR_DEV, foo=D(dev=USR_DEV))})
    assert only(into_dir, "broken_symlink").backup == "lib/foo"
    self_loop = plan({"bin": D(foo=L("/usr/bin/foo"))})
    op = only(self_loop, "broken_symlink")
    assert (op.create, op.backup) == ("", ""), "a link to its own destination would become a loop: dropped"
    onto_link = plan({"bin": D(foo=L("nowhere"))}, {"bin": D(dev=USR_DEV, foo=L("real", F()))})
    assert only(onto_link, "broken_symlink").backup == "bin/foo"
    both = plan({"bin": D(foo=L("a"))}, {"bin": D(dev=USR_DEV, foo=L("b"))})
    assert [c.problem.split(" (")[0] for c in both.blocking] == ["both exist and differ"]


# --- conflicts ----------------------------------------------------------------------------------------------------

DIFFERING = ({"bin": D(cat=F("root cat"), ls=F("root ls"))},
             {"bin": D(dev=USR_DEV, cat=F("usr cat", dev=USR_DEV), ls=F("usr ls", dev=USR_DEV))})


def test_conflicts_fail_lists_every_pair() -> None:
    result = plan(*DIFFERING)
    assert [(c.path, c.usr_path, c.resolution) for c in result.blocking] == [
        ("/bin/cat", "/usr/bin/cat", "fail"), ("/bin/ls", "/usr/bin/ls", "fail")]
    assert result.counts["conflict"] == 2 and result.conflicts[0].as_dict()["problem"].startswith("both exist")


def test_prefer_usr_saves_the_root_entry() -> None:
    result = plan(*DIFFERING, conflicts="prefer_usr")
    assert not result.blocking
    cat = [op for op in result.ops if op.src == "bin/cat"][0]
    assert (cat.kind, cat.backup, cat.create, cat.replace_src) == ("conflict", "bin/cat", "", True)
    assert result.overrides["bin/cat"] == value(F("usr cat", dev=USR_DEV))
    assert result.conflicts[0].resolution == "keep /usr/bin/cat, save /bin/cat under /var/lib/usrmerge-backup"


def test_prefer_root_saves_the_usr_entry_and_replaces_it() -> None:
    result = plan(*DIFFERING, conflicts="prefer_root")
    cat = [op for op in result.ops if op.src == "bin/cat"][0]
    assert (cat.backup, cat.create, cat.over, cat.replace_src) == ("usr/bin/cat", "copy", True, True)
    assert result.overrides["usr/bin/cat"] == value(F("root cat"))
    assert result.needed_bytes == 2 * 4096
    assert any(action.action == "backup" for action in result.actions)


@pytest.mark.parametrize("root_entry, usr_entry, problem", [
    (F(mode=0o755), F(mode=0o4755, dev=USR_DEV), "differ"),
    (F(uid=0), F(uid=1000, dev=USR_DEV), "differ"),
    (F(xattrs="cap"), F(dev=USR_DEV), "differ"),
    (special("char", 5), special("char", 6, dev=USR_DEV), "differ"),
    (L("a", F("a")), L("b", F("b")), "differ"),
    (L("a", F("a")), F("b", dev=USR_DEV), "differ"),
    (F("a"), L("b", F("b")), "differ"),
])
def test_differences_that_are_conflicts(root_entry: Node, usr_entry: Node, problem: str) -> None:
    result = plan({"bin": D(x=root_entry)}, {"bin": D(dev=USR_DEV, x=usr_entry)})
    assert len(result.blocking) == 1 and problem in result.blocking[0].problem


def test_directory_versus_non_directory() -> None:
    root_dir = ({"lib": D(x=D())}, {"lib": D(dev=USR_DEV, x=F(dev=USR_DEV))})
    for mode in ("fail", "prefer_usr", "prefer_root"):
        assert plan(*root_dir, conflicts=mode).blocking[0].problem.startswith("/lib/x is a directory and /usr/lib/x")
    usr_dir = ({"lib": D(x=F())}, {"lib": D(dev=USR_DEV, x=D(dev=USR_DEV))})
    assert plan(*usr_dir, conflicts="prefer_root").blocking
    resolved = plan(*usr_dir, conflicts="prefer_usr")
    assert not resolved.blocking and [op.kind for op in resolved.ops] == ["merge_directory", "conflict"]
    linked = ({"lib": D(x=L("elsewhere", F()))}, {"lib": D(dev=USR_DEV, x=D(dev=USR_DEV))})
    assert plan(*linked).blocking and not plan(*linked, conflicts="prefer_usr").blocking
    onto_link = ({"lib": D(x=D())}, {"lib": D(dev=USR_DEV, x=L("elsewhere", F()))})
    assert plan(*onto_link, conflicts="prefer_usr").blocking


def test_directory_metadata_conflict() -> None:
    tree = ({"lib": D(x=D(mode=0o750))}, {"lib": D(dev=USR_DEV, x=D(mode=0o755, dev=USR_DEV))})
    assert "modes or owners differ" in plan(*tree).blocking[0].problem
    usr_wins = plan(*tree, conflicts="prefer_usr")
    assert not usr_wins.blocking and usr_wins.conflicts[0].resolution == "keep the mode and owner of /usr/lib/x"
    assert usr_wins.overrides == {"lib/x": "dir mode=0755 owner=0:0"}
    root_wins = plan(*tree, conflicts="prefer_root")
    assert [op.chmod_dst for op in root_wins.ops if op.kind == "conflict"] == [True]
    assert root_wins.overrides == {"usr/lib/x": "dir mode=0750 owner=0:0"}


# --- layout: which directories, where to -----------------------------------------------------------------------------

def test_default_directories_are_the_real_ones() -> None:
    result = plan({"bin": D(), "lib64": L("usr/lib", D())}, links={"lib64": "usr/lib"})
    assert [source.path for source in result.layout.sources] == ["bin"]
    assert result.layout.mapping == {"bin": "usr/bin", "lib64": "usr/lib"}


def test_merged_root_is_an_empty_plan() -> None:
    merged = {name: L("usr/" + name, D()) for name in ("bin", "sbin", "lib")}
    result = plan(merged, links={"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib"}, skip_flag=True)
    assert result.empty and not result.actions and not result.remove_skip_flag
    assert remaining_work(result) == []


def test_foreign_top_level_symlinks() -> None:
    foreign = {"bin": L("/opt/bin", D())}
    assert "left alone" in plan(foreign, links={"bin": "opt/bin"}).layout.warnings[0]
    with pytest.raises(ParameterError, match="^directories: /bin is a symlink to /opt/bin"):
        plan(foreign, links={"bin": "opt/bin"}, directories=("bin",))


def test_explicit_directories() -> None:
    result = plan({"bin": D(), "sbin": D()}, {"bin": D(dev=USR_DEV), "lib32": D(dev=USR_DEV)},
                  directories=("bin", "lib32", "libx32"))
    assert [source.path for source in result.layout.sources] == ["bin"]
    assert result.layout.new_links == (("lib32", "usr/lib32"),)
    assert ("symlink", "/lib32") in [(action.action, action.target) for action in result.actions]
    with pytest.raises(ParameterError, match="^directories: /lib is a file, not a directory"):
        plan({"lib": F()}, directories=("lib",))


def test_destination_that_is_a_symlink_or_a_file() -> None:
    result = plan({"lib64": D(x=F())}, {"lib": D(dev=USR_DEV), "lib64": L("lib", D())}, links={"usr/lib64": "usr/lib"})
    assert result.layout.sources[0].dst == "usr/lib" and result.ops[-1].dst == "usr/lib/x"
    with pytest.raises(ParameterError, match=r"^directories: /usr/lib64 cannot receive /lib64: it is a link to x"):
        plan({"lib64": D()}, {"lib64": L("x")})
    with pytest.raises(ParameterError, match=r"^directories: /usr/bin cannot receive /bin: it is a file"):
        plan({"bin": D()}, {"bin": F()})


def test_usr_must_be_a_directory() -> None:
    broken = observed({"bin": D()})
    tops = dict(broken.tops)
    tops["usr"] = None
    with pytest.raises(ParameterError, match="^root: /r/usr must be a directory, it is missing"):
        plan_usrmerge(Request("/r", None), Observed(tops=tops, links={}))


def test_merge_sbin_folds_three_directories_into_usr_bin() -> None:
    same = F("ip")
    result = plan({"bin": D(ip=same), "sbin": D(ip=L("/bin/ip", same), fsck=F())},
                  {"bin": D(dev=USR_DEV), "sbin": D(dev=USR_DEV, useradd=F(dev=USR_DEV))}, merge_sbin=True)
    assert [(s.path, s.dst, s.link_text) for s in result.layout.sources] == [
        ("usr/sbin", "usr/bin", "bin"), ("bin", "usr/bin", "usr/bin"), ("sbin", "usr/bin", "usr/bin")]
    assert [(op.kind, op.dst) for op in result.ops if op.kind != "merge_directory"] == [
        ("move", "usr/bin/useradd"), ("move", "usr/bin/ip"), ("move", "usr/bin/fsck"),
        ("equivalent_symlink", "usr/bin/ip")]
    clash = plan({"bin": D(x=F("bin"))}, {"bin": D(dev=USR_DEV), "sbin": D(dev=USR_DEV, x=F("usr sbin"))},
                 merge_sbin=True, conflicts="prefer_root")
    assert clash.conflicts[0].path == "/bin/x" and clash.overrides["usr/bin/x"] == value(F("bin"))


def test_merge_sbin_on_a_merged_usr() -> None:
    result = plan({"sbin": L("usr/sbin", D())}, {"bin": D(dev=USR_DEV), "sbin": D(dev=USR_DEV, x=F(dev=USR_DEV))},
                  links={"sbin": "usr/sbin"}, merge_sbin=True)
    assert [s.path for s in result.layout.sources] == ["usr/sbin"]
    assert canonical("sbin/x", result.layout.mapping) == "usr/bin/x"
    absent = plan({}, {"bin": D(dev=USR_DEV)}, merge_sbin=True)
    assert absent.layout.new_links == (("usr/sbin", "bin"),)
    assert predicted_tops(absent, {})["usr/sbin"] == Node("link", target="bin")
    done = plan({}, {"bin": D(dev=USR_DEV), "sbin": L("bin", D())}, links={"usr/sbin": "usr/bin"}, merge_sbin=True)
    assert done.empty
    implied = plan({"bin": D(), "sbin": D()}, directories=("bin",), merge_sbin=True)
    assert [source.path for source in implied.layout.sources] == ["usr/sbin", "bin", "sbin"], "implies sbin"
    with pytest.raises(ParameterError, match="^merge_sbin: /usr/sbin is a link that does not resolve"):
        plan({}, {"bin": D(), "sbin": L("/opt")}, merge_sbin=True)


def test_skip_flag() -> None:
    tree = {"bin": D()}
    removed = plan(tree, skip_flag=True)
    assert removed.remove_skip_flag and removed.actions[0].action == "remove_skip_flag"
    assert remaining_work(removed)[-1] == "/etc/unsupported-skip-usrmerge-conversion"
    assert not plan(tree, skip_flag=True, skip_mode="keep").remove_skip_flag
    with pytest.raises(ParameterError, match="^skip_flag: /etc/unsupported-skip-usrmerge-conversion exists"):
        plan(tree, skip_flag=True, skip_mode="honour")


@pytest.mark.parametrize("mode", ["remove", "honour"])
def test_skip_flag_that_cannot_be_looked_for_refuses_unless_kept(mode: str) -> None:
    problem = "/r/etc is a symlink to /elsewhere; refusing to follow it to look for the flag"
    with pytest.raises(UsrMergeError, match="^root: /r/etc is a symlink to /elsewhere; .*, nothing was changed "
                                            r"\(skip_flag=keep merges without looking\)$"):
        plan({"bin": D()}, skip_flag_problem=problem, skip_mode=mode)
    assert plan({"bin": D()}, skip_flag_problem=problem, skip_mode="keep").layout.sources
    merged = {name: L("usr/" + name, D()) for name in ("bin", "sbin", "lib")}
    assert plan(merged, links={"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib"}, skip_flag_problem=problem,
                skip_mode=mode).empty, "a merged root needs no look at the flag"


# --- leftovers of an interrupted run -----------------------------------------------------------------------------

def test_leftovers_are_recognised() -> None:
    leftovers = {
        ".usrmerge~bin": D(sh=L("dash"), x=D(y=L("../y"))),
        ".usrmerge~probe-1": L(".usrmerge~probe-1"),
        "usr/bin/.usrmerge~cat": F(),
        "usr/.usrmerge~lib64": D(),
    }
    result = plan({"bin": L("usr/bin", D())}, links={"bin": "usr/bin"}, leftovers=leftovers)
    assert [(item.path, item.how) for item in result.cleanup] == [
        (".usrmerge~bin", "rmtree"), (".usrmerge~probe-1", "unlink"), ("usr/.usrmerge~lib64", "rmtree"),
        ("usr/bin/.usrmerge~cat", "unlink")]
    assert "old directory of /bin" in result.cleanup[0].why and not result.empty
    assert remaining_work(result) == ["/.usrmerge~bin", "/.usrmerge~probe-1", "/usr/.usrmerge~lib64",
                                      "/usr/bin/.usrmerge~cat"]


def test_a_leftover_directory_holding_files_is_not_removed() -> None:
    with pytest.raises(UsrMergeError, match=r"/\.usrmerge~bin, left by an interrupted run, still holds /\.usrmerge~bin/cat"):
        plan({"bin": L("usr/bin", D())}, links={"bin": "usr/bin"}, leftovers={".usrmerge~bin": D(cat=F())})


def test_backups_need_a_safe_place() -> None:
    with pytest.raises(UsrMergeError, match="cannot save replaced entries: /var is a link"):
        plan(*DIFFERING, conflicts="prefer_usr", backup_problem="/var is a link, not a directory")


# --- space, state and helpers ------------------------------------------------------------------------------------

def test_space_is_checked_in_the_filesystem_holding_usr() -> None:
    tree = {"bin": D(big=F(size=10 * 1048576))}
    check_space(plan(tree), observed(tree, usr_free=11 * 1048576), "/r")
    with pytest.raises(ParameterError, match=r"^root: the filesystem holding /r/usr has 1\.0 MiB .* needs 10\.0 MiB"):
        check_space(plan(tree), observed(tree, usr_free=1048576), "/r")
    with pytest.raises(ParameterError, match="^root: the filesystem holding /r/usr has 0 free inodes"):
        check_space(plan(tree), observed(tree, usr_free_inodes=0), "/r")


def test_state_rendering() -> None:
    tree = {"bin": D(cat=F()), "lib64": D()}
    result = plan(tree)
    before = observed(tree).tops
    assert layout_state(before, ("bin", "lib32", "lib64")) == {
        "/bin": "directory", "/lib32": "absent", "/lib64": "directory"}
    after = predicted_tops(result, before)
    assert layout_state(after, ("bin", "lib64")) == {"/bin": "symlink -> usr/bin", "/lib64": "symlink -> usr/lib64"}
    assert symlinks(after, Request("/r", None)) == {"/bin": "usr/bin", "/lib64": "usr/lib64"}
    assert layout_state({"bin": F()}, ("bin",)) == {"/bin": "file"}
    assert [action.action for action in result.actions] == ["merge", "merge", "replace_with_symlink",
                                                            "replace_with_symlink"]
    assert result.actions[0].detail == "into /usr/bin: 1 move, 1 merge directory"


def test_path_helpers() -> None:
    mapping = {"bin": "usr/bin", "sbin": "usr/sbin", "usr/sbin": "usr/bin"}
    assert canonical("sbin/x", mapping) == "usr/bin/x" and canonical("etc/x", mapping) == "etc/x"
    assert canonical("bin", mapping) == "usr/bin"
    assert canonical("a/x", {"a": "b", "b": "a"}) in ("a/x", "b/x"), "a cyclic mapping ends"
    assert meaning("bin/foo", "../../../etc/./x", mapping) == "etc/x", "'..' stops at the root"
    assert meaning("usr/bin/foo", "/bin/bar", mapping) == "usr/bin/bar"
    assert relative("usr/bin/foo", "bin") == "../usr/bin/foo" and relative("bin", "bin") == "."
    assert relocated_text("bin/x", "usr/bin/x", "../etc/x", mapping) == "../../etc/x"
    assert relocated_text("bin/x", "usr/bin/x", "/etc/x", mapping) == "/etc/x"


def test_values_and_identity() -> None:
    assert describe("file", 0o4755, 0, 0, "ab", "cd") == "file sha256=ab mode=4755 owner=0:0 xattrs=cd"
    assert describe("char", 0o600, 0, 5, rdev=259) == "char rdev=259 mode=0600 owner=0:5"
    assert describe("fifo", 0o644, 1, 1) == "fifo mode=0644 owner=1:1"
    unhashed = Node("file", 0o644, ino=1, dev=1)
    assert not identical(unhashed, Node("file", 0o644, ino=2, dev=1)), "no digest, no proof"
    assert identical(special("fifo"), special("fifo"))
