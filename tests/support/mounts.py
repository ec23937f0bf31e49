# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a namespace's mount table from the raw mountinfo fields (proc(5)), independently of the modules'
parser: an oracle that reused plugins' stack_at would agree with any bug in it."""

from __future__ import annotations

import typing as t

from support.namespace import MountNamespace


class Layer(t.NamedTuple):
    mount_id: int
    parent_id: int
    root: str
    mountpoint: str
    read_only: bool  # "ro" among the per-mount options (field 6)
    fstype: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo.
    out, index = [], 0
    while index < len(field):
        if field[index] == "\\" and field[index + 1:index + 4].isdigit():
            out.append(chr(int(field[index + 1:index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def layers(text: str) -> list[Layer]:
    found = []
    for line in text.split("\n"):  # only "\n" ends a line (see issue 17)
        if not line:
            continue
        fields = line.split(" ")
        after = fields.index("-")
        found.append(Layer(int(fields[0]), int(fields[1]), _unescape(fields[3]), _unescape(fields[4]),
                           "ro" in fields[5].split(","), fields[after + 1]))
    return found


def stack(ns: MountNamespace, path: str) -> tuple[Layer, ...]:
    """The mounts stacked on path inside ns, bottom first: each layer is the child of the one below it."""
    here = [layer for layer in layers(ns.mountinfo()) if layer.mountpoint == path]
    ids = {layer.mount_id for layer in here}
    chain = [layer for layer in here if layer.parent_id not in ids][-1:]
    while chain:
        above = [layer for layer in here if layer.parent_id == chain[-1].mount_id]
        if not above:
            break
        chain.append(above[-1])
    return tuple(chain)


def describe(ns: MountNamespace, path: str) -> list[tuple[str, str, bool]]:
    """(fstype, fs root, read-only) of each layer on path: compact for assertions."""
    return [(layer.fstype, layer.root, layer.read_only) for layer in stack(ns, path)]
