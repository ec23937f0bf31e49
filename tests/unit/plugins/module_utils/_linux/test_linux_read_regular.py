# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import errno
import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.fs import read_regular


def test_reads_up_to_the_limit_exactly(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x" * 10)
    assert read_regular(str(path), 10) == b"x" * 10
    with pytest.raises(OSError) as error:
        read_regular(str(path), 9)
    assert error.value.errno == errno.EFBIG


@pytest.mark.parametrize("kind,expected", [("fifo", errno.EINVAL), ("directory", errno.EINVAL),
                                           ("symlink", errno.ELOOP), ("missing", errno.ENOENT)])
def test_refuses_what_is_not_a_regular_file_without_blocking(tmp_path: pathlib.Path, kind: str,
                                                             expected: int) -> None:
    path = tmp_path / kind
    (tmp_path / "target").write_text("data")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        path.symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as error:
        read_regular(str(path), 100)
    assert error.value.errno == expected
