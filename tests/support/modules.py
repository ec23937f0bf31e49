# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Running the collection's modules from host tests: through Ansible (the real interface) or directly."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import typing as t

from support.namespace import MountNamespace

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent
# Modules must run on a managed node's stock python3 with the standard library only.
MANAGED_PYTHON = "/usr/bin/python3"


def collections_path() -> str:
    """Where the collection resolves as immutable.root (pytest-ansible builds it from galaxy.yml)."""
    configured = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")
    for entry in configured.split(os.pathsep):
        if entry and os.path.isdir(os.path.join(entry, "ansible_collections", "immutable", "root")):
            return entry
    raise RuntimeError("immutable.root is not on ANSIBLE_COLLECTIONS_PATH (%r); run pytest from the repository root"
                       % configured)


def _ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_PYTHON_INTERPRETER": MANAGED_PYTHON,
        "ANSIBLE_CALLBACK_PLUGINS": str(pathlib.Path(__file__).parent / "callback"),
        "ANSIBLE_STDOUT_CALLBACK": "result_json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": "%s:%s" % (VENV_BIN, env.get("PATH", "")),
    })
    env.update(extra or {})
    return env


def ansible_module(ns: MountNamespace | None, module: str, args: dict[str, t.Any] | str, check: bool = False,
                   diff: bool = False, env: dict[str, str] | None = None) -> dict[str, t.Any]:
    """Run immutable.root.<module> with ansible ad hoc on localhost (inside ns) and return its result.

    args is a dict (sent as JSON) or the key=value string a user would type after -a.
    """
    argv = [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-m", "immutable.root." + module,
            "-a", args if isinstance(args, str) else json.dumps(args)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    prefix = ns.prefix() if ns else []
    completed = subprocess.run(prefix + argv, env=_ansible_env(env), text=True, capture_output=True, timeout=600,
                               check=False)
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    if len(results) != 1:
        raise AssertionError("ansible produced no result (rc=%d)\nstdout:\n%s\nstderr:\n%s"
                             % (completed.returncode, completed.stdout, completed.stderr))
    return t.cast(dict, results[0])


def direct_module(ns: MountNamespace | None, module: str, args: dict[str, t.Any], check: bool = False,
                  diff: bool = False, env: dict[str, str] | None = None,
                  timeout: float = 600) -> tuple[int, dict[str, t.Any] | None, str]:
    """Run a module file directly (no Ansible round trip): (returncode, result or None if killed, stderr).

    Fast enough for fault injection with hundreds of runs; the module code is the same.
    """
    module_args = dict(args)
    module_args["_ansible_check_mode"] = check
    module_args["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": module_args}, handle)
    run_env = dict(os.environ)
    run_env["PYTHONPATH"] = collections_path()
    run_env.update(env or {})
    argv = [sys.executable, "-m", "ansible_collections.immutable.root.plugins.modules." + module, handle.name]
    try:
        completed = subprocess.run((ns.prefix() if ns else []) + argv, env=run_env, text=True, capture_output=True,
                                   timeout=timeout, check=False)
    finally:
        os.unlink(handle.name)
    try:
        result = json.loads(completed.stdout)
    except ValueError:
        result = None
    return completed.returncode, result, completed.stderr


class FourSteps(t.NamedTuple):
    check: dict[str, t.Any]
    apply: dict[str, t.Any]
    again: dict[str, t.Any]
    check_again: dict[str, t.Any]


def four_step(ns: MountNamespace | None, module: str, args: dict[str, t.Any],
              env: dict[str, str] | None = None) -> FourSteps:
    """check, apply, apply again, check again: the results, each already asserted for the idiom."""
    check = ansible_module(ns, module, args, check=True, diff=True, env=env)
    apply = ansible_module(ns, module, args, diff=True, env=env)
    again = ansible_module(ns, module, args, diff=True, env=env)
    check_again = ansible_module(ns, module, args, check=True, diff=True, env=env)
    for name, result in (("check", check), ("apply", apply), ("apply again", again), ("check again", check_again)):
        assert not result.get("failed"), "%s failed: %s" % (name, result.get("msg"))
    assert check["changed"] and apply["changed"], "the first check and apply must report a change"
    assert not again["changed"] and not check_again["changed"], "the second apply and check must be unchanged"
    assert again["actions"] == [] and check_again["actions"] == []
    assert check["actions"] and apply["actions"]
    return FourSteps(check, apply, again, check_again)
