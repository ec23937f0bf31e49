# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: the state it returns and the checks on the plan's size."""

from __future__ import annotations

import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import (
    ALLOWED, Node, Observed, Plan, Request, SKIP_FLAG, show,
)


def check_space(plan: Plan, observed: Observed, root: str) -> None:
    """Refuse before the first change when the filesystem holding usr cannot take the copies."""
    if observed.usr_free >= 0 and plan.needed_bytes > observed.usr_free:
        raise ParameterError("root", "the filesystem holding %s/usr has %s available but the merge needs %s "
                             "(files are copied where /usr is another filesystem); nothing was changed" % (
                                 root.rstrip("/"), _size(observed.usr_free), _size(plan.needed_bytes)))
    if observed.usr_free_inodes >= 0 and plan.needed_inodes > observed.usr_free_inodes:
        raise ParameterError("root", "the filesystem holding %s/usr has %d free inodes but the merge creates %d; "
                             "nothing was changed" % (root.rstrip("/"), observed.usr_free_inodes, plan.needed_inodes))


def _size(number: int) -> str:
    return "%.1f MiB (%d bytes)" % (number / 1048576.0, number)


def layout_state(tops: t.Mapping[str, Node | None], names: t.Iterable[str]) -> dict[str, str]:
    """Each top-level path as a word: directory, absent, or 'symlink -> TEXT'."""
    state = {}
    for name in names:
        node = tops.get(name)
        if node is None:
            state[show(name)] = "absent"
        elif node.kind == "link":
            state[show(name)] = "symlink -> %s" % node.target
        else:
            state[show(name)] = "directory" if node.kind == "dir" else node.kind
    return state


def predicted_tops(plan: Plan, tops: t.Mapping[str, Node | None]) -> dict[str, Node | None]:
    """The top-level entries as the plan leaves them."""
    after = dict(tops)
    for source in plan.layout.sources:
        after[source.path] = Node("link", target=source.link_text)
        if after.get(source.dst) is None:
            after[source.dst] = Node("dir")
    for path, text in plan.layout.new_links:
        after[path] = Node("link", target=text)
    return after


def shown_names(request: Request) -> tuple[str, ...]:
    return ALLOWED + (("usr/sbin",) if request.merge_sbin else ())


def symlinks(tops: t.Mapping[str, Node | None], request: Request) -> dict[str, str]:
    return {show(name): node.target for name in shown_names(request)
            for node in [tops.get(name)] if node is not None and node.kind == "link"}


def remaining_work(plan: Plan) -> list[str]:
    """What a plan made after the run still wants to do: empty when the root is merged."""
    work = [show(source.path) for source in plan.layout.sources]
    work += [show(path) for path, _text in plan.layout.new_links]
    work += [show(item.path) for item in plan.cleanup]
    if plan.remove_skip_flag:
        work.append(show(SKIP_FLAG))
    return work
