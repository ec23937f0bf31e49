# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation never makes current a generation whose etc/fstab is not injected (a loop image)."""

from __future__ import annotations

import os

from support.btrfs import Disk, module, ok, run, shared_pool, slots_of


def test_current_refuses_a_generation_whose_fstab_is_not_injected() -> None:
    disk = Disk.create(shared_pool(), "1G", "hostile")
    top = disk.mount()
    try:
        ok({"top": top, "state": "initialized", "name": "gen-a"})
        ok({"top": top, "state": "present", "name": "gen-b"})
        ok({"top": top, "state": "present", "name": "gen-c"})
        before = slots_of(top)
        os.unlink(os.path.join(top, "fstab"))
        for check in (True, False):
            rc, result, stderr = module({"top": top, "state": "current", "name": "gen-b"}, check=check)
            assert result is not None and "Traceback" not in stderr, stderr
            assert result.get("failed") and "refusing to make generation gen-b current" in result["msg"], result
            assert "fstab template, is missing" in result["msg"] and not result["changed"]
        assert slots_of(top) == before

        ok({"top": top, "state": "initialized", "fstab_template": "/snapshots/CURRENT_SNAPSHOTS_PATH / btrfs ro 0 0\n"})
        fstab = os.path.join(top, "snapshots/gen-c/@/etc/fstab")
        with open(fstab, "w", encoding="utf-8") as handle:
            handle.write("/snapshots/gen-a/@ / btrfs ro 0 0\n")
        run(["btrfs", "property", "set", "-ts", os.path.join(top, "snapshots/gen-c/@"), "ro", "true"])
        rc, result, stderr = module({"top": top, "state": "current", "name": "gen-c"})
        assert result is not None and result.get("failed"), (rc, result, stderr)
        assert "read-only" in result["msg"] and slots_of(top) == before
        ok({"top": top, "state": "current", "name": "gen-b"})
        assert slots_of(top)[0] == "gen-b"
    finally:
        disk.discard()
