# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Generated ro_bind runs: odd directory names and fstab contents, check mode predicting the real run,
the fstab kept byte for byte, a refusal changing nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as t

from hypothesis import Phase, given, settings, strategies as st

from support.modules import direct_module
from support.mounts import describe
from support.namespace import MountNamespace

from campaign import HOST_EXAMPLES, component, odd_text


def ro_bind(ns: MountNamespace, args: dict, check: bool = False) -> dict[str, t.Any]:
    rc, result, stderr = direct_module(ns, "ro_bind", args, check=check)
    assert result is not None and "Traceback" not in stderr, "module crashed (rc %d): %s" % (rc, stderr)
    return result


fstab_bytes = st.lists(st.one_of(odd_text, odd_text.map(lambda text: "#" + text)), max_size=5).map(
    lambda lines: "".join(line + "\n" for line in lines).encode("utf-8"))


# No shrinking: each example runs the module several times, and a failure is printed as found.
@settings(max_examples=HOST_EXAMPLES, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(name=component, original=fstab_bytes, persist=st.sampled_from(["fstab", "systemd"]))
def test_generated_locks_persist_and_unlock_exactly(module_ns: MountNamespace, name: str, original: bytes,
                                                    persist: str) -> None:
    work = tempfile.mkdtemp(prefix="immutable-root-hostile-")
    try:
        path = os.path.join(work, name)
        os.mkdir(path)
        fstab = os.path.join(work, "fstab")
        with open(fstab, "wb") as handle:
            handle.write(original)
        args = {"path": path, "persist": persist, "fstab_path": fstab, "unit_dir": os.path.join(work, "units")}
        table = module_ns.mountinfo()
        check = ro_bind(module_ns, args, check=True)
        assert module_ns.mountinfo() == table and not os.path.exists(args["unit_dir"])
        with open(fstab, "rb") as handle:
            assert handle.read() == original, "check mode changed the fstab"
        applied = ro_bind(module_ns, args)
        if check.get("failed"):
            # A refusal is the same in both modes, names the parameter and changes nothing.
            assert applied.get("failed") and applied["msg"] == check["msg"] and applied["msg"].startswith("path: ")
            assert module_ns.mountinfo() == table and not os.path.exists(args["unit_dir"])
            return
        assert not applied.get("failed"), applied.get("msg")
        assert applied["actions"] == check["actions"] and applied["mount"]["read_only"]
        assert check["mount"]["read_only"] and check["mount"]["path"] == applied["mount"]["path"] == path
        assert describe(module_ns, path)[-1][2] is True
        with open(fstab, "rb") as handle:
            persisted = handle.read()
        if persist == "fstab":
            assert persisted.startswith(original) and persisted.count(b"\n") == original.count(b"\n") + 1
        else:
            assert persisted == original
        assert not ro_bind(module_ns, args)["changed"]
        gone = ro_bind(module_ns, dict(args, state="absent"))
        assert not gone.get("failed") and gone["changed"], gone.get("msg")
        with open(fstab, "rb") as handle:
            assert handle.read() == original
        assert describe(module_ns, path) == []
    finally:
        module_ns.sh('for m in $(awk \'{print $5}\' /proc/self/mountinfo | grep "^%s" | sort -r); do '
                     'umount -l "$(printf "%%b" "$m")" || true; done' % work, check=False)
        shutil.rmtree(work, ignore_errors=True)
