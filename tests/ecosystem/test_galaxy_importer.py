# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Galaxy's own import check (galaxy-importer, offline) accepts the release tarball without an error or a warning."""

from __future__ import annotations

import json
import pathlib

from support.ecosystem import TOOLS_BIN, isolated_env, run, tool

# ansible-test in a container is off (no engine here); ansible-lint runs locally and offline, as Galaxy runs it.
CONFIG = """[galaxy-importer]
run_ansible_test = false
run_ansible_lint = true
offline_ansible_lint = true
check_changelog = true
log_level_main = INFO
"""


def test_galaxy_importer_accepts_the_tarball(tarball: pathlib.Path, tmp_path: pathlib.Path, output_dir: pathlib.Path) -> None:
    config = tmp_path / "galaxy-importer.cfg"
    config.write_text(CONFIG)
    env = isolated_env(None, bin_dir=TOOLS_BIN)
    env["GALAXY_IMPORTER_CONFIG"] = str(config)
    env["HOME"] = str(tmp_path)  # ansible-doc and ansible-lint write their caches there, not into ~/.ansible
    proc = run([tool("python", TOOLS_BIN), "-m", "galaxy_importer.main", str(tarball)], cwd=tmp_path, env=env)
    log = proc.stdout + proc.stderr
    (output_dir / "galaxy-importer.log").write_text(log)
    assert "Importer processing completed successfully" in log, log
    problems = [line for line in log.splitlines() if "ERROR" in line or "WARNING" in line]
    assert not problems, problems
    result = json.loads((tmp_path / "importer_result.json").read_text())
    modules = sorted(c["name"] for c in result["contents"] if c["content_type"] == "module")
    repo_modules = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[2] / "plugins" / "modules").glob("*.py"))
    assert modules == repo_modules
    for content in result["contents"]:
        if content["content_type"] == "module":
            assert content["description"], content["name"]
    summary = {kind: sum(1 for c in result["contents"] if c["content_type"] == kind)
               for kind in sorted({c["content_type"] for c in result["contents"]})}
    (output_dir / "galaxy-importer-summary.json").write_text(json.dumps(summary, indent=1))
