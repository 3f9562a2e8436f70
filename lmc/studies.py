"""Studies: the paper's tables and figures as grids of twin experiments, defined in studies/studies.yaml.

A study's cells are the product of its axes. A cell's spec is Spec's defaults, then the scale's defaults,
then the study's `base`, then one value of each axis, then an explicit `cells.<id>` entry if there is one;
any value may be given per scale as {cpu: ..., paper: ...}. `python -m lmc.studies` writes
studies/dvc.yaml: per dataset a `source-*` and a `prepare-*` stage, per cell one stage whose params are
exactly the entries that define it (so editing one cell reruns only it), per study one `report-*` stage.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .spec import Spec, SpecError, spec_from_dict

STUDIES_FILE = Path("studies/studies.yaml")
DVC_FILE = Path("studies/dvc.yaml")
DATA_DIR = Path("studies/data")
OUT_DIR = Path("studies/out")
REPORTS_DIR = Path("reports")
SCALES = ("cpu", "paper")
SLUG = re.compile(r"^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$")
CODE = ["lmc/__init__.py", "lmc/spec.py", "lmc/paths.py", "lmc/stage.py", "lmc/io.py", "lmc/seeds.py"]


@dataclass(frozen=True)
class Cell:
    study: str
    id: str
    labels: dict[str, str]  # axis name -> the name of this cell's value on it
    layers: list[dict]  # overrides, in order of precedence (later wins), per-scale values unresolved
    param_keys: list[str]  # the studies.yaml entries that define this cell


def load(path: Path = STUDIES_FILE) -> dict:
    if not path.exists():
        raise SpecError(f"studies: {path} not found; run from the repository root")
    raw = yaml.safe_load(path.read_text())
    if raw.get("scale") not in SCALES:
        raise SpecError(f"studies: scale={raw.get('scale')!r} in {path} is not allowed; choose one of cpu, paper")
    return raw


def study_names(raw: dict) -> list[str]:
    return list(raw["studies"])


def cells(raw: dict, study: str) -> list[Cell]:
    if study not in raw["studies"]:
        raise SpecError(f"studies: no study '{study}'; known: {', '.join(raw['studies'])}")
    s = raw["studies"][study]
    axes = s.get("axes", {})
    out = []
    for combo in itertools.product(*(list(values.items()) for values in axes.values())):
        labels = {axis: name for axis, (name, _) in zip(axes, combo)}
        cell_id = "-".join(labels.values())
        keys = [f"studies.{study}.base"] + [f"studies.{study}.axes.{a}.{n}" for a, n in labels.items()]
        layers = [s.get("base", {})] + [value for _, value in combo]
        if cell_id in s.get("cells", {}):
            keys.append(f"studies.{study}.cells.{cell_id}")
            layers.append(s["cells"][cell_id])
        if not SLUG.match(cell_id):
            raise SpecError(f"studies: cell id '{cell_id}' of {study} may hold only letters, digits, _ and -")
        out.append(Cell(study, cell_id, labels, layers, keys))
    return out


def find_cell(raw: dict, study: str, cell_id: str) -> Cell:
    for cell in cells(raw, study):
        if cell.id == cell_id:
            return cell
    raise SpecError(f"studies: no cell '{cell_id}' in study {study}")


_UNSET = object()  # a per-scale value that names only other scales: the key keeps its earlier value


def _at_scale(value, scale: str):
    if isinstance(value, dict) and value and set(value) <= set(SCALES):
        return value.get(scale, _UNSET)
    return value


def paper_dataset(raw: dict, cell: Cell) -> str:
    """The dataset the cell names (the paper's), before the scale maps it (mnist -> mnist5k on cpu)."""
    merged = {}
    for layer in cell.layers:
        merged.update(layer)
    return merged.get("dataset", Spec().dataset)


def resolve(raw: dict, cell: Cell, scale: str | None = None) -> Spec:
    """The cell's full, validated spec at `scale` (default: the file's)."""
    scale = scale or raw["scale"]
    merged = dict(raw["scales"][scale].get("defaults", {}))
    for layer in cell.layers:
        merged.update({k: v for k, v in ((k, _at_scale(v, scale)) for k, v in layer.items())
                       if v is not _UNSET})
    merged["dataset"] = scaled_dataset({**raw, "scale": scale}, merged.get("dataset", Spec().dataset))
    try:
        return spec_from_dict(merged)
    except SpecError as err:
        raise SpecError(f"studies: cell {cell.study}/{cell.id} at scale {scale}: {err}") from None


def datasets_used(raw: dict) -> list[str]:
    return sorted({paper_dataset(raw, c) for s in study_names(raw) for c in cells(raw, s)})


def cell_output(study: str, cell_id: str) -> Path:
    return OUT_DIR / study / f"{cell_id}.json"


def data_paths(dataset: str) -> dict[str, Path]:
    """The studies' copy of a (paper-named) dataset: its fingerprint and its two .beton files."""
    d = DATA_DIR / dataset
    return {"source": d / "source.json", "train": d / "train.beton", "test": d / "test.beton"}


def scaled_dataset(raw: dict, dataset: str) -> str:
    """What the file's scale trains on for the paper's `dataset` (mnist -> mnist5k at cpu scale)."""
    return raw["scales"][raw["scale"]].get("datasets", {}).get(dataset, dataset)


def stage_target(spec: Spec, argv: list[str] | None = None) -> tuple[str, dict[str, Path]]:
    """For the source and prepare stages: (dataset, output paths) of the default pipeline, or with
    `--study-dataset NAME` those of the studies' copy of NAME at the studies' scale."""
    import argparse

    from . import paths

    parser = argparse.ArgumentParser()
    parser.add_argument("--study-dataset", help="serve the studies' copy of this (paper-named) dataset")
    args = parser.parse_args(argv)
    if args.study_dataset is None:
        return spec.dataset, {"source": paths.SOURCE, **paths.BETONS}
    return scaled_dataset(load(), args.study_dataset), data_paths(args.study_dataset)


# ---- studies/dvc.yaml ---------------------------------------------------------------------------

def generate(raw: dict) -> str:
    """The text of studies/dvc.yaml (stages run from the repository root: wdir ..)."""
    studies_yaml = "studies/studies.yaml"
    stages = {}
    for ds in datasets_used(raw):
        p = data_paths(ds)
        stages[f"source-{ds}"] = {
            "cmd": f"python -m stages.source --study-dataset {ds}", "wdir": "..", "always_changed": True,
            "deps": CODE + ["lmc/data.py", "lmc/datasets.py", "lmc/studies.py", "stages/source.py"],
            "params": ["data_root", "download", {studies_yaml: ["scale", "scales"]}],
            "outs": [{str(p["source"]): {"cache": False}}]}
        stages[f"prepare-{ds}"] = {
            "cmd": f"python -m stages.prepare --study-dataset {ds}", "wdir": "..",
            "deps": [str(p["source"])] + CODE + ["lmc/data.py", "lmc/datasets.py", "lmc/studies.py",
                                                  "stages/prepare.py"],
            "outs": [str(p["train"]), str(p["test"])]}
    for study in study_names(raw):
        outs = []
        for cell in cells(raw, study):
            p = data_paths(paper_dataset(raw, cell))
            out = str(cell_output(study, cell.id))
            outs.append(out)
            stages[f"{study}-{cell.id}"] = {
                "cmd": f"python -m stages.cell {study} {cell.id}", "wdir": "..",
                "deps": [str(p["train"]), str(p["test"])] + CODE + [
                    "lmc/data.py", "lmc/augment.py", "lmc/models.py", "lmc/train.py", "lmc/device.py",
                    "lmc/connectivity.py",
                    "lmc/report.py", "lmc/api.py", "lmc/studies.py", "stages/cell.py"],
                "params": [{studies_yaml: ["scale", "scales"] + cell.param_keys}],
                "outs": [{out: {"cache": False}}]}
        stages[f"report-{study}"] = {
            "cmd": f"python -m stages.study_report {study}", "wdir": "..",
            "deps": outs + CODE + ["lmc/report.py", "lmc/studies.py", "lmc/study_report.py",
                                   "stages/study_report.py"],
            "params": [{studies_yaml: [f"studies.{study}"]}],
            "outs": [{str(REPORTS_DIR / f"{study}{ext}"): {"cache": False}} for ext in (".md", ".csv", ".png")]}
    header = ("# GENERATED by `python -m lmc.studies` from studies/studies.yaml: edit that file, not this one.\n"
              "# Run one study: dvc repro studies/dvc.yaml:report-<study>   (e.g. report-table1)\n")
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def main() -> None:
    raw = load()
    for study in study_names(raw):  # every cell must resolve at both scales before anything is written
        for cell in cells(raw, study):
            for scale in SCALES:
                resolve(raw, cell, scale)
    from .io import write_text_atomic

    write_text_atomic(DVC_FILE, generate(raw))
    print(f"wrote {DVC_FILE}: {sum(len(cells(raw, s)) for s in study_names(raw))} cells in "
          f"{len(study_names(raw))} studies")


if __name__ == "__main__":
    main()
