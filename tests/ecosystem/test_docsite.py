# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The docsite, built offline from the installed release tarball, as a browser shows it (headless Chromium)."""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import pytest

from support.ecosystem import REPO, isolated_env, run, tool

# As the machine's own probe starts it: no sandbox as root, and none of Chromium's background connections,
# which this closed network would refuse.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1280,1600"]


@pytest.fixture(scope="session")
def site(installed: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    build = tmp_path_factory.mktemp("docsite")
    collection = installed / "ansible_collections" / "immutable" / "root"
    run([str(REPO / "scripts" / "docsite.sh"), str(collection), str(build)], env=isolated_env(installed))
    return build / "html"


def chromium(page: pathlib.Path, profile: pathlib.Path, *args: str) -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: run `make setup` (Debian package chromium)")
    profile.mkdir(exist_ok=True)
    return run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()], timeout=120).stdout


def screenshot(page: pathlib.Path, profile: pathlib.Path, dest: pathlib.Path) -> None:
    dest.unlink(missing_ok=True)
    chromium(page, profile, f"--screenshot={dest}")
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and dest.stat().st_size > 10_000, dest


def test_every_module_role_playbook_and_guide_has_a_page(site: pathlib.Path, output_dir: pathlib.Path) -> None:
    expected = [f"{p.stem}_module.html" for p in (REPO / "plugins" / "modules").glob("*.py")]
    expected += [f"{p.parents[1].name}_role.html" for p in (REPO / "roles").glob("*/meta/argument_specs.yml")]
    expected += [f"playbooks/{p.stem}.html" for p in (REPO / "playbooks").glob("*.yml")]
    expected += [f"guides/{p.stem}.html" for p in (REPO / "docs").glob("*.md")] + ["guides/vm_lab.html"]
    missing = [name for name in expected if not (site / name).is_file()]
    assert not missing, missing
    images = sorted(p.name for p in (REPO / "docs" / "images").glob("*.svg"))
    assert images and images == sorted(p.name for p in (site / "_images").glob("*.svg")), "every picture is used by a guide"
    pages = sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if p.name not in ("search.html", "genindex.html"))
    (output_dir / "docsite.json").write_text(json.dumps({"pages": len(pages), "files": pages}, indent=1))


def test_index_in_chromium_links_every_page(site: pathlib.Path, tmp_path: pathlib.Path, output_dir: pathlib.Path) -> None:
    dom = chromium(site / "index.html", tmp_path / "profile", "--dump-dom")
    for module in (REPO / "plugins" / "modules").glob("*.py"):
        assert f'href="{module.stem}_module.html' in dom, module.stem
    for guide in (REPO / "docs").glob("*.md"):
        assert f'href="guides/{guide.stem}.html' in dom, guide.stem
    assert 'href="playbooks/index.html' in dom
    screenshot(site / "index.html", tmp_path / "profile", output_dir / "docsite-index.png")


def test_module_page_in_chromium_has_the_option_table(
        site: pathlib.Path, tmp_path: pathlib.Path, output_dir: pathlib.Path, installed: pathlib.Path) -> None:
    page = site / "ro_bind_module.html"
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert "ansible-option-table" in dom
    doc = json.loads(run([tool("ansible-doc"), "--json", "-t", "module", "immutable.root.ro_bind"], env=isolated_env(installed)).stdout)
    options = sorted(doc["immutable.root.ro_bind"]["doc"]["options"])
    shown = sorted(set(re.findall(r'id="parameter-([a-z0-9_]+)"', dom)))
    assert shown == options
    screenshot(page, tmp_path / "profile", output_dir / "docsite-ro_bind_module.png")
