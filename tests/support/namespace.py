# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private mount namespaces for host tests: everything mounted in one dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import typing as t

# A shared / and /run inside the namespace, as on a systemd host: systemd-sysext mounts from a child
# namespace of its own, and only a shared mount lets the result reach us (docs/sysext.md).
SYSTEMD_LIKE = "mount --make-rshared / && mount -t tmpfs -o mode=0755 run /run && mount --make-shared /run"


class MountNamespace:
    """A private mount namespace kept alive by a sleeping holder process; commands enter it with nsenter."""

    def __init__(self, setup: str = "") -> None:
        script = "%s%secho ready; exec sleep infinity" % (setup, " && " if setup else "")
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("mount namespace setup failed: %s" % self.holder.communicate(timeout=10)[1].strip())

    @property
    def pid(self) -> int:
        return self.holder.pid

    def prefix(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["nsenter", "--target", str(self.pid), "--mount", "--"]

    def run(self, argv: t.Sequence[str], check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 600, **kwargs: t.Any) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.update(env or {})
        completed = subprocess.run(self.prefix() + list(argv), env=full_env, text=True, capture_output=True,
                                   timeout=timeout, check=False, **kwargs)
        if check and completed.returncode != 0:
            raise AssertionError("%s exited %d in the namespace\nstdout:\n%s\nstderr:\n%s"
                                 % (" ".join(argv), completed.returncode, completed.stdout, completed.stderr))
        return completed

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["sh", "-ec", script], check=check)

    def mountinfo(self) -> str:
        # newline="": a "\r" in a path (the kernel leaves it unescaped) is no line end.
        with open("/proc/%d/mountinfo" % self.pid, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            return handle.read()

    def close(self) -> None:
        if self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
        self.holder.wait(timeout=30)
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream:
                stream.close()
