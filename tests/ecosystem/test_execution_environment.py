# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-builder reads the collection's execution-environment metadata and writes a valid build context.

Building the image needs a container engine, which this machine kind does not have; the build context and
ansible-builder's own introspection (the step the image build runs) are checked instead."""

from __future__ import annotations

import pathlib

import yaml

from support.ecosystem import REPO, TOOLS_BIN, isolated_env, run, tool

# The example definition of the README: the release tarball installed into an image with ansible-core.
DEFINITION = """---
version: 3
images:
  base_image:
    name: ee-base:latest
dependencies:
  ansible_core:
    package_pip: ansible-core>=2.19
  ansible_runner:
    package_pip: ansible-runner
  galaxy: requirements.yml
additional_build_files:
  - src: {tarball}
    dest: collections
additional_build_steps:
  prepend_galaxy:
    - COPY _build/collections/ /build/collections/
"""


def bindep_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_metadata_names_bindep() -> None:
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 1
    assert meta["dependencies"] == {"system": "bindep.txt"}


# What the modules run on a managed node, by package name per family (written from each distribution's
# package index, independently of bindep.txt). Alpine (OpenRC) has no systemd; pacman and makepkg exist only
# where packages are built into extensions.
NODE_PACKAGES = {
    "python3": {"dpkg": "python3", "rpm": "python3", "pacman": "python", "apk": "python3", "emerge": "dev-lang/python"},
    "util-linux": {"dpkg": "util-linux", "rpm": "util-linux", "pacman": "util-linux", "apk": "util-linux", "emerge": "sys-apps/util-linux"},
    "systemd": {"dpkg": "systemd", "rpm": "systemd", "pacman": "systemd", "emerge": "sys-apps/systemd"},
    "btrfs-progs": {"dpkg": "btrfs-progs", "rpm": "btrfs-progs", "pacman": "btrfs-progs", "apk": "btrfs-progs", "emerge": "sys-fs/btrfs-progs"},
    "squashfs-tools": {"dpkg": "squashfs-tools", "rpm": "squashfs-tools", "pacman": "squashfs-tools", "apk": "squashfs-tools",
                       "emerge": "sys-fs/squashfs-tools"},
    "erofs-utils": {"dpkg": "erofs-utils", "rpm": "erofs-utils", "pacman": "erofs-utils", "apk": "erofs-utils", "emerge": "sys-fs/erofs-utils"},
    "zstd": {"dpkg": "zstd", "rpm": "zstd", "pacman": "zstd", "apk": "zstd", "emerge": "app-arch/zstd"},
    "bsdtar": {"dpkg": "libarchive-tools", "rpm": "bsdtar", "pacman": "libarchive", "apk": "libarchive-tools", "emerge": "app-arch/libarchive"},
    "pacman": {"dpkg": "pacman-package-manager", "pacman": "pacman"},
    "makepkg": {"dpkg": "makepkg", "pacman": "pacman"},
}


def test_bindep_names_the_node_packages_of_every_family() -> None:
    out = run([tool("python", TOOLS_BIN), "-c",
               "import json, sys; from bindep.depends import Depends; "
               "d = Depends(open(sys.argv[1]).read()); "
               "print(json.dumps([(n, [p for _, p in prof]) for n, prof, _ in d._rules]))",
               str(REPO / "bindep.txt")]).stdout
    rules = {(name, profile.split(":", 1)[1]) for name, profiles in yaml.safe_load(out) if "node" in profiles
             for profile in profiles if profile.startswith("platform:")}
    wanted = {(package, family) for families in NODE_PACKAGES.values() for family, package in families.items()}
    assert not wanted - rules, sorted(wanted - rules)
    assert not rules - wanted, f"bindep.txt names node packages this test does not know: {sorted(rules - wanted)}"


def test_introspect_reads_the_installed_collection(installed: pathlib.Path) -> None:
    proc = run([tool("ansible-builder", TOOLS_BIN), "introspect", "--sanitize", str(installed)],
               env=isolated_env(None, bin_dir=TOOLS_BIN))
    data = yaml.safe_load(proc.stdout)
    system = data["system"]
    lines = bindep_lines((REPO / "bindep.txt").read_text())
    introspected = [" ".join(line.split("  #")[0].split()) for line in system]
    assert all("from collection immutable.root" in line for line in system), system
    assert set(introspected) <= set(lines), sorted(set(introspected) - set(lines))
    # The controller's lines (no user profile) are the ones the image installs: all of them must come through.
    controller = [line for line in lines if "node" not in line.split("[", 1)[1]]
    assert controller and set(controller) <= set(introspected), controller


def test_builder_create_writes_a_valid_context(tarball: pathlib.Path, tmp_path: pathlib.Path) -> None:
    (tmp_path / "requirements.yml").write_text(
        f"---\ncollections:\n  - name: /build/collections/{tarball.name}\n    type: file\n")
    (tmp_path / "execution-environment.yml").write_text(DEFINITION.format(tarball=tarball))
    run([tool("ansible-builder", TOOLS_BIN), "create", "-f", "execution-environment.yml", "-c", "context",
         "--output-filename", "Containerfile"], cwd=tmp_path, env=isolated_env(None, bin_dir=TOOLS_BIN))
    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    assert containerfile.count("FROM ") >= 3, containerfile  # base, galaxy and builder stages, then the final image
    assert "COPY _build/collections/ /build/collections/" in containerfile
    assert "ansible-galaxy" in containerfile and "introspect" in containerfile
    assert (context / "_build" / "collections" / tarball.name).read_bytes() == tarball.read_bytes()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements["collections"][0]["name"].endswith(tarball.name)
    # Every file the Containerfile copies from the context exists in it.
    for line in containerfile.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            source = line.split()[1]
            assert (context / source).exists(), line
