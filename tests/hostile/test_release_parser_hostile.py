# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The release-file parser on huge input: linear time (measured as a ratio, never as an absolute time), capped reads."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from ansible_collections.immutable.root.plugins.module_utils._sysext.release import (
    MAX_RELEASE_BYTES, parse_env_pairs, read_release_bytes,
)

NEEDS_ROOT = False

SHAPES = {
    "bare": lambda n: b"ID=debian\nA=" + b"y" * n + b"\n",
    "double": lambda n: b'A="' + b"x" * n + b'"\n',
    "comment": lambda n: b"#" + b"c" * n + b"\nA=1\n",
    "spaces": lambda n: b"A=" + b"y " * (n // 2) + b"\n",
    "escapes": lambda n: b'A="' + b"\\q" * (n // 2) + b'"\n',
}


def _seconds(data: bytes) -> float:
    best = float("inf")
    for _attempt in range(5):
        start = time.perf_counter()
        parse_env_pairs(data)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_parsing_time_grows_linearly(shape: str) -> None:
    # The small input must take long enough to measure above fixed costs and timer noise.
    size = 50_000
    while _seconds(SHAPES[shape](size)) < 0.02 and size < 2_000_000:
        size *= 2
    small, large = _seconds(SHAPES[shape](size)), _seconds(SHAPES[shape](size * 8))
    # Eight times the input: a linear parser takes ~8x the time (more on a busy machine, and with caches
    # outgrown), the quadratic one took 64x and more.
    assert large / small < 40, "%s: 8x the input (%d bytes) took %.1fx the time" % (shape, size, large / small)


def test_a_5_mb_value_parses_whole() -> None:
    assert len(parse_env_pairs(b"A=" + b"v" * 5_000_000 + b"\n")["A"]) == 5_000_000


def test_release_reads_are_capped_and_regular_files_only(tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"A=" + b"x" * MAX_RELEASE_BYTES)
    with pytest.raises(OSError, match="larger than"):
        read_release_bytes(str(big))
    exact = tmp_path / "exact"
    exact.write_bytes(b"A=" + b"x" * (MAX_RELEASE_BYTES - 3) + b"\n")
    assert len(read_release_bytes(str(exact))) == MAX_RELEASE_BYTES
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_release_bytes(str(fifo))
    link = tmp_path / "link"
    link.symlink_to(exact)
    with pytest.raises(OSError):
        read_release_bytes(str(link))
    with pytest.raises(OSError, match="not a regular file"):
        read_release_bytes("/dev/zero")
