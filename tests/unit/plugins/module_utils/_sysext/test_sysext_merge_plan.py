# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sysext_merge's planner: which verb, when nothing, and when it refuses; as truth tables."""

from __future__ import annotations

import dataclasses
import typing as t

import pytest

from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError
from ansible_collections.immutable.root.plugins.module_utils._sysext.images import (
    ImageContent, ImageVerdict, SearchEntry,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_model import (
    HierarchyState, MergeObserved, MergeRequest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_plan import (
    check_versions,
    layer_order,
    parse_systemd_version,
    plan_sysext_merge,
    predict_hierarchies,
    validate_hierarchies,
    validate_required,
    verification_problem,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_render import (
    extensions_result, failure_lines, hierarchies_result, merge_state, merged_names, warnings,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.release import HostRelease, SysextError

ROOT = "/srv/root"


def image(name: str, verdict: str = "compatible", hierarchies: tuple[str, ...] = ("/usr",),
          reason: str | None = None, kind: str = "directory") -> ImageVerdict:
    path = "%s/var/lib/extensions/%s" % (ROOT, name)
    content = ImageContent(release={"ID": "debian"}, release_path="usr/lib/x", hierarchies=hierarchies)
    return ImageVerdict(SearchEntry("/var/lib/extensions", name, path, kind),  # type: ignore[arg-type]
                        verdict, reason, content)  # type: ignore[arg-type]


def usr(*names: str, shared: bool = True) -> HierarchyState:
    return HierarchyState("/usr", ROOT + "/usr", bool(names), names, 1.5 if names else None, 7 if names else None,
                          "0:41" if names else None, shared, "/")


def opt(*names: str) -> HierarchyState:
    return HierarchyState("/opt", ROOT + "/opt", bool(names), names, None, None, None, True, "/")


def observed(images: t.Sequence[ImageVerdict], states: t.Sequence[HierarchyState] = (), version: int = 252,
             run_mounted: bool = True) -> MergeObserved:
    return MergeObserved(version, HostRelease("debian", "12"), "x86-64", tuple(images),
                         tuple(states) or (usr(), opt()), run_mounted)


def request(**changes: t.Any) -> MergeRequest:
    return dataclasses.replace(MergeRequest(ROOT, "merged", ("/usr", "/opt")), **changes)


def verbs(actions: t.Sequence) -> list[tuple[str, str]]:
    return [(action.action, action.detail) for action in actions]


@pytest.mark.parametrize("state, images, states, expected", [
    # Nothing merged, two compatible images: merge, highest version on top.
    ("merged", [image("c10"), image("c9")], [usr(), opt()], [("merge", "c9, c10 into /usr (top layer: c10)")]),
    # Already merged with the same set: nothing, even in another order on disk.
    ("merged", [image("c10"), image("c9")], [usr("c9", "c10"), opt()], []),
    # A different set while merged: refresh, never merge (rc 1 "already merged").
    ("merged", [image("a"), image("b")], [usr("a"), opt()], [("refresh", "a, b into /usr (top layer: b)")]),
    # /opt merged before but no image ships /opt any more: refresh.
    ("merged", [image("a")], [usr("a"), opt("a")], [("refresh", "a into /usr (top layer: a)")]),
    # An image that now also ships /opt.
    ("merged", [image("a", hierarchies=("/usr", "/opt"))], [usr("a"), opt()],
     [("refresh", "a into /usr, /opt (top layer: a)")]),
    # Nothing compatible left while merged: unmerge; nothing merged and nothing to merge: nothing.
    ("merged", [image("old", "incompatible", reason="x")], [usr("old"), opt()],
     [("unmerge", "no compatible extension is left to merge")]),
    ("merged", [image("old", "incompatible", reason="x")], [usr(), opt()], []),
    ("merged", [], [usr(), opt()], []),
    # Compatible but empty in every hierarchy: systemd mounts nothing.
    ("merged", [image("empty", hierarchies=())], [usr(), opt()], []),
    ("unmerged", [image("a")], [usr("a"), opt("a")], [("unmerge", "/usr, /opt")]),
    ("unmerged", [image("a")], [usr(), opt()], []),
    ("refreshed", [image("a")], [usr("a"), opt()], [("refresh", "a into /usr (top layer: a)")]),
    ("refreshed", [image("a")], [usr(), opt()], [("refresh", "a into /usr (top layer: a)")]),
    ("refreshed", [], [usr(), opt()], [("refresh", "nothing into no hierarchy")]),
])
def test_plan_truth_table(state: str, images: list, states: list, expected: list) -> None:
    assert verbs(plan_sysext_merge(request(state=state), observed(images, states))) == expected


def test_masked_and_ignored_images_never_count() -> None:
    images = [image("a"), image("a", "masked", reason="masked by x"), image("l", "ignored", reason="symlink")]
    assert verbs(plan_sysext_merge(request(), observed(images))) == [("merge", "a into /usr (top layer: a)")]


def test_blocking_images_refuse_every_merging_state_but_not_unmerge() -> None:
    images = [image("a"), image("junk", "invalid", reason="cannot be read (x)", kind="raw")]
    for state in ("merged", "refreshed"):
        with pytest.raises(SysextError, match=r"junk \(/srv/root/var/lib/extensions/junk\): cannot be read"):
            plan_sysext_merge(request(state=state), observed(images))
    assert verbs(plan_sysext_merge(request(state="unmerged"), observed(images, [usr("a"), opt()]))) == [
        ("unmerge", "/usr")]


def test_required() -> None:
    images = [image("a"), image("old", "incompatible", reason="is for OS version '11'"),
              image("hidden", "masked", reason="masked by /x")]
    assert plan_sysext_merge(request(required=("a",)), observed(images))
    with pytest.raises(SysextError) as raised:
        plan_sysext_merge(request(required=("a", "old", "hidden", "gone")), observed(images))
    assert raised.value.msg == (
        "required: these extensions would not be merged: old (/srv/root/var/lib/extensions/old): is for OS version '11'; "
        "hidden (/srv/root/var/lib/extensions/hidden): masked by /x; gone: not found in any search directory")


def test_propagation() -> None:
    private = [usr(shared=False), opt()]
    with pytest.raises(SysextError, match=r"^make_shared: the mount / holding /srv/root/usr is not shared"):
        plan_sysext_merge(request(), observed([image("a")], private))
    assert verbs(plan_sysext_merge(request(make_shared=True), observed([image("a")], private))) == [
        ("make_shared", "private mount under /usr"), ("merge", "a into /usr (top layer: a)")]
    # /opt is private but nothing goes there: no need.
    assert verbs(plan_sysext_merge(request(), observed([image("a")], [usr(), dataclasses.replace(
        opt(), shared=False)]))) == [("merge", "a into /usr (top layer: a)")]
    # Unmerging happens in systemd-sysext's own namespace: propagation does not matter.
    assert plan_sysext_merge(request(state="unmerged"), observed([image("a")], [usr("a", shared=False), opt()]))


def test_a_hierarchy_that_cannot_be_created_is_refused_before_a_partial_merge() -> None:
    states = [usr(), dataclasses.replace(opt(), creatable=False)]
    with pytest.raises(SysextError, match=r"^hierarchies: /srv/root/opt does not exist and cannot be created"):
        plan_sysext_merge(request(), observed([image("a", hierarchies=("/usr", "/opt"))], states))
    assert plan_sysext_merge(request(), observed([image("a")], states)), "only a problem when something goes there"


def test_run_must_be_a_mount_point() -> None:
    with pytest.raises(SysextError, match="/run is not a mount point"):
        plan_sysext_merge(request(), observed([image("a")], run_mounted=False))


@pytest.mark.parametrize("option, value, version, ok", [
    ("image_policy", "root=verity", 252, False), ("image_policy", "root=verity", 254, True),
    ("mutable", "yes", 255, False), ("mutable", "yes", 256, True), ("mutable", None, 200, True),
])
def test_newer_options(option: str, value: str | None, version: int, ok: bool) -> None:
    if ok:
        check_versions(request(**{option: value}), version)
    else:
        with pytest.raises(ParameterError, match=r"^%s: needs systemd \d+ or newer; systemd-sysext here is version %d$"
                           % (option, version)):
            plan_sysext_merge(request(**{option: value}), observed([], version=version))


@pytest.mark.parametrize("values, message", [
    ([], "must name at least one"),
    (["/"], "/ is refused: the root directory"),
    (["/proc"], "/proc is refused"),
    (["/sys/kernel"], "/sys/kernel is refused"),
    (["/dev"], "/dev is refused"),
    (["/run/x"], "/run/x is refused"),
    (["usr"], "'usr' must be an absolute path"),
    (["/usr:/opt"], "must be an absolute path without ':'"),
    (["/usr/"], "must be normalised"),
    (["/usr/../etc"], "must be normalised"),
    (["/usr", "/usr"], "/usr is listed twice"),
])
def test_bad_hierarchies(values: list, message: str) -> None:
    with pytest.raises(ParameterError, match="^hierarchies: ") as raised:
        validate_hierarchies(values)
    assert message in raised.value.msg


def test_good_hierarchies_and_required() -> None:
    assert validate_hierarchies(["/usr", "/opt", "/usr/local/bin", "/procfs"]) == (
        "/usr", "/opt", "/usr/local/bin", "/procfs")
    assert validate_required(["a", "b-1.2"]) == ("a", "b-1.2")
    for bad in (["a b"], [".x"], [3]):
        with pytest.raises(ParameterError, match="^required: "):
            validate_required(bad)


def test_systemd_version() -> None:
    assert parse_systemd_version("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT\n") == 252
    with pytest.raises(SysextError, match="cannot tell the systemd version"):
        parse_systemd_version("something else")


def test_prediction_keeps_an_unchanged_merge() -> None:
    states = [usr("a"), opt()]
    assert predict_hierarchies(request(), observed([image("a")], states)) == tuple(states)
    refreshed = predict_hierarchies(request(state="refreshed"), observed([image("a")], states))
    assert refreshed[0].merged and refreshed[0].mount_id is None and refreshed[0].since is None
    assert not any(state.merged for state in predict_hierarchies(request(state="unmerged"), observed([image("a")],
                                                                                                     states)))


def test_results() -> None:
    states = (usr("a", "b"), opt("b"))
    assert merged_names(states) == ["a", "b"] and layer_order(["a", "b"]) == ["b", "a"]
    assert merge_state(states) == {"/usr": ["a", "b"], "/opt": ["b"]}
    rendered = hierarchies_result(states)
    assert rendered[0] == {"hierarchy": "/usr", "path": ROOT + "/usr", "merged": True, "extensions": ["a", "b"],
                           "since": "1970-01-01T00:00:01.500000+00:00", "mount_id": 7, "device": "0:41",
                           "mode": None}
    masked = image("a", "masked", reason="masked by y")
    listed = extensions_result([image("a"), masked, ImageVerdict(masked.entry, "ignored", "z")], ["a"])
    assert [(item["verdict"], item["merged"]) for item in listed] == [
        ("compatible", True), ("masked", False), ("ignored", False)]
    assert listed[0]["release"] == {"ID": "debian"} and listed[0]["hierarchies"] == ["/usr"]
    assert listed[2]["release"] is None and listed[2]["hierarchies"] == []


def merged_as(mode: str | None, mutable_dir: bool = False) -> HierarchyState:
    return dataclasses.replace(usr("a"), mode=mode, mutable_dir=mutable_dir)


@pytest.mark.parametrize("mutable, current, mutable_dir, expected", [
    # Not requested: the merge is kept whatever its mode.
    (None, "ephemeral", False, []),
    (None, None, False, []),
    # Requested and already so: nothing; requested otherwise: refresh with the new mode.
    ("no", "no", False, []),
    ("no", "ephemeral", False, [("refresh", "a into /usr (top layer: a)")]),
    ("ephemeral", "no", False, [("refresh", "a into /usr (top layer: a)")]),
    ("yes", "yes", True, []),
    # auto, import and ephemeral-import depend on /var/lib/extensions.mutable/usr existing.
    ("auto", "no", False, []),
    ("auto", "no", True, [("refresh", "a into /usr (top layer: a)")]),
    ("auto", "yes", True, []),
    ("import", "no", False, []),
    ("import", "import", True, []),
    ("ephemeral-import", "ephemeral", False, []),
    ("ephemeral-import", "ephemeral", True, [("refresh", "a into /usr (top layer: a)")]),
])
def test_mutable_mode_truth_table(mutable: str | None, current: str | None, mutable_dir: bool,
                                  expected: list) -> None:
    states = [merged_as(current, mutable_dir), opt()]
    assert verbs(plan_sysext_merge(request(mutable=mutable), observed([image("a")], states, version=257))) == expected


def test_a_mode_change_is_verified() -> None:
    predicted = predict_hierarchies(request(mutable="ephemeral"), observed([image("a")], [merged_as("no"), opt()], 257))
    assert predicted[0].mode == "ephemeral"
    assert verification_problem(predicted, (merged_as("ephemeral"), opt())) is None
    assert verification_problem(predicted, (merged_as("no"), opt())) == (
        "expected /usr: a (mutable: ephemeral); /opt: not merged; the mount table and .systemd-sysext markers show "
        "/usr: a (mutable: no); /opt: not merged")


def test_verification() -> None:
    assert verification_problem((usr("a"), opt()), (usr("a"), opt())) is None
    assert verification_problem((usr("a"), opt()), (usr(), opt())) == (
        "expected /usr: a; /opt: not merged; the mount table and .systemd-sysext markers show /usr: not merged; "
        "/opt: not merged")


def test_failure_lines() -> None:
    said = failure_lines(["Using extensions 'a'.\nFailed to create hierarchy mount point '/r/opt': Read-only file "
                          "system\n", "Extension image contains /usr/lib/os-release file, which is not allowed (it may "
                          "carry /etc/os-release), refusing.\nMerged extensions into '/r/usr'.\n"])
    assert said == ["Failed to create hierarchy mount point '/r/opt': Read-only file system",
                    "Extension image contains /usr/lib/os-release file, which is not allowed (it may carry "
                    "/etc/os-release), refusing."]


def test_warnings() -> None:
    images = [image("foo"), image("foo_"), image("empty", hierarchies=()),
              image("link", "ignored", reason="is a symlink: ...")]
    found = warnings(request(), observed(images))
    assert found[0] == "/srv/root/var/lib/extensions/empty has nothing under /usr, /opt: it is listed as merged but " \
                       "adds no files"
    assert found[1] == "/srv/root/var/lib/extensions/link is a symlink: ..."
    assert "'foo' and 'foo_' sort as equal versions" in found[2]
