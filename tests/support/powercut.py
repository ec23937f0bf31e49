# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Power-cut images without device-mapper (a measured recipe: 0 false tears in 56 runs).

The golden image lives on a btrfs pool, so copies are reflinks. A copy of it is attached with
`losetup --direct-io=on` (no page cache between the filesystem and the image file) and mounted with
`commit=300`, with background writeback turned off for the run. The operation stops itself at step k
(IMMUTABLE_ROOT_STOP_AT), `cp --reflink=always` of the image is the power cut, and the operation is
killed. The copy is then mounted on a fresh direct-io loop after `blockdev --flushbufs`, first
`ro,rescue=nologreplay` (what a boot loader that does not replay the btrfs log tree sees), then normally.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import typing as t


from support.btrfs import Disk, run
from support.modules import collections_path

# The checkpoint's variable, spelled here so the oracle imports nothing of the plugins.
STOP_AT_ENV = "IMMUTABLE_ROOT_STOP_AT"
SYSCTL = pathlib.Path("/proc/sys/vm")
WRITEBACK_OFF = {"dirty_writeback_centisecs": "0", "dirty_expire_centisecs": "360000"}
VIEWS = ("nologreplay", "normal")

# The switch as a naive script would do it (tmp link + rename, no fsync, no syncfs): the harness must see
# this lose a switch that was already "done", or it is blind.
NAIVE_SWITCH = """
import os, signal, sys
top, links, generation = sys.argv[1:4]
os.mkdir(os.path.join(top, "links", links))
for slot in range(4):
    os.symlink("../../snapshots/" + generation, os.path.join(top, "links", links, str(slot)))
os.symlink("./links/" + links, os.path.join(top, "next", "naive"))
os.rename(os.path.join(top, "next", "naive"), os.path.join(top, "current"))
os.kill(os.getpid(), signal.SIGSTOP)
"""


# Restores the saved sysctls once its standard input reaches EOF, which happens when the process holding the
# pipe's write end exits in any way, SIGKILL included. It runs in a session of its own, so killing the test's
# process group does not take it along.
RESTORE_GUARD = """
import json, sys
saved = json.loads(sys.argv[1])
sys.stdin.buffer.read()
for name, value in saved.items():
    with open("/proc/sys/vm/" + name, "w") as handle:
        handle.write(value)
"""


@contextlib.contextmanager
def writeback_off() -> t.Iterator[dict[str, str]]:
    """Turn periodic writeback off (a machine-wide sysctl) and restore the saved values, also on failure and
    also when this process is killed (a guard process restores them when its pipe from us closes)."""
    saved = {name: (SYSCTL / name).read_text().strip() for name in WRITEBACK_OFF}
    reader, writer = os.pipe()
    guard = subprocess.Popen([sys.executable, "-c", RESTORE_GUARD, json.dumps(saved)], stdin=reader,
                             start_new_session=True, close_fds=True)
    os.close(reader)
    try:
        for name, value in WRITEBACK_OFF.items():
            (SYSCTL / name).write_text(value)
        yield saved
    finally:
        for name, value in saved.items():
            (SYSCTL / name).write_text(value)
        os.close(writer)
        guard.wait(timeout=30)


class View(t.NamedTuple):
    """What one mount of a crash image shows."""

    error: str | None  # None when the layout is complete
    slots: tuple[str, ...]

    @property
    def current(self) -> str | None:
        return self.slots[0] if self.slots and self.error is None else None


def inspect_layout(top: str) -> View:
    """current -> complete link directory -> complete generations (fstab naming each), as a boot loader would
    follow it; any deviation is reported, never raised."""
    try:
        directory = os.path.normpath(os.path.join(top, os.readlink(os.path.join(top, "current"))))
        entries = sorted(os.listdir(directory), key=int)
        slots = tuple(os.path.basename(os.readlink(os.path.join(directory, entry))) for entry in entries)
        if entries != [str(number) for number in range(4)]:
            return View("torn link directory %s: %s" % (directory, entries), slots)
        template = pathlib.Path(top, "fstab").read_text()
        for name in set(slots):
            fstab = pathlib.Path(top, "snapshots", name, "@", "etc", "fstab")
            if fstab.read_text() != template.replace("CURRENT_SNAPSHOTS_PATH", "/snapshots/" + name):
                return View("generation %s has a torn fstab" % name, slots)
        return View(None, slots)
    except (OSError, ValueError) as exc:
        return View("%s: %s" % (type(exc).__name__, exc), ())


def _attach(image: pathlib.Path) -> str:
    return run(["losetup", "--direct-io=on", "--find", "--show", str(image)]).stdout.strip()


class PowerCut:
    """Crash images of golden (an unmounted Disk in the pool) cut while an operation is stopped at a step."""

    def __init__(self, golden: Disk) -> None:
        self.golden = golden

    def cut(self, argv_for: t.Callable[[str], list[str]], stop_at: int, env: dict[str, str] | None = None
            ) -> tuple[bool, dict[str, View]]:
        """(whether the operation reached step stop_at, the views of the crash image)."""
        work = self.golden.clone("work")
        crash = work.image.with_name(work.image.stem + "-crash.img")
        device = _attach(work.image)
        try:
            work.top.mkdir()
            run(["mount", "-o", "subvolid=5,commit=300", device, str(work.top)])
            try:
                reached = self._stop_and_copy(argv_for(str(work.top)), stop_at, env or {}, work.image, crash)
            finally:
                run(["umount", str(work.top)])
        finally:
            run(["losetup", "-d", device])
            work.discard()
        try:
            return reached, self.views(crash)
        finally:
            crash.unlink(missing_ok=True)

    @staticmethod
    def _stop_and_copy(argv: list[str], stop_at: int, env: dict[str, str], image: pathlib.Path,
                       crash: pathlib.Path) -> bool:
        full_env = dict(os.environ, PYTHONPATH=collections_path(), **env)
        full_env[STOP_AT_ENV] = str(stop_at)
        process = subprocess.Popen(argv, env=full_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _pid, status = os.waitpid(process.pid, os.WUNTRACED)
            reached = os.WIFSTOPPED(status)
            if not reached:
                process.returncode = os.waitstatus_to_exitcode(status)
            run(["cp", "--reflink=always", str(image), str(crash)])  # the power cut
            return reached
        finally:
            if process.returncode is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
            if process.stderr:
                process.stderr.close()

    @staticmethod
    def views(image: pathlib.Path) -> dict[str, View]:
        device = _attach(image)
        mountpoint = pathlib.Path(tempfile.mkdtemp(prefix="crash-", dir=image.parent))
        found = {}
        try:
            run(["blockdev", "--flushbufs", device])
            # nologreplay first: the normal mount replays the log tree and writes to the image.
            for view, options in zip(VIEWS, ("ro,rescue=nologreplay,subvolid=5", "subvolid=5")):
                mounted = run(["mount", "-o", options, device, str(mountpoint)], check=False)
                if mounted.returncode != 0:
                    found[view] = View("mount failed: %s" % mounted.stderr.strip(), ())
                    continue
                try:
                    found[view] = inspect_layout(str(mountpoint))
                finally:
                    run(["umount", str(mountpoint)])
        finally:
            run(["losetup", "-d", device])
            mountpoint.rmdir()
        return found


def module_argv(args: dict[str, t.Any], directory: pathlib.Path) -> t.Callable[[str], list[str]]:
    """argv that runs btrfs_generation directly with args (top filled in per cut)."""
    def argv_for(top: str) -> list[str]:
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", dir=directory, delete=False)
        with handle:
            json.dump({"ANSIBLE_MODULE_ARGS": dict(args, top=top)}, handle)
        return [sys.executable, "-m", "ansible_collections.immutable.root.plugins.modules.btrfs_generation",
                handle.name]
    return argv_for


def naive_argv(links: str, generation: str) -> t.Callable[[str], list[str]]:
    return lambda top: [sys.executable, "-c", NAIVE_SWITCH, top, links, generation]
