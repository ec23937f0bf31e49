# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's SSH identity: one throwaway ed25519 key, generated once into the cache, root's key in every image."""

from __future__ import annotations

import os
from pathlib import Path

from vmlab.cache import cache_root, locked
from vmlab.run import require_tools, run

KEY_NAME = "id_ed25519"

# Every lab VM is a throwaway clone answering on 127.0.0.1 with the same host keys (generated when the
# image was built), so host key checking has nothing to protect and only gets in the way.
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "IdentitiesOnly=yes",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=8",
)


def ensure_key(cache: Path | None = None) -> Path:
    """Path of the private key, created on first use (the public key is next to it, `.pub`)."""
    directory = (cache or cache_root()) / "ssh"
    private = directory / KEY_NAME
    if private.is_file() and private.with_suffix(".pub").is_file():
        return private
    require_tools(["ssh-keygen"])
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(directory / ".lock", "the lab SSH key", timeout=120):
        if not (private.is_file() and private.with_suffix(".pub").is_file()):
            for stale in (private, private.with_suffix(".pub")):
                if stale.exists():
                    stale.unlink()
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "immutable-root-lab", "-f", str(private)], timeout=60)
            os.chmod(private, 0o600)
    return private


def public_key(private: Path) -> str:
    return private.with_suffix(".pub").read_text().strip()
