# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Content-keyed cache entries: one directory per entry, a SHA256SUMS manifest, atomic publish, a lock per entry.

An entry exists only after its staging directory, manifest included, has been renamed into place, so a crash
mid-build leaves a `.staging-*` directory that the next builder removes, never a half entry.  Every use verifies
the manifest (sha256 of an 800 MiB image takes under a second here), and a corrupt entry is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from vmlab.errors import LabError
from vmlab.run import note

MANIFEST = "SHA256SUMS"
KEY_LENGTH = 16
LOCK_TIMEOUT = 3600.0
LOCK_REPORT_INTERVAL = 30.0


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """${IMMUTABLE_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/immutable-root}"""
    env = os.environ if env is None else env
    if env.get("IMMUTABLE_ROOT_CACHE"):
        return Path(env["IMMUTABLE_ROOT_CACHE"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "immutable-root"


def content_key(fields: Mapping[str, object]) -> str:
    """sha256 of the canonical JSON of `fields`: equal inputs give equal keys whatever the dict order."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def format_manifest(sums: Mapping[str, str]) -> str:
    """sha256sum's format, so `sha256sum -c SHA256SUMS` works inside an entry too."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def parse_manifest(text: str) -> dict[str, str]:
    """Inverse of format_manifest; raises ValueError on anything else."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise ValueError(f"line {number} is not '<sha256>  <name>': {line!r}")
        if name.startswith("/") or ".." in Path(name).parts or name == MANIFEST:
            raise ValueError(f"line {number} names a path outside the entry: {name!r}")
        if name in sums:
            raise ValueError(f"line {number} repeats {name!r}")
        sums[name] = digest
    if not sums:
        raise ValueError("empty manifest")
    return sums


def entry_files(directory: Path) -> list[str]:
    """Regular files below `directory` (relative, sorted), the manifest excluded."""
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        name = path.relative_to(directory).as_posix()
        if name != MANIFEST:
            found.append(name)
    return found


def write_manifest(directory: Path) -> None:
    sums = {name: file_sha256(directory / name) for name in entry_files(directory)}
    if not sums:
        raise LabError(f"refusing to publish an empty cache entry: {directory}")
    (directory / MANIFEST).write_text(format_manifest(sums))


def verify_entry(directory: Path) -> str | None:
    """None when the entry is complete and intact, else why it is not."""
    if not directory.is_dir():
        return "missing"
    try:
        sums = parse_manifest((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"unreadable {MANIFEST}: {exc}"
    present = set(entry_files(directory))
    if present != set(sums):
        return f"file set differs from {MANIFEST}: missing {sorted(set(sums) - present)}, unexpected {sorted(present - set(sums))}"
    for name, digest in sums.items():
        if file_sha256(directory / name) != digest:
            return f"checksum mismatch for {name}"
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_entry_dir(path: Path) -> None:
    """Rename aside first: a half-deleted entry must never look like an entry."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def locked(lock_path: Path, what: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`; wait (bounded, with progress lines) while another process holds it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        next_report = started
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            now = time.monotonic()
            if now - started > timeout:
                raise LabError(f"gave up waiting {timeout:.0f} s for {what} (lock {lock_path} held by pid {_lock_holder(lock_path)})")
            if now >= next_report:
                note(f"waiting for {what}: another process (pid {_lock_holder(lock_path)}) holds {lock_path}")
                next_report = now + LOCK_REPORT_INTERVAL
            time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _lock_holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "?"
    except OSError:
        return "?"


class CacheEntry:
    """One content-keyed directory: <root>/<kind>/<name>-<key[:16]>."""

    def __init__(self, root: Path, kind: str, name: str, key: str) -> None:
        self.root = root
        self.kind = kind
        self.name = name
        self.key = key
        self.path = root / kind / f"{name}-{key[:KEY_LENGTH]}"
        self.lock_path = root / "locks" / f"{kind}-{self.path.name}.lock"
        self.log_path = root / "logs" / f"{kind}-{self.path.name}.log"

    def verify(self) -> str | None:
        return verify_entry(self.path)

    def ensure(self, build: Callable[[Path], None], *, lock_timeout: float = LOCK_TIMEOUT) -> Path:
        """Return the verified entry, building it first (under the entry's lock) when missing or corrupt.

        `build(staging)` fills an empty directory; it is published only if build returns normally.
        """
        with locked(self.lock_path, f"cache entry {self.path.name}", lock_timeout):
            reason = self.verify()
            if reason is None:
                return self.path
            if reason != "missing":
                note(f"cache entry {self.path} is unusable ({reason}); rebuilding it")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_entry_dir(self.path)
            # Under the lock, any staging directory of this entry was left by a builder that died.
            for stale in self.path.parent.glob(f".staging-{self.path.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = self.path.with_name(f".staging-{self.path.name}-{os.getpid()}")
            staging.mkdir()
            try:
                if self.log_path.exists():
                    self.log_path.unlink()
                build(staging)
                write_manifest(staging)
                os.rename(staging, self.path)
                _fsync_dir(self.path.parent)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            reason = self.verify()
            if reason is not None:
                raise LabError(f"cache entry {self.path} failed verification right after it was built: {reason}")
            return self.path
