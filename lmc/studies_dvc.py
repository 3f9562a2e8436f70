"""studies/<scale>/dvc.yaml, one pipeline per scale, generated from studies/studies.yaml:
`python -m lmc.studies_dvc`; and each studies/<scale>/dvc.lock put in its file's order:
`python -m lmc.studies_dvc --sort-lock`.

studies/ is a DVC project of its own (`dvc init --subdir`), so that the default experiment's `dvc exp show`
and `dvc exp run` never see its hundreds of stages. Each scale's stages live in studies/<scale>/dvc.yaml with
their own lock, outputs and reports, so that running one scale never reruns or rewrites another's. Paths are
written relative to that file (a stage whose wdir lies outside its project cannot use DVC's run-cache); the
commands `cd ../..` to the repository root.

Per dataset a `source-*` and a `prepare-*` stage, per study with `shared_trunk` a `trunk-*` stage, per cell
one stage whose params are exactly the entries that define it (so editing one cell reruns only that cell),
per study one `report-*` stage. Cells depend on the code that computes them, not on this generator, so
changing how the file is written reruns nothing. A report at a scale other than cpu reads the cpu scale's
results of the same cells (its third column): run it with `dvc repro --single-item`, as `make study` and the
dispatcher do, so that it never reruns a cpu cell.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from .io import write_text_atomic
from .spec import SpecError
from .stage import entry
from .studies import (CODE, SCALES, STUDIES_FILE, cell_output, cells, cpu_cells, data_paths, datasets_used,
                      dvc_file, has_shared_trunk, load, missing_cpu_results, notes_path, paper_dataset, report_path,
                      resolve, scale_dir, scale_names, study_names, trunk_dir, trunk_plan)


def _cmd(args: str, scale: str) -> str:
    return f"cd ../.. && python -m {args} --scale {scale}"  # from the repository root, where lmc/ is importable


def generate(raw: dict) -> str:
    """The text of studies/<scale>/dvc.yaml for raw's scale (paths relative to that file's folder; the commands
    run from the repository root)."""
    scale = raw["scale"]
    here = lambda path: os.path.relpath(path, scale_dir(scale))  # noqa: E731
    code = lambda *extra: [here(p) for p in CODE + list(extra)]  # noqa: E731
    scale_params = [f"scales.{scale}"]  # a new list at each use below (yaml would write anchors for one)
    studies_yaml = here(STUDIES_FILE)
    stages = {}
    for ds in datasets_used(raw):
        p = {k: here(v) for k, v in data_paths(scale, ds).items()}
        stages[f"source-{ds}"] = {
            "cmd": _cmd(f"stages.source --study-dataset {ds}", scale), "always_changed": True,
            "deps": code("lmc/data.py", "lmc/datasets.py", "lmc/studies.py", "stages/source.py"),
            "params": [{here("params.yaml"): ["data_root", "download"]}, {studies_yaml: list(scale_params)}],
            "outs": [{p["source"]: {"cache": False}}]}
        stages[f"prepare-{ds}"] = {
            "cmd": _cmd(f"stages.prepare --study-dataset {ds}", scale),
            "deps": [p["source"]] + code("lmc/data.py", "lmc/datasets.py", "lmc/studies.py", "stages/prepare.py"),
            "outs": [p["train"], p["test"]]}
    train_code = ["lmc/data.py", "lmc/augment.py", "lmc/models.py", "lmc/resume.py", "lmc/step.py", "lmc/train.py",
                  "lmc/device.py"]
    for study in study_names(raw):
        outs = []
        trunk = []
        if has_shared_trunk(raw, study):
            p = data_paths(scale, paper_dataset(raw, cells(raw, study)[0]))
            trunk = [here(trunk_dir(scale, study))]
            stages[f"trunk-{study}"] = {
                "cmd": _cmd(f"stages.trunk {study}", scale),
                "deps": [here(p["train"])] + code(*train_code, "lmc/studies.py", "stages/trunk.py"),
                "params": [{studies_yaml: scale_params + [f"studies.{study}.base", f"studies.{study}.axes"]
                            + ([f"studies.{study}.cells"] if "cells" in raw["studies"][study] else [])}],
                "outs": trunk}
        for cell in cells(raw, study):
            p = data_paths(scale, paper_dataset(raw, cell))
            out = here(cell_output(scale, study, cell.id))
            outs.append(out)
            stages[f"{study}-{cell.id}"] = {
                "cmd": _cmd(f"stages.cell {study} {cell.id}", scale),
                "deps": [here(p["train"]), here(p["test"])] + trunk + code(*train_code, *(
                    "lmc/align.py", "lmc/connectivity.py", "lmc/report.py", "lmc/api.py", "lmc/studies.py",
                    "stages/cell.py")),
                "params": [{studies_yaml: scale_params + cell.param_keys}],
                "outs": [{out: {"cache": False}}]}
        if not outs:
            continue  # no cell at this scale: no report
        notes = notes_path(scale, study)
        stages[f"report-{study}"] = {
            "cmd": _cmd(f"stages.study_report {study}", scale),
            "deps": outs + [here(cell_output("cpu", study, c)) for c in cpu_cells(raw, study)]
            + code("lmc/report.py", "lmc/studies.py", "lmc/study_report.py", "stages/study_report.py")
            + ([here(notes)] if notes.exists() else []),
            "params": [{studies_yaml: [f"studies.{study}"]}],
            "outs": [{here(report_path(scale, study).with_suffix(ext)): {"cache": False}}
                     for ext in (".md", ".csv", ".png")]}
    header = (f"# GENERATED by `python -m lmc.studies_dvc` from studies/studies.yaml: edit that file, not this one.\n"
              f"# The studies at {scale} scale: `make study STUDY=<study> SCALE={scale}`, or "
              f"`python -m lmc.dispatch <study> --scale {scale}`.\n")
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def sort_lock(scale: str) -> None:
    """Order studies/<scale>/dvc.lock's entries as its dvc.yaml orders its stages (a dependency order), in
    DVC's own format, atomically. DVC appends a stage it records for the first time, and its planner walks a
    small part of the pipeline in the order of a Python set (networkx iterates a subgraph's node set when it
    is under half the graph): two sequential runs of the same new cells can write their entries in different
    orders. The dispatcher and `make study` keep this one order instead, whatever ran first."""
    from dvc.utils.serialize import dump_yaml, load_yaml
    lock_file = dvc_file(scale).with_suffix(".lock")
    if not lock_file.exists():
        return
    lock = load_yaml(lock_file)
    order = {name: i for i, name in enumerate(yaml.safe_load(dvc_file(scale).read_text())["stages"])}
    entries = lock["stages"]
    ordered = sorted(entries, key=lambda name: (order.get(name, len(order)), list(entries).index(name)))
    if ordered == list(entries):
        return
    lock["stages"] = {name: entries[name] for name in ordered}
    tmp = lock_file.with_name(lock_file.name + ".partial")
    dump_yaml(tmp, lock)
    os.replace(tmp, lock_file)


def repro(study: str, scale: str) -> None:
    """`make study STUDY=<study> SCALE=<scale>`: the study's trunk and cells through `dvc repro` (with the data
    they read), then its report with `--single-item` (a report at another scale than cpu reads the cpu results
    as they are: it never reruns a cpu cell), and the lock in its file's order."""
    import subprocess
    raw = load(scale)
    if not cells(raw, study):
        raise SpecError(f"studies: {study} has no cell at {scale} scale (studies/studies.yaml)")
    missing_cpu_results(raw, study)
    work = ([f"trunk-{study}"] if has_shared_trunk(raw, study) else []) + [f"{study}-{c.id}" for c in cells(raw, study)]
    bin_dir = Path(sys.executable).absolute().parent  # the stages' `python` is this environment's too
    if not (bin_dir / "dvc").exists():
        raise SpecError(f"studies: no dvc beside {sys.executable}; run `make setup` (or install the bundle)")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for args in (["repro", *work], ["repro", "--single-item", f"report-{study}"]):
        if subprocess.run([str(bin_dir / "dvc"), *args], cwd=scale_dir(scale), env=env).returncode:
            raise SpecError(f"studies: `dvc {' '.join(args[:3])} ...` failed in {scale_dir(scale)} (above)")
    sort_lock(scale)


@entry
def main(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lmc.studies_dvc", description="write every scale's "
                                     "studies/<scale>/dvc.yaml from studies/studies.yaml (with no option)")
    parser.add_argument("--sort-lock", action="store_true", help="put each scale's dvc.lock in its file's order")
    parser.add_argument("--repro", metavar="STUDY", help="run one study at --scale (what `make study` does)")
    parser.add_argument("--scale", choices=SCALES, help="the scale of --repro")
    args = parser.parse_args(argv)
    if args.repro and not args.scale or args.scale and not args.repro or args.repro and args.sort_lock:
        parser.error("--repro STUDY goes with --scale SCALE, and alone")
    raw = load()
    if args.sort_lock:
        for scale in scale_names(raw):
            sort_lock(scale)
        return
    if args.repro:
        return repro(args.repro, args.scale)
    for study in study_names(raw):  # every cell must resolve at every scale before anything is written
        for scale in scale_names(raw):
            for cell in cells({**raw, "scale": scale}, study):
                resolve(raw, cell, scale)
            if has_shared_trunk({**raw, "scale": scale}, study):
                trunk_plan({**raw, "scale": scale}, study)
    for gone in (s for s in SCALES if s not in scale_names(raw) and dvc_file(s).exists()):
        dvc_file(gone).unlink()  # a scale no longer defined: DVC must not collect its stale stages
        print(f"removed {dvc_file(gone)}: scale {gone} is not in {STUDIES_FILE} any more (its results stay)")
    for scale in scale_names(raw):
        at = {**raw, "scale": scale}
        write_text_atomic(dvc_file(scale), generate(at))
        print(f"wrote {dvc_file(scale)}: {sum(len(cells(at, s)) for s in study_names(at))} cells in "
              f"{sum(bool(cells(at, s)) for s in study_names(at))} studies")


if __name__ == "__main__":
    main()
