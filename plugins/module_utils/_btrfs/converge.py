# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: one run - observe, plan, execute, observe again and verify - and its result."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.actions import as_dicts
from ansible_collections.immutable.root.plugins.module_utils._btrfs.execute import Executor
from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import GenerationError
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import generations_state, summary_state
from ansible_collections.immutable.root.plugins.module_utils._btrfs.observe import observe
from ansible_collections.immutable.root.plugins.module_utils._btrfs.request import build_request
from ansible_collections.immutable.root.plugins.module_utils._btrfs.plan import plan_generation, predict
from ansible_collections.immutable.root.plugins.module_utils._btrfs.top import verify_top
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner


class Run:
    """What one module run did, kept outside converge() so a failure can still report completed actions."""

    def __init__(self) -> None:
        self.executor: Executor | None = None

    def done(self) -> list:
        return as_dicts(self.executor.done) if self.executor else []


def converge(module: AnsibleModule, runner: Runner, options: dict, top: str, run: Run) -> dict:
    top_mount = verify_top(runner, top)
    fstab_names = (options["name"], options["from"])
    before = observe(runner, top, options["root"], options["commons"], fstab_names)
    request = build_request(options, before, runner, top, top_mount)
    plan = plan_generation(request, before)
    for warning in plan.warnings:
        module.warn(warning)
    after = before
    if plan.steps and not module.check_mode:
        if top_mount.read_only:
            raise ParameterError("top", "%s is mounted read-only" % top)
        template = request.fstab_template if request.fstab_template is not None else request.default_template
        run.executor = Executor(runner, top, template)
        run.executor.run(plan.steps)
        after = observe(runner, top, options["root"], options["commons"], (request.name,) + fstab_names)
        remaining = plan_generation(request, after).steps
        if remaining:
            raise GenerationError("verification failed: after the run %s still needs: %s" % (top, "; ".join(
                "%s %s" % (step.action, step.target) for step in remaining)))
    elif plan.steps:
        after = predict(before, plan.steps, request)
    name = request.name
    if request.state == "initialized":
        name = after.current_name()
    elif request.state == "pruned":
        name = None
    done = run.executor.done if run.executor else [step.as_action() for step in plan.steps]
    summary = summary_state(after)
    result = dict(changed=bool(done), actions=as_dicts(done), name=name,
                  generations=generations_state(after, options["pinned"]), current=summary["current"],
                  slots=summary["slots"], links=summary["links"], booted=after.booted_name(), building=after.building,
                  top=None if options["device"] else top)
    if module._diff:
        result["diff"] = dict(before=summary_state(before), after=summary)
    return result
