# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""btrfs_generation: the pure planners, one per state, and the prediction of their result."""

from __future__ import annotations

import dataclasses
import json
import typing as t

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (
    COMMONS, CURRENT, DELETION_STEPS, FSTAB, Generation, GenerationError, LAYOUT_DIRECTORIES, LINKS, Layout,
    LinkDirectory, MAX_FSTAB_BYTES, PLACEHOLDER, Plan, ROOT_SUBVOLUME, Request, SNAPSHOTS, Source, Step, TENTATIVE, BUILDING,
    parse_current_target,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import current_target, render_fstab
from ansible_collections.immutable.root.plugins.module_utils._core.errors import ParameterError


def sort_generations(generations: t.Iterable[Generation]) -> tuple[Generation, ...]:
    return tuple(sorted(generations, key=Generation.order))


def history_slots(name: str, previous: t.Sequence[str | None], existing: t.Collection[str], slots: int
                  ) -> tuple[str, ...]:
    """Slot 0 is name, then the previous history without duplicates or deleted generations.

    The seed shifts slots (links/<new>/1..3 = links/<old>/0..2); dropping duplicates keeps a rollback from
    filling two slots with one generation. Missing slots repeat the oldest, so every boot entry resolves:
    a first generation fills all slots with itself.
    """
    history = [name]
    for entry in previous:
        if entry is not None and entry in existing and entry not in history:
            history.append(entry)
    history = history[:slots]
    return tuple(history + [history[-1]] * (slots - len(history)))


def generation_target(name: str) -> str:
    return "%s/%s/%s" % (SNAPSHOTS, name, ROOT_SUBVOLUME)


def _refuse_blocked(layout: Layout) -> None:
    problems = []
    blocked = sorted(layout.blocked - {FSTAB})
    if blocked:
        problems.append("top: %s in %s %s not a directory (or subvolume) as the layout needs; refusing to replace it"
                        % (", ".join(blocked), layout.top, "is" if len(blocked) == 1 else "are"))
    if FSTAB in layout.blocked:
        problems.append("top: %s/%s, the fstab template, is not a regular file of at most %d bytes (a symlink, FIFO, "
                        "device or an oversized file); refusing to read or replace it, remove it and rerun "
                        "state=initialized" % (layout.top, FSTAB, MAX_FSTAB_BYTES))
    if problems:
        raise GenerationError("; ".join(problems))


def _refuse_foreign_current(layout: Layout) -> None:
    if layout.current_text is not None and parse_current_target(layout.current_text) is None:
        raise GenerationError("top: %s/%s points to %r, not ./%s/<name>; refusing to replace a link this module "
                              "did not make" % (layout.top, CURRENT, layout.current_text, LINKS))


def _require_resolving_current(layout: Layout) -> LinkDirectory:
    links = layout.current_links()
    if links is None or not links.complete(layout.names()):
        raise GenerationError("top: %s/%s does not resolve to a complete link directory (%r); make a generation "
                              "current first (state=current) so nothing reachable is deleted"
                              % (layout.top, CURRENT, layout.current_text))
    return links


def _refuse_taken_name(layout: Layout, name: str, param: str) -> None:
    for stray in layout.strays:
        if stray.path == "%s/%s" % (SNAPSHOTS, name) and stray.kind == "foreign":
            raise ParameterError(param, "%s/%s exists but holds no generation (%s); remove it or choose another "
                                 "name" % (SNAPSHOTS, name, stray.detail))


def _fstab_steps(layout: Layout, name: str, template: str | None, new: bool) -> tuple[list[Step], list[str]]:
    """Inject the rendered template into name's etc/fstab when it differs (always for a new generation)."""
    if template is None:
        return [], ["%s/%s has no fstab template: etc/fstab of %s is left as it is" % (layout.top, FSTAB, name)]
    step = Step("inject_fstab", "%s/etc/fstab" % generation_target(name), "%s -> /%s/%s"
                % (PLACEHOLDER, SNAPSHOTS, name), names=(name,))
    if new:
        return [step], []
    generation = layout.generation(name)
    if layout.fstabs.get(name) == render_fstab(template, name):
        return [], []
    if generation is not None and generation.read_only:
        return [], ["generation %s is read-only; its etc/fstab differs from the template and is left alone" % name]
    return [step], []


def _refuse_uninjected(layout: Layout, name: str, template: str | None, steps: t.Sequence[Step]) -> None:
    """A generation becomes current only with its fstab injected: its etc/fstab naming another generation's
    root would boot the wrong one, or mount another generation's subvolumes read-write."""
    if any(step.action == "inject_fstab" and name in step.names for step in steps):
        return
    if template is not None and layout.fstabs.get(name) == render_fstab(template, name):
        return
    why = ("%s/%s, the fstab template, is missing" % (layout.top, FSTAB) if template is None else
           "it differs from the template and the generation is read-only")
    raise GenerationError("name: refusing to make generation %s current: its etc/fstab is not injected (%s); "
                          "run state=initialized with fstab_template, or inject it by hand" % (name, why))


def _refuse_unfit_origin(request: Request) -> None:
    """Refused before anything is created: a generation made from it would fail its fstab injection on every run."""
    if request.origin_problem is not None:
        param, problem = request.origin_problem
        raise ParameterError(param, "refusing to create a generation from it: %s" % problem)


def _create_step(name: str, source: Source) -> Step:
    details = {"generation": "snapshot of generation %s", "snapshot": "snapshot of subvolume %s",
               "copy": "copy of directory %s", "empty": "empty subvolume%s"}
    shown = source.path or ""
    return Step("create_generation", generation_target(name), details[source.kind] % shown, names=(name,),
                source=source)


def _switch_steps(request: Request, slots: t.Sequence[str]) -> list[Step]:
    detail = " ".join("%d=%s" % (number, name) for number, name in enumerate(slots))
    return [Step("write_links", "%s/%s" % (LINKS, request.links_name), detail, names=tuple(slots)),
            Step("switch_current", CURRENT, current_target(request.links_name), names=(request.links_name,))]


def _common_step(request: Request, common: str) -> Step:
    """A new common subvolume, empty or (fill_commons) starting with what the source system has there."""
    origin = request.fill_sources.get(common)
    if origin is None:
        return Step("create_common", "%s/%s" % (COMMONS, common), "subvolume")
    return Step("create_common", "%s/%s" % (COMMONS, common), "subvolume filled from %s" % origin,
                source=Source("copy", origin))


def plan_initialized(request: Request, layout: Layout) -> Plan:
    steps = [Step("create_directory", directory) for directory in LAYOUT_DIRECTORIES
             if directory not in layout.directories]
    steps += [_common_step(request, common) for common in request.commons if common not in layout.commons]
    template = layout.template
    warnings = []
    if request.fstab_template is not None and PLACEHOLDER not in request.fstab_template:
        warnings.append("fstab_template does not contain %s: every generation gets the same fstab" % PLACEHOLDER)
    if request.fstab_template is not None and request.fstab_template != layout.template:
        steps.append(Step("write_fstab_template", FSTAB, "given template"))
        template = request.fstab_template
    elif layout.template is None and request.default_template is not None:
        steps.append(Step("write_fstab_template", FSTAB, "default template for / and the commons"))
        template = request.default_template
    if layout.current_name() is not None:
        return Plan(tuple(steps), tuple(warnings))
    _refuse_foreign_current(layout)
    # No usable current: a first generation (created, or adopted from an interrupted first run).
    first = request.name or (layout.generations[-1].name if layout.generations else request.new_name)
    new = layout.generation(first) is None
    if new:
        _refuse_taken_name(layout, first, "name")
        _refuse_unfit_origin(request)
        steps.append(_create_step(first, request.source or Source("empty")))
    fstab, fstab_warnings = _fstab_steps(layout, first, template, new)
    steps += fstab
    steps += _switch_steps(request, [first] * request.slots)
    return Plan(tuple(steps), tuple(warnings + fstab_warnings))


def _refuse_missing_boot_files(request: Request, name: str) -> None:
    if request.boot_problems:
        raise ParameterError("boot_files", "generation %s lacks what its boot entries load: %s; a boot of it would "
                             "find no kernel" % (name, "; ".join(request.boot_problems)))


def _record_building(name: str) -> Step:
    return Step("record_building", BUILDING, json.dumps({"name": name}, sort_keys=True), names=(name,))


def _clear_building(name: str) -> Step:
    return Step("clear_building", BUILDING, "generation %s is finished or gone" % name, names=(name,))


def _abandoned_build(request: Request, layout: Layout) -> tuple[list[Step], list[str]]:
    """Delete the unfinished generation of an earlier build that was cut off, unless it is protected."""
    name = layout.building
    generation = layout.generation(name)
    if generation is None:
        return [], []
    reason = _protection(layout, request.root).get(t.cast(str, name))
    if reason:
        return [], ["generation %s was never finished but is kept: %s" % (name, reason)]
    steps = _deletion_steps([generation])
    return steps + _sync_step(steps), []


def plan_present(request: Request, layout: Layout) -> Plan:
    name = request.name
    if name is None:
        raise ParameterError("name", "present needs a name (the module assigns a new stamp when none is given)")
    if request.origin is not None and layout.generation(request.origin) is None:
        raise ParameterError("from", "generation %s does not exist in %s/%s" % (request.origin, layout.top, SNAPSHOTS))
    if request.origin is not None and request.origin == layout.building and request.origin != name:
        raise ParameterError("from", "generation %s was never finished (its build was cut off); start from a "
                             "finished one" % request.origin)
    if layout.generation(name) is not None:
        _refuse_missing_boot_files(request, name)
        steps, warnings = _fstab_steps(layout, name, layout.template, new=False)
        if layout.building == name and not request.building:
            steps.append(_clear_building(name))
        return Plan(tuple(steps), tuple(warnings))
    _refuse_taken_name(layout, name, "name")
    _refuse_unfit_origin(request)
    source = request.source
    if source is None:
        origin = request.origin or layout.current_name()
        if origin is None:
            raise ParameterError("from", "no generation is current in %s to start from; name one with from, give "
                                 "source, or run state=initialized first" % layout.top)
        source = Source("generation", origin)
    steps, warnings = [], []
    if request.building:
        if layout.building is not None and layout.building != name:
            steps, warnings = _abandoned_build(request, layout)
        steps.append(_record_building(name))
    fstab, fstab_warnings = _fstab_steps(layout, name, layout.template, new=True)
    return Plan(tuple(steps + [_create_step(name, source)] + fstab), tuple(warnings + fstab_warnings))


def plan_current(request: Request, layout: Layout) -> Plan:
    name = request.name
    if name is None or layout.generation(name) is None:
        raise ParameterError("name", "generation %s does not exist in %s/%s" % (name, layout.top, SNAPSHOTS))
    _refuse_foreign_current(layout)
    steps, warnings = _fstab_steps(layout, name, layout.template, new=False)
    links = layout.current_links()
    existing = layout.names()
    if links is not None and links.targets[:1] == (name,) and links.complete(existing, request.slots):
        return Plan(tuple(steps), tuple(warnings))
    if name == layout.building:
        raise ParameterError("name", "generation %s was never finished: the run building it (state=present with "
                             "building) was cut off; finish it with state=present, or delete it" % name)
    _refuse_missing_boot_files(request, name)
    _refuse_uninjected(layout, name, layout.template, steps)
    slots = history_slots(name, layout.slots(), existing, request.slots)
    switch = _switch_steps(request, slots)
    if request.tentative:
        if links is None:
            raise ParameterError("tentative", "current does not resolve to a link directory in %s, so there is "
                                 "nothing to fall back to; make a generation current without tentative first"
                                 % layout.top)
        record = json.dumps({"name": name, "previous": links.name, "next": request.links_name}, sort_keys=True)
        switch.insert(1, Step("record_tentative", TENTATIVE, record, names=(name,)))
    return Plan(tuple(steps + switch), tuple(warnings))


def _protection(layout: Layout, root: str) -> dict[str, str]:
    """Why each protected generation must not be deleted."""
    reasons: dict[str, str] = {}
    for generation in layout.generations:
        if generation.subvolid is not None and generation.subvolid in layout.mounted:
            reasons[generation.name] = "it is mounted (subvolume id %d); unmount it first" % generation.subvolid
    booted = layout.booted_name()
    if booted is not None:
        reasons[booted] = "it is the booted generation (subvolume id %s is mounted on %s)" % (layout.booted, root)
    slots = layout.slots()
    for name in layout.reachable():
        numbers = ", ".join(str(number) for number, target in enumerate(slots) if target == name)
        reasons[name] = "it is reachable from current (slot %s); make another generation current first" % numbers
    return reasons


def _deletion_steps(victims: t.Sequence[Generation]) -> list[Step]:
    steps = [Step("delete_generation", generation_target(victim.name), "subvolume id %s" % victim.subvolid,
                  names=(victim.name,), ids=(victim.subvolid,) if victim.subvolid is not None else ())
             for victim in victims]
    return steps


def _sync_step(steps: t.Sequence[Step]) -> list[Step]:
    ids = tuple(subvolid for step in steps if step.action in DELETION_STEPS for subvolid in step.ids)
    if not ids:
        return []
    return [Step("sync_deletions", ".", "commit, then wait for the cleaner to drop %d subvolume(s)" % len(ids),
                 ids=ids)]


def plan_absent(request: Request, layout: Layout) -> Plan:
    name = request.name
    if name is None:
        raise ParameterError("name", "absent needs the name of the generation to delete")
    generation = layout.generation(name)
    current = layout.current_links()
    if generation is not None:
        _require_resolving_current(layout)
        reason = _protection(layout, request.root).get(name)
        if reason:
            raise ParameterError("name", "refusing to delete generation %s: %s" % (name, reason))
    steps = [Step("remove_links", "%s/%s" % (LINKS, directory.name), "pointed at %s" % name)
             for directory in layout.link_directories
             if name in directory.targets and (current is None or directory.name != current.name)]
    if generation is not None:
        steps += _deletion_steps([generation])
    steps += [Step("remove_stray", stray.path, stray.detail) for stray in layout.strays
              if stray.kind == "empty_directory" and stray.path == "%s/%s" % (SNAPSHOTS, name)]
    steps += _sync_step(steps)
    if layout.building == name:
        steps.append(_clear_building(name))  # after the deletion: a cut before it leaves the record in force
    return Plan(tuple(steps))


def retained(request: Request, layout: Layout) -> dict[str, str]:
    """Generations state=pruned keeps, with the first reason for each."""
    keep: dict[str, str] = {}
    healthy = [generation for generation in layout.generations
               if generation.name not in request.unhealthy and generation.name != layout.building]
    for generation in healthy[-request.keep:]:
        keep[generation.name] = "one of the %d newest" % request.keep
    for name, reason in _protection(layout, request.root).items():
        keep.setdefault(name, reason)
    for name in request.pinned:
        if layout.generation(name) is not None:
            keep.setdefault(name, "pinned")
    return keep


def plan_pruned(request: Request, layout: Layout) -> Plan:
    current = _require_resolving_current(layout)
    keep = retained(request, layout)
    victims = [generation for generation in layout.generations if generation.name not in keep]
    steps = [Step("remove_links", "%s/%s" % (LINKS, directory.name), "not current")
             for directory in layout.link_directories if directory.name != current.name and not directory.foreign]
    steps += [Step("remove_stray", stray.path, stray.detail) for stray in layout.strays
              if stray.kind in ("empty_directory", "temporary_link")]
    # Staging subvolumes and victims go in one `btrfs subvolume delete` call.
    steps += [Step("delete_staging", stray.path, stray.detail,
                   ids=(stray.subvolid,) if stray.subvolid is not None else ())
              for stray in layout.strays if stray.kind == "staging"]
    steps += _deletion_steps(victims)
    steps += _sync_step(steps)
    if layout.building is not None and layout.building not in keep:
        steps.append(_clear_building(layout.building))
    warnings = ["pinned generation %s does not exist" % name for name in request.pinned
                if layout.generation(name) is None]
    warnings += ["%s is not a generation and is left alone: %s" % (stray.path, stray.detail)
                 for stray in layout.strays if stray.kind == "foreign"]
    warnings += ["%s/%s holds entries that are not slot links and is left alone" % (LINKS, directory.name)
                 for directory in layout.link_directories if directory.foreign and directory.name != current.name]
    return Plan(tuple(steps), tuple(warnings))


PLANNERS: dict[str, t.Callable[[Request, Layout], Plan]] = {
    "initialized": plan_initialized,
    "present": plan_present,
    "current": plan_current,
    "absent": plan_absent,
    "pruned": plan_pruned,
}


def plan_generation(request: Request, layout: Layout) -> Plan:
    """The ordered steps that bring the layout to the request; raises on what must not be done."""
    _refuse_blocked(layout)
    if request.state != "initialized" and SNAPSHOTS not in layout.directories:
        raise GenerationError("top: %s has no %s directory; run state=initialized first" % (layout.top, SNAPSHOTS))
    return PLANNERS[request.state](request, layout)


def predict(layout: Layout, steps: t.Sequence[Step], request: Request) -> Layout:
    """The layout the steps would leave (check mode reports this; new subvolume ids are unknown)."""
    generations = {generation.name: generation for generation in layout.generations}
    links = {directory.name: directory for directory in layout.link_directories}
    directories, commons = set(layout.directories), set(layout.commons)
    template, current_text, strays = layout.template, layout.current_text, list(layout.strays)
    building, fstabs = layout.building, dict(layout.fstabs)
    for step in steps:
        if step.action == "create_generation":
            generations[step.names[0]] = Generation(step.names[0], None, None)
        elif step.action == "delete_generation":
            generations.pop(step.names[0], None)
        elif step.action == "write_links":
            links[step.target.split("/", 1)[1]] = LinkDirectory(step.target.split("/", 1)[1], step.names)
        elif step.action == "remove_links":
            links.pop(step.target.split("/", 1)[1], None)
        elif step.action == "switch_current":
            current_text = step.detail
        elif step.action == "create_directory":
            directories.add(step.target)
        elif step.action == "create_common":
            commons.add(step.target.split("/", 1)[1])
        elif step.action == "write_fstab_template":
            template = request.fstab_template if request.fstab_template is not None else request.default_template
        elif step.action in ("remove_stray", "delete_staging"):
            strays = [stray for stray in strays if stray.path != step.target]
        elif step.action == "inject_fstab" and template is not None:
            fstabs[step.names[0]] = render_fstab(template, step.names[0])
        elif step.action == "record_building":
            building = step.names[0]
        elif step.action == "clear_building":
            building = None
    return dataclasses.replace(
        layout, directories=frozenset(directories), commons=frozenset(commons), template=template,
        generations=sort_generations(generations.values()), current_text=current_text,
        link_directories=tuple(sorted(links.values(), key=lambda directory: directory.name)), strays=tuple(strays),
        building=building, fstabs=fstabs)
