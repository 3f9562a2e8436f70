"""Planning: which stages of a scale's pipeline a dispatch runs, in the order a sequential `dvc repro` takes them
home, and which of them go to workers (trunks and cells) or run at home (data and reports)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .. import studies
from .common import INPUTS, DispatchError, dvc, git, outputs


def stage_defs(scale: str) -> dict:
    return yaml.safe_load(studies.dvc_file(scale).read_text())["stages"]


def study_stages(raw: dict, names: list[str]) -> dict[str, list[str]]:
    """Per study, the stages workers run: its trunk (if it shares one) and its cells."""
    return {study: ([f"trunk-{study}"] if studies.has_shared_trunk(raw, study) else [])
            + [f"{study}-{cell.id}" for cell in studies.cells(raw, study)] for study in names}


def data_stages(raw: dict, names: list[str]) -> list[str]:
    """The source and prepare stages of the studies' datasets: they read data_root, so they run at home."""
    datasets = sorted({studies.paper_dataset(raw, c) for study in names for c in studies.cells(raw, study)})
    return [f"{kind}-{ds}" for ds in datasets for kind in ("source", "prepare")]


def unprepared_note(raw: dict, names: list[str]) -> list[str]:
    """A line saying why the counts may be too high: stages whose data is not prepared here look pending
    (dispatch prepares it first, and then sends only what really changed)."""
    missing = stale(raw["scale"], [s for s in data_stages(raw, names) if s.startswith("prepare-")])
    return [f"note: {', '.join(missing)} not up to date here, so every stage reading it counts as pending; "
            f"`dvc --cd {studies.scale_dir(raw['scale'])} repro {' '.join(missing)}` first for exact counts"] if missing else []


def upstream(stage: str, defs: dict, cached: bool = False) -> list[str]:
    """The stages whose outputs `stage` reads (with `cached`, only those whose outputs DVC caches: its .beton
    files, its trunk)."""
    deps = set(defs[stage].get("deps", []))
    return [name for name, d in defs.items() if any(path in deps and (c or not cached) for path, c in outputs(d))]


def stale(scale: str, stages: list[str]) -> list[str]:
    """The stages among `stages` (of the scale's pipeline) whose lock does not match the workspace (each one's
    own changes, as `dvc status` reports them)."""
    if not stages:
        return []
    # The whole project at once: naming 100 targets makes dvc collect the pipeline 100 times (minutes). Run in
    # the scale's folder, its own stages have bare names (the others' are `../<scale>/dvc.yaml:<name>`).
    changed = json.loads(dvc("status", "--json", cwd=studies.scale_dir(scale)).stdout or "{}")
    return [s for s in stages if s in changed]


def pending(scale: str, stages: list[str], defs: dict) -> set[str]:
    """The stages among `stages` that a dispatch would run: those stale themselves, and every one below a stage
    that will rerun (a cell below a rerun trunk reruns too, as in a sequential repro)."""
    todo = set(stale(scale, stages))
    grown = True
    while grown:
        below = {s for s in stages if s not in todo and any(u in todo for u in upstream(s, defs))}
        todo |= below
        grown = bool(below)
    return todo


def check_committed() -> str:
    """The home commit the workers will run; refuses when the inputs differ from it (they would compute
    something else than home records)."""
    dirty = (git("diff", "--name-only", "HEAD", "--", *INPUTS).splitlines()
             + git("ls-files", "--others", "--exclude-standard", "--", *INPUTS).splitlines())
    if dirty:
        raise DispatchError(f"dispatch: {dirty[0]} (and {len(dirty) - 1} more) differ from the last commit; "
                            f"workers run the commit, so commit your changes first, then dispatch")
    return git("rev-parse", "HEAD")


def planned(scale: str, targets: list[str]) -> list[str]:
    """The stages of the scale's pipeline that a sequential `dvc repro <targets>` walks, in its order (DVC's own
    planner: `--dry` cannot plan stages whose inputs do not exist yet). Stages up to date are left out but for
    the home ones (cheap). Another scale's stages are left out: a report reads the cpu scale's results as they
    are, and never reruns them."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    dvc_file = studies.dvc_file(scale).resolve()
    with Repo(str(studies.ROOT.resolve())) as repo:
        wanted = collect_stages(repo, [f"{dvc_file}:{t}" for t in targets])
        steps = [s.name for s in plan_repro(get_active_graph(repo.index.graph), wanted)
                 if Path(s.path).resolve() == dvc_file]
    defs = stage_defs(scale)
    # DVC's planner walks a small subgraph in a set's (hash-seeded) order; dvc.yaml's order is a dependency
    # order (the generator writes data, trunks, cells, then reports), and the same from one run to the next.
    position = {name: i for i, name in enumerate(defs)}
    steps.sort(key=position.__getitem__)
    late = [s for s in steps for u in upstream(s, defs) if u in steps and position[u] > position[s]]
    if late:
        raise DispatchError(f"dispatch: {studies.dvc_file(scale)} lists {late[0]} before a stage it reads; "
                            f"regenerate it with `python -m lmc.studies_dvc`")
    behind = set(stale(scale, [s for s in steps if sent_out(s)]))
    plan = []
    for s in steps:  # a cell below a trunk that reruns reruns too, as in a sequential repro
        if not sent_out(s) or s in behind or any(u in plan and sent_out(u) for u in upstream(s, defs)):
            plan.append(s)
    return plan


def sent_out(stage: str) -> bool:
    """Trunks and cells go to workers; source, prepare (they read data_root) and reports run at home."""
    return not stage.startswith(("source-", "prepare-", "report-"))


def blocked(stage: str, defs: dict, plan: list[str], failed: list[str]) -> bool:
    """Whether `stage` reads (through any chain of the plan's stages) the output of a failed stage."""
    return bool(failed) and any(u in failed or blocked(u, defs, plan, failed)
                                for u in upstream(stage, defs) if u in plan)
