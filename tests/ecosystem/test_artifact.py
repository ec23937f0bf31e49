# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The release tarball carries what users need, installs offline, and its modules and roles work from the installed copy."""

from __future__ import annotations

import json
import pathlib
import subprocess
import tarfile

from support.ecosystem import REPO, isolated_env, run, tool

# Top-level entries a user needs; galaxy.yml's build_ignore keeps everything else out.
SHIPPED = {
    "MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.md", "bindep.txt",
    "changelogs", "docs", "meta", "molecule", "playbooks", "plugins", "roles",
}
# Developer files that must never reach users.
DEVELOPER = ("Makefile", "scripts/", "tests/", "bench/", ".ci/", "requirements", ".mypy.ini", ".gitignore",
             ".yamllint", ".ansible-lint", "changelogs/fragments/", "__pycache__", ".pyc", "docs/build/")


def collection_dir(installed: pathlib.Path) -> pathlib.Path:
    return installed / "ansible_collections" / "immutable" / "root"


def test_tarball_holds_only_what_users_need(tarball_members: list[str], output_dir: pathlib.Path) -> None:
    top = {name.split("/", 1)[0] for name in tarball_members}
    assert top <= SHIPPED, f"not meant for users, add to galaxy.yml build_ignore: {sorted(top - SHIPPED)}"
    leaked = sorted(name for name in tarball_members if any(part in name for part in DEVELOPER))
    assert not leaked, leaked
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "meta/runtime.yml", "meta/execution-environment.yml",
                   "bindep.txt", "changelogs/changelog.yaml", "molecule/shared/create.yml", "molecule/lab/labctl.py"):
        assert needed in tarball_members, needed
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text().splitlines()[0]
    # The same files in the same directories as the repository, minus build_ignore: nothing user-facing is dropped.
    for folder in ("plugins", "playbooks", "roles", "docs"):
        in_repo = {str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and not str(p).startswith(str(REPO / "docs" / "build"))}
        missing = sorted(in_repo - set(tarball_members))
        assert not missing, f"{folder}/ files missing from the tarball: {missing}"
    (output_dir / "artifact.json").write_text(json.dumps({"files": len(tarball_members), "members": sorted(tarball_members)}, indent=1))


def test_tarball_manifest_names_the_collection(tarball: pathlib.Path) -> None:
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("immutable", "root")
    assert info["license"] == ["GPL-3.0-or-later"]
    assert tarball.name == f"immutable-root-{info['version']}.tar.gz"


def test_ansible_doc_every_module_from_the_installed_copy(installed: pathlib.Path) -> None:
    modules = sorted(p.stem for p in (collection_dir(installed) / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert modules == sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    names = [f"immutable.root.{m}" for m in modules]
    docs = json.loads(run([tool("ansible-doc"), "--json", "-t", "module", *names], env=isolated_env(installed)).stdout)
    assert sorted(docs) == sorted(names)
    for name, doc in docs.items():
        assert doc["doc"]["options"], name
        assert doc["doc"]["filename"].startswith(str(installed)), (name, doc["doc"]["filename"])
        assert doc["examples"] and doc["return"], name


def test_ansible_doc_every_role_from_the_installed_copy(installed: pathlib.Path) -> None:
    """Roles are found by their argument specs, so roles added later are covered without touching this test."""
    roles = sorted(p.parents[1].name for p in (collection_dir(installed) / "roles").glob("*/meta/argument_specs.yml"))
    assert roles == sorted(p.parents[1].name for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))
    for role in roles:
        doc = json.loads(run([tool("ansible-doc"), "--json", "-t", "role", f"immutable.root.{role}"],
                             env=isolated_env(installed)).stdout)
        entry_points = doc[f"immutable.root.{role}"]["entry_points"]
        assert entry_points["main"]["options"], role


def test_module_runs_ad_hoc_from_the_installed_copy(installed: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """ro_bind in check mode on a temporary directory, inside a private mount namespace: it predicts, mounts nothing."""
    target = tmp_path / "lockme"
    target.mkdir()
    script = (
        f'{tool("ansible")} localhost -i localhost, -c local -o --check -m immutable.root.ro_bind '
        f'-a "path={target} state=present"; rc=$?; '
        f'echo "mounts-on-target=$(awk -v p={target} \'$5 == p\' /proc/self/mountinfo | wc -l)"; exit $rc'
    )
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, check=False, env=isolated_env(installed))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("localhost |"))
    status, payload = line.split(" => ", 1)
    result = json.loads(payload)
    assert "CHANGED" in status and result["changed"] is True, line
    assert result["mount"]["read_only"] is True and result["actions"], result
    assert "mounts-on-target=0" in proc.stdout, proc.stdout


def test_every_playbook_resolves_by_its_fqcn_from_the_installed_copy(installed: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """`ansible-playbook immutable.root.NAME` is how users run them; the scenarios import them by path instead."""
    playbooks = sorted(p.stem for p in (collection_dir(installed) / "playbooks").glob("*.yml"))
    assert playbooks == sorted(p.stem for p in (REPO / "playbooks").glob("*.yml"))
    inventory = tmp_path / "inventory"
    inventory.write_text("localhost ansible_connection=local\n")
    for playbook in playbooks:
        run([tool("ansible-playbook"), "--syntax-check", "-i", str(inventory), f"immutable.root.{playbook}"],
            env=isolated_env(installed))
