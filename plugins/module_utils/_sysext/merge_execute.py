# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge: running systemd-sysext for a plan."""

from __future__ import annotations

import typing as t

from ansible_collections.immutable.root.plugins.module_utils._core.actions import Action
from ansible_collections.immutable.root.plugins.module_utils._core.checkpoint import step_boundary
from ansible_collections.immutable.root.plugins.module_utils._core.runner import CommandResult, Runner
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_model import MergeRequest
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_observe import observe_hierarchies
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import SysextError

MAX_SHARE_STEPS = 16


class Executor:
    """Carries out sysext_merge actions; `done` lists what completed, `output` what systemd-sysext said."""

    def __init__(self, runner: Runner, request: MergeRequest) -> None:
        self.runner = runner
        self.request = request
        self.done: list[Action] = []
        self.output: list[CommandResult] = []

    def run(self, actions: t.Sequence[Action]) -> None:
        for action in actions:
            if action.action == "make_shared":
                self._make_shared()
            else:
                self._sysext(action.action)
            self.done.append(action)
            step_boundary("sysext_merge.%s" % action.action)

    def _make_shared(self) -> None:
        # One step at a time from the mount table: binding root onto itself changes which mount the
        # hierarchies sit on, and submounts copied by --rbind start out private.
        root = self.request.root
        for _step in range(MAX_SHARE_STEPS):
            private = [state for state in observe_hierarchies(self.request)[0] if not state.shared]
            if not private:
                return
            anchor = private[0].anchor
            inside = anchor == root or anchor.startswith(root.rstrip("/") + "/")
            if inside:
                self.runner.run(["mount", "--make-shared", anchor])
            else:
                self.runner.run(["mount", "--rbind", root, root])
                step_boundary("sysext_merge.root_bound")
                self.runner.run(["mount", "--make-shared", root])
        raise SysextError("make_shared: the mounts under %s did not become shared after %d steps"
                          % (root, MAX_SHARE_STEPS))

    def _sysext(self, verb: str) -> None:
        argv = ["systemd-sysext", "--root=%s" % self.request.root, "--no-pager"]
        if self.request.force:
            argv.append("--force")
        if self.request.image_policy is not None:
            argv.append("--image-policy=%s" % self.request.image_policy)
        if self.request.mutable is not None:
            argv.append("--mutable=%s" % self.request.mutable)
        argv.append(verb)
        environ = {
            "SYSTEMD_SYSEXT_HIERARCHIES": ":".join(self.request.hierarchies),
            # No lock files: they would touch the host's /run and the image directory's mtime.
            "SYSTEMD_NSPAWN_LOCK": "0",
            "SYSTEMD_LOG_LEVEL": "info",
            "SYSTEMD_PAGER": "cat",
        }
        self.output.append(self.runner.run(argv, environ=environ))
