# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usrmerge_symlinks: one run at a time on a root, from the first look at it to the last."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._usrmerge.manifest import O_DIR
from ansible_collections.immutable.root.plugins.module_utils._usrmerge.model import UsrMergeError

LOCK_TIMEOUT = 600.0
POLL_INTERVAL = 0.1
# flock(2) emulated over NFS locks (and some FUSE filesystems) refuses a lock on a read-only directory descriptor.
LOCK_UNSUPPORTED = (errno.ENOLCK, errno.EBADF, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextlib.contextmanager
def locked_root(root: str, exclusive: bool, timeout: float = LOCK_TIMEOUT) -> t.Iterator[list[str]]:
    """flock(2) on the root directory, exclusive to change it and shared to only look (check mode).

    A concurrent run's temporary names look like an interrupted run's, and a second run would clean them up under
    the first one. Yields the warnings to report (the lock cannot be taken on this filesystem).
    """
    try:
        fd = os.open(root, O_DIR)
    except OSError as exc:
        raise UsrMergeError("root: cannot open %s: %s" % (root, exc.strerror))
    try:
        deadline = time.monotonic() + timeout
        warnings = []
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno in LOCK_UNSUPPORTED:
                    warnings.append("cannot lock %s (%s): a concurrent usrmerge_symlinks run on it is not held off"
                                    % (root, exc.strerror))
                    break
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise UsrMergeError("root: another usrmerge_symlinks run has held the lock on %s for %.0f s; "
                                        "nothing was changed" % (root, timeout))
                time.sleep(POLL_INTERVAL)
        yield warnings
    finally:
        os.close(fd)
