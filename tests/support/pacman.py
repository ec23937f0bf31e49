# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Arch packages built by Debian's makepkg, and pacman acting on a tree instead of this machine."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import typing as t

NOBODY = ("65534", "65534")

PKGBUILD = """\
pkgname={name}
pkgver={version}
pkgrel=1
pkgdesc="immutable.root test package"
arch=(any)
license=(GPL-3.0-or-later)
options=(!strip !debug)

package() {{
  cp -a "$startdir/payload/." "$pkgdir/"
}}
"""


def build_package(workdir: pathlib.Path, name: str, files: t.Mapping[str, bytes], version: str = "1.0") -> pathlib.Path:
    """Build NAME-VERSION-1-any.pkg.tar.zst holding files (path -> content; paths under usr/bin are 0755).

    makepkg refuses to run as root (rc 10), so it runs as nobody.
    """
    source = workdir / ("%s-%s" % (name, version))
    if source.exists():
        shutil.rmtree(source)
    for relative, content in files.items():
        target = source / "payload" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(0o755 if "/bin/" in "/" + relative else 0o644)
    (source / "PKGBUILD").write_text(PKGBUILD.format(name=name, version=version))
    subprocess.run(["chown", "-R", "%s:%s" % NOBODY, str(source)], check=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(source), "PKGEXT": ".pkg.tar.zst", "LANG": "C"}
    completed = subprocess.run(
        ["setpriv", "--reuid=%s" % NOBODY[0], "--regid=%s" % NOBODY[1], "--clear-groups",
         "makepkg", "--nodeps", "--noconfirm", "--nocheck", "--force"],
        cwd=source, env=env, text=True, capture_output=True, check=False,
    )
    package = source / ("%s-%s-1-any.pkg.tar.zst" % (name, version))
    if completed.returncode != 0 or not package.is_file():
        raise RuntimeError("makepkg failed (rc=%d):\n%s\n%s" % (completed.returncode, completed.stdout, completed.stderr))
    return package


def pacman_argv(root: pathlib.Path, *args: str) -> list[str]:
    """pacman confined to root: its own database, cache, log and hooks; never this machine's."""
    return ["pacman", "--root", str(root), "--dbpath", str(root / "var/lib/pacman"),
            "--cachedir", str(root / "var/cache/pacman/pkg"), "--logfile", str(root / "var/log/pacman.log"),
            "--hookdir", str(root / "etc/pacman.d/hooks"), "--noconfirm", *args]


def prepare_root(root: pathlib.Path) -> None:
    for directory in ("var/lib/pacman", "var/cache/pacman/pkg", "var/log", "etc/pacman.d/hooks"):
        (root / directory).mkdir(parents=True, exist_ok=True)


def tree_digest(path: pathlib.Path) -> dict[str, str]:
    """path -> sha256 (or symlink target, or 'dir') of everything under path, for byte-for-byte comparisons."""
    digest = {}
    for current, directories, files in os.walk(path):
        for name in directories + files:
            full = pathlib.Path(current) / name
            relative = str(full.relative_to(path))
            if full.is_symlink():
                digest[relative] = "-> " + os.readlink(full)
            elif full.is_dir():
                digest[relative] = "dir %o" % (full.stat().st_mode & 0o7777)
            else:
                digest[relative] = hashlib.sha256(full.read_bytes()).hexdigest()
    return digest
