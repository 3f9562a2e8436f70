"""Studies: the paper's tables and figures as grids of twin experiments, defined in studies/studies.yaml.

A study's cells are the product of its axes. A cell's spec is Spec's defaults, then the scale's defaults,
then the study's `base`, then one value of each axis, then an explicit `cells.<id>` entry if there is one,
then the scale's `overrides`. Any value but `dataset` may be given per scale as {cpu: ..., paper: ...} (the
scale's `datasets` mapping says what each scale trains on); a scale with `like: <scale>` takes that scale's
value where it names none of its own. A whole axis value may be given per scale too: a scale it does not
name has no such cell. lmc/studies_dvc.py turns the file into one pipeline per scale, studies/<scale>/dvc.yaml.

Every scale keeps its results apart, side by side: studies/<scale>/ holds its dvc.yaml and dvc.lock, its
datasets (data/), trunks (trunk/), cell results (out/) and numeric records (numerics/); its reports are
reports/<scale>/<study>.{md,csv,png}. One DVC project (studies/, one cache) holds every scale.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from .spec import Spec, SpecError, read_yaml, spec_from_dict

ROOT = Path("studies")  # the studies' own DVC project: one cache, one pipeline per scale below it
STUDIES_FILE = ROOT / "studies.yaml"
REPORTS_DIR = Path("reports")
SCALES = ("cpu", "paper", "smoke")  # the scales a per-scale value may name; cpu and paper are required
REQUIRED_SCALES = ("cpu", "paper")
SCALE_KEYS = {"datasets", "defaults", "overrides", "like"}
SLUG = re.compile(r"^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$")
CODE = ["lmc/__init__.py", "lmc/numerics.py", "lmc/spec.py", "lmc/paths.py", "lmc/stage.py", "lmc/io.py", "lmc/seeds.py"]


@dataclass(frozen=True)
class Cell:
    study: str
    id: str
    labels: dict[str, str]  # axis name -> the name of this cell's value on it
    layers: list[dict]  # overrides, in order of precedence (later wins), per-scale values unresolved
    param_keys: list[str]  # the studies.yaml entries that define this cell


FIGURE_Y = ("barrier", "normalized_barrier")
FIGURE_KEYS = ("x", "y", "hue", "xscale", "cross_init", "row", "row_titles", "palette", "accuracy")  # study_report


def load(scale: str = "cpu", path: Path = STUDIES_FILE) -> dict:
    """The studies file, its structure checked (each cell's values are checked by `resolve`), seen at `scale`
    (raw["scale"]: the scale that `cells`, `resolve` and the paths below serve)."""
    if not path.exists():
        raise SpecError(f"studies: {path} not found; run from the repository root")
    raw = read_yaml(path, "studies")
    if not isinstance(raw, dict) or "scale" in raw:
        raise SpecError(f"studies: {path} must be a mapping without a top-level `scale:` (every scale has its own "
                        f"pipeline now: name one with --scale or SCALE=)")
    _check_shapes(raw, path)
    defined = [s for s in SCALES if s in raw["scales"]]
    missing_scales = [s for s in REQUIRED_SCALES if s not in defined]
    if missing_scales:
        raise SpecError(f"studies: {path} defines no scale(s) {', '.join(missing_scales)} under `scales:`")
    if scale not in defined:
        raise SpecError(f"studies: scale {scale!r} is not defined in {path}; choose one of "
                        f"{', '.join(defined or SCALES)}")
    raw["scale"] = scale
    for name, entry in raw["scales"].items():
        if name not in SCALES:
            raise SpecError(f"studies: unknown scale '{name}' under `scales:`; the scales are {', '.join(SCALES)}")
        unknown, like = set(entry) - SCALE_KEYS, entry.get("like")
        if unknown or (like is not None and (like not in defined or like == name)):
            raise SpecError(f"studies: scale {name} has unknown key(s) or `like:` "
                            f"{', '.join(sorted(unknown)) or entry.get('like')}; it may hold "
                            f"{', '.join(sorted(SCALE_KEYS))} (`like:` one of the other scales)")
    for name, study in raw.get("studies", {}).items():
        if not SLUG.match(name):
            raise SpecError(f"studies: study name '{name}' may hold only letters, digits, _ and -")
        unknown = set(study) - {"title", "finding", "axes", "figure", "base", "cells", "paper", "paper_accuracy",
                                "shared_trunk"}
        if unknown:
            raise SpecError(f"studies: study {name} has unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("title", "finding", "axes", "figure"):
            if key not in study:
                raise SpecError(f"studies: study {name} has no `{key}:`; see the other studies in {path}")
        fig = study["figure"]
        if fig.get("y") not in FIGURE_Y or "x" not in fig:
            raise SpecError(f"studies: study {name}'s figure needs x: <axis or key> and y: one of "
                            f"{', '.join(FIGURE_Y)}")
        unknown = set(fig) - set(FIGURE_KEYS)
        if unknown:  # a misspelt option would silently give a figure without it
            raise SpecError(f"studies: study {name}'s figure has unknown key(s) {', '.join(sorted(unknown))}; "
                            f"it may hold {', '.join(FIGURE_KEYS)}")
        # the report plots along an axis or a spec key its results record (a `legacy` key only away from its
        # legacy value: Spec.record)
        columns = {"cell", *study["axes"], *(f.name for f in dataclasses.fields(Spec) if "legacy" not in f.metadata)}
        for key in ("x", "hue", "row"):
            if key in fig and (not isinstance(fig[key], str) or fig[key] not in columns):
                raise SpecError(f"studies: study {name}'s figure {key}: {fig[key]!r} is neither one of its axes "
                                f"({', '.join(study['axes'])}) nor a spec key every result records")
        ids = [c.id for c in cells(raw, name)]
        if len(ids) != len(set(ids)):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise SpecError(f"studies: study {name} has two cells named '{dup}' (value names joined by '-'); "
                            f"rename an axis value")
        every_id = {c.id for s in defined for c in cells({**raw, "scale": s}, name)}
        for key in ("cells", "paper", "paper_accuracy"):  # keyed by cell id: a misspelt one would be ignored
            stray = [i for i in study.get(key, {}) if i not in every_id]
            if stray:
                near = difflib.get_close_matches(str(stray[0]), every_id, n=1)
                raise SpecError(f"studies: study {name}'s `{key}:` names no cell '{stray[0]}' at any scale"
                                + (f"; did you mean '{near[0]}'?" if near else ""))
    return raw


def _check_shapes(raw: dict, path: Path) -> None:
    """Every entry of the file has the shape the code reads it as: one line naming the first that has not."""
    def need(value, kind: type, where: str, what: str) -> None:
        if not isinstance(value, kind):
            raise SpecError(f"studies: {where} in {path} must be {what}, not {type(value).__name__}")

    unknown = set(raw) - {"scales", "studies"}
    if unknown:
        raise SpecError(f"studies: {path} has unknown top-level key(s) {', '.join(map(str, sorted(unknown, key=str)))}"
                        f"; it holds `scales:` and `studies:`")
    need(raw.get("scales"), dict, "`scales:`", "a mapping of scale names to their settings")
    need(raw.get("studies"), dict, "`studies:`", "a mapping of study names to studies")
    for name, entry in raw["scales"].items():
        need(entry, dict, f"scales.{name}", "a mapping")
        for key in ("datasets", "defaults", "overrides"):
            need(entry.get(key, {}), dict, f"scales.{name}.{key}", "a mapping")
    for name, study in raw["studies"].items():
        need(name, str, f"study name {name!r}", "a string")
        need(study, dict, f"studies.{name}", "a mapping (title, finding, axes, figure, …)")
        for key in ("base", "axes", "figure", "cells", "paper", "paper_accuracy"):
            need(study.get(key, {}), dict, f"studies.{name}.{key}", "a mapping")
        for axis, values in study.get("axes", {}).items():
            need(values, dict, f"studies.{name}.axes.{axis}", "a mapping of value names to settings")
            if not values:
                raise SpecError(f"studies: studies.{name}.axes.{axis} in {path} has no values; give it one at least")
            for value_name, value in values.items():
                need(value_name, str, f"value name {value_name!r} of studies.{name}.axes.{axis}", "a string")
                need(value, dict, f"studies.{name}.axes.{axis}.{value_name}", "a mapping of settings")
        for cell_id, value in study.get("cells", {}).items():
            need(value, dict, f"studies.{name}.cells.{cell_id}", "a mapping of settings")


def study_names(raw: dict) -> list[str]:
    return list(raw["studies"])


def scale_names(raw: dict) -> list[str]:
    """The scales the file defines."""
    return [s for s in SCALES if s in raw["scales"]]


def _is_per_scale(value) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(SCALES)


def cells(raw: dict, study: str) -> list[Cell]:
    """The study's cells at the file's scale (an axis value given per scale exists only where it is named)."""
    if study not in raw["studies"]:
        raise SpecError(f"studies: no study '{study}'; known: {', '.join(raw['studies'])}")
    s = raw["studies"][study]
    axes = s.get("axes", {})
    out = []
    for combo in itertools.product(*(list(values.items()) for values in axes.values())):
        combo = [(name, _at_scale(value, raw["scale"], raw)) for name, value in combo]
        if any(value is _UNSET for _, value in combo):
            continue
        labels = {axis: name for axis, (name, _) in zip(axes, combo)}
        cell_id = "-".join(labels.values())
        keys = ([f"studies.{study}.base"] if "base" in s else []) + [
            f"studies.{study}.axes.{a}.{n}" for a, n in labels.items()]
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


def _at_scale(value, scale: str, raw: dict):
    """A per-scale value at `scale` (or at the scale it is `like`), _UNSET where neither is named."""
    if not _is_per_scale(value):
        return value
    like = raw["scales"][scale].get("like")
    return value.get(scale, value.get(like, _UNSET) if like else _UNSET)


def paper_dataset(raw: dict, cell: Cell) -> str:
    """The dataset the cell names (the paper's), before the scale maps it (mnist -> mnist5k on cpu)."""
    merged = {}
    for layer in cell.layers:
        merged.update(layer)
    dataset = merged.get("dataset", Spec().dataset)
    if not isinstance(dataset, str):
        raise SpecError(f"studies: cell {cell.study}/{cell.id} gives dataset per scale; name the paper's dataset "
                        f"and map it in `scales.<scale>.datasets` instead")
    return dataset


def resolve(raw: dict, cell: Cell, scale: str | None = None) -> Spec:
    """The cell's full, validated spec at `scale` (default: the file's)."""
    scale = scale or raw["scale"]
    merged = dict(raw["scales"][scale].get("defaults", {}))
    for layer in cell.layers + [raw["scales"][scale].get("overrides", {})]:
        merged.update({k: v for k, v in ((k, _at_scale(v, scale, raw)) for k, v in layer.items())
                       if v is not _UNSET})
    merged["dataset"] = scaled_dataset({**raw, "scale": scale}, merged.get("dataset", Spec().dataset))
    try:
        return spec_from_dict(merged)
    except SpecError as err:
        raise SpecError(f"studies: cell {cell.study}/{cell.id} at scale {scale}: {err}") from None


def datasets_used(raw: dict) -> list[str]:
    return sorted({paper_dataset(raw, c) for s in study_names(raw) for c in cells(raw, s)})


def scale_dir(scale: str) -> Path:
    """One scale's pipeline: its dvc.yaml and dvc.lock, data/, trunk/, out/ and numerics/."""
    return ROOT / scale


def dvc_file(scale: str) -> Path:
    return scale_dir(scale) / "dvc.yaml"


def lock_file(scale: str) -> Path:
    return scale_dir(scale) / "dvc.lock"


def cell_output(scale: str, study: str, cell_id: str) -> Path:
    return scale_dir(scale) / "out" / study / f"{cell_id}.json"


def numerics_record(scale: str, stage: str) -> Path:
    """The numeric environment a study stage ran in (lmc/numerics.py): git-tracked, not a DVC output."""
    return scale_dir(scale) / "numerics" / f"{stage}.json"


def notes_path(scale: str, study: str) -> Path:
    """What a study's results at `scale` mean, written by hand; appended to its report."""
    return scale_dir(scale) / "notes" / f"{study}.md"


def cpu_cells(raw: dict, study: str) -> list[str]:
    """The cells of `study` that the cpu scale has too (a report at another scale shows their cpu results)."""
    if raw["scale"] == "cpu":
        return []
    there = {c.id for c in cells({**raw, "scale": "cpu"}, study)}
    return [c.id for c in cells(raw, study) if c.id in there]


def missing_cpu_results(raw: dict, study: str) -> None:
    """Refuse, in one line and before any work, a study at a scale other than cpu whose report would find the
    cpu results of its cells missing (the report shows them beside its own, and never reruns them)."""
    missing = [p for p in (cell_output("cpu", study, c) for c in cpu_cells(raw, study)) if not p.exists()]
    if missing:
        raise SpecError(f"studies: {study}'s {raw['scale']}-scale report shows the cpu scale's results beside its "
                        f"own, and {len(missing)} are missing ({missing[0]}); run `make study STUDY={study}` "
                        f"(cpu scale) first")


def report_path(scale: str, study: str) -> Path:
    """A study's report at a scale, without suffix (.md, .csv, .png)."""
    return REPORTS_DIR / scale / study


def has_shared_trunk(raw: dict, study: str) -> bool:
    """A study with `shared_trunk: true` trains each spawn_step's trunk once (stage trunk-<study>), at a scale
    where it has cells."""
    return bool(raw["studies"][study].get("shared_trunk", False)) and bool(cells(raw, study))


# What a trunk does not depend on: where B branches off, B's own stream, and how the path is evaluated.
_NOT_TRUNK = ("spawn_step", "order_seed_b", "aug_seed_b", "alphas", "refine_alphas", "align")


def trunk_key(spec: Spec) -> dict:
    """The settings a trunk is trained for: the spec but the keys in _NOT_TRUNK."""
    return {k: v for k, v in spec.record().items() if k not in _NOT_TRUNK}


def trunk_dir(scale: str, study: str) -> Path:
    return scale_dir(scale) / "trunk" / study


def trunk_path(scale: str, study: str, step: int) -> Path:
    return trunk_dir(scale, study) / f"step{step}.pt"


def trunk_plan(raw: dict, study: str) -> tuple[Spec, list[int]]:
    """One spec the study's trunk trains with, and the spawn steps its cells branch at; every cell must share
    the trunk key."""
    specs = [resolve(raw, c) for c in cells(raw, study)]
    for spec, cell in zip(specs, cells(raw, study)):
        if trunk_key(spec) != trunk_key(specs[0]):
            diff = [k for k, v in trunk_key(spec).items() if trunk_key(specs[0])[k] != v]
            raise SpecError(f"studies: {study} has shared_trunk, but cell {cell.id} differs from the first cell in "
                            f"{', '.join(diff)}; vary only {', '.join(_NOT_TRUNK)} in it")
    return specs[0], sorted({s.spawn_step for s in specs if s.spawn_step > 0})


def data_paths(scale: str, dataset: str) -> dict[str, Path]:
    """A scale's copy of a (paper-named) dataset: its fingerprint and its two .beton files."""
    d = scale_dir(scale) / "data" / dataset
    return {"source": d / "source.json", "train": d / "train.beton", "test": d / "test.beton"}


def scaled_dataset(raw: dict, dataset: str) -> str:
    """What the file's scale trains on for the paper's `dataset` (mnist -> mnist5k at cpu scale)."""
    return raw["scales"][raw["scale"]].get("datasets", {}).get(dataset, dataset)


def stage_args(*names: str, argv: list[str] | None = None) -> argparse.Namespace:
    """A study stage's command line: `names` positionally, then `--scale <scale>` (studies/<scale>/dvc.yaml
    writes it into every command)."""
    parser = argparse.ArgumentParser()
    for name in names:
        parser.add_argument(name)
    parser.add_argument("--scale", required=True, choices=SCALES)
    return parser.parse_args(argv)


def stage_target(spec: Spec, argv: list[str] | None = None) -> tuple[str, dict[str, Path]]:
    """For the source and prepare stages: (dataset, output paths) of the default pipeline, or with
    `--study-dataset NAME --scale S` those of scale S's copy of NAME."""
    from . import paths

    parser = argparse.ArgumentParser()
    parser.add_argument("--study-dataset", help="serve a scale's copy of this (paper-named) dataset")
    parser.add_argument("--scale", choices=SCALES, help="the scale whose copy (with --study-dataset)")
    args = parser.parse_args(argv)
    if args.study_dataset is None:
        return spec.dataset, {"source": paths.SOURCE, **paths.BETONS}
    if args.scale is None:
        raise SpecError("studies: --study-dataset needs --scale (the scale whose copy to serve)")
    raw = load(args.scale)
    if args.study_dataset not in datasets_used(raw):
        raise SpecError(f"studies: no study trains on dataset '{args.study_dataset}'; the studies' datasets are "
                        f"{', '.join(datasets_used(raw))}")
    return scaled_dataset(raw, args.study_dataset), data_paths(args.scale, args.study_dataset)
