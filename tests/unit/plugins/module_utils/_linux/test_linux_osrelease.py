# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.immutable.root.plugins.module_utils._linux.osrelease import (
    ReleaseFileError, parse_release, read_os_release, render_release,
)

# Debian 12's /usr/lib/os-release, as shipped.
DEBIAN = '''PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
'''


def test_debian_os_release() -> None:
    values = parse_release(DEBIAN)
    assert values["ID"] == "debian" and values["VERSION_ID"] == "12"
    assert values["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_quoting_escapes_and_comments() -> None:
    text = "# comment\n\nA='single $quoted'\nB=\"with \\\"escape\\\" and \\$dollar\"\nC=plain\n  D = x\n"
    with pytest.raises(ReleaseFileError):
        parse_release(text)
    values = parse_release(text.replace("  D = x\n", "E=\n"))
    assert values == {"A": "single $quoted", "B": 'with "escape" and $dollar', "C": "plain", "E": ""}


@pytest.mark.parametrize("line", ["no equals sign", "1KEY=x", "KEY=\"unterminated", "-X=1"])
def test_bad_lines_name_the_line(line: str) -> None:
    with pytest.raises(ReleaseFileError) as error:
        parse_release("ID=arch\n" + line + "\n", "extension-release.foo")
    assert "extension-release.foo line 2" in error.value.msg


def test_render_round_trips() -> None:
    values = {"ID": "arch", "NAME": "Arch Linux", "SYSEXT_LEVEL": "1.0", "EMPTY": "", "Q": "it's"}
    assert parse_release(render_release(values)) == values
    with pytest.raises(ReleaseFileError):
        render_release({"BAD KEY": "x"})


def test_read_os_release_prefers_etc_and_stays_inside_root(tmp_path: pathlib.Path) -> None:
    assert read_os_release(str(tmp_path)) is None
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text("ID=inside\n")
    (tmp_path / "etc").mkdir()
    # An absolute symlink must resolve inside the tree, never to this machine's own file.
    os.symlink("/usr/lib/os-release", tmp_path / "etc/os-release")
    path, values = read_os_release(str(tmp_path))
    assert values == {"ID": "inside"} and path == str(tmp_path / "usr/lib/os-release")
    (tmp_path / "etc/os-release").unlink()
    (tmp_path / "etc/os-release").write_text("ID=etc\n")
    assert read_os_release(str(tmp_path))[1] == {"ID": "etc"}
