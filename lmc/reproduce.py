"""The reproduction check: rebuild outputs from scratch, hash the files, compare with the committed lock.

    python -m lmc.reproduce                                   # every stage of the default experiment
    python -m lmc.reproduce --project studies/cpu --sample 6  # 6 cells of the cpu-scale studies, by a seed
    python -m lmc.reproduce --project studies/cpu --stages table2-sgd-hi,fig2-vit-lo   # cells by name
    python -m lmc.reproduce --against REF                     # compare with another commit's results
    python -m lmc.reproduce --relock-report FILE              # after a relock: how each barrier moved

The check clones HEAD into a scratch folder, deletes there every output of the stages it checks and of the
stages above them (data, trunks), runs `dvc repro -f --no-run-cache` on them, hashes what they wrote as DVC
does, and compares each hash with the committed dvc.lock. An output counts as reproduced only when this check
recomputed it: a fresh clone's tracked results, and the outputs of stages not drawn, are reported as "not
recomputed" and never counted. Exit 0 when every output of the checked stages was recomputed with the
committed bytes; else 1, with a report: which outputs differ, how far each metric moved, and how the numeric
environment that made them (reports/numerics.json, studies/<scale>/numerics/) differs from the committed one,
with what that means (lmc/numerics.py). The environment records themselves are never compared.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import random
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from . import numerics, paths
from .io import OutputError, write_text_atomic

GUARANTEE = {
    "portable": "the portable mode gives the same bytes on every x86-64 CPU",
    "native": "the native mode gives the same bytes on the same kind of CPU only",
    "cuda": "CUDA results reproduce on the same GPU model and driver only",
}
# Fields of a numeric environment that decide bytes (the rest, such as the pins' echo, follow from these).
DECIDING = ("numerics", "cpu", "cpu_id", "isa", "aten_cpu_capability", "torch", "mkl", "onednn", "onednn_enabled",
            "threads", "cuda")
RECORDED_LATER = ("cpu_id", "isa")  # records made before 2026-11-30 lack them


def committed(ref: str, path: Path) -> str | None:
    proc = subprocess.run(["git", "show", f"{ref}:{path.as_posix()}"], capture_output=True, text=True,
                          errors="replace")
    return proc.stdout if proc.returncode == 0 else None


def committed_md5(ref: str, path: Path) -> str | None:
    """The md5 DVC would record for what git holds at `ref:path` (a file, or a folder as dvc_md5 hashes one),
    None where git tracks nothing there."""
    kind = subprocess.run(["git", "cat-file", "-t", f"{ref}:{path.as_posix()}"], capture_output=True, text=True)
    if kind.returncode:
        return None
    show = lambda p: subprocess.run(["git", "show", f"{ref}:{p}"], capture_output=True).stdout  # noqa: E731
    if kind.stdout.strip() != "tree":
        return hashlib.md5(show(path.as_posix())).hexdigest()
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref, "--", f"{path.as_posix()}/"],
                           capture_output=True, text=True).stdout.splitlines()
    listing = [{"md5": hashlib.md5(show(f)).hexdigest(), "relpath": Path(f).relative_to(path).as_posix()}
               for f in files]
    return _listing_md5(listing)


def lock_stages(text: str | None) -> dict[str, dict]:
    """Per stage of a dvc.lock, in its order: {"outs": {path: md5}, "deps": [path, ...]}, paths relative to
    the lock's folder."""
    stages = (yaml.safe_load(text) or {}).get("stages", {}) if text else {}
    return {name: {"outs": {o["path"]: o.get("md5") for o in st.get("outs", [])},
                   "deps": [d["path"] for d in st.get("deps", [])]} for name, st in stages.items()}


def upstream(stages: dict[str, dict], targets: list[str]) -> list[str]:
    """`targets` and every stage whose outputs they read, directly or not, in the lock's order."""
    writer = {out: name for name, st in stages.items() for out in st["outs"]}
    needed, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [writer[d] for d in stages[name]["deps"] if d in writer]
    return [name for name in stages if name in needed]


def dvc_md5(path: Path) -> str | None:
    """The md5 DVC records for the file or folder at `path` (a folder's: the md5 of its sorted listing of
    relative paths and file md5s, with ".dir"), None where nothing is."""
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    if not path.is_dir():
        return None
    return _listing_md5([{"md5": dvc_md5(f), "relpath": f.relative_to(path).as_posix()}
                         for f in path.rglob("*") if f.is_file()])


def _listing_md5(listing: list[dict]) -> str:
    """A folder's md5 as DVC computes it: of the JSON of its files' entries sorted by relative path."""
    listing = sorted(listing, key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def metric_moves(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key, committed, here) of every metric that differs, nested keys joined with dots."""
    moves = []
    for key in list(old) + [k for k in new if k not in old]:  # the committed order, then keys added here
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            moves += metric_moves(a, b, f"{prefix}{key}.")
        elif a != b:
            moves.append((f"{prefix}{key}", a, b))
    return moves


def env_differences(old: dict, new: dict) -> list[str]:
    """'field: committed → here' for each deciding field of two numeric environments (a field added to the
    records later, which one of them predates, is unknown there: not a difference)."""
    return [f"{k}: {old.get(k)} → {new.get(k)}" for k in DECIDING if old.get(k) != new.get(k)
            and not (k in RECORDED_LATER and (k not in old or k not in new))]


def explain(old: dict | None, new: dict | None) -> str:
    """What a difference in bytes means, given the environments that made the committed and the new results."""
    if not old:
        return ("the committed results record no numeric environment (made before records existed); rerun them "
                "once in the portable mode to get results that reproduce on any x86-64 CPU")
    if not new:
        return "the rebuild recorded no numeric environment (its stage stopped before it computed: see the log)"
    if old.get("numerics") != new.get("numerics"):
        return f"the results were made in another numerics mode ({old.get('numerics')} → {new.get('numerics')})"
    if "cuda" in old or "cuda" in new:
        same_gpu = (old.get("cuda") or {}).get("gpu") == (new.get("cuda") or {}).get("gpu") and \
            (old.get("cuda") or {}).get("driver") == (new.get("cuda") or {}).get("driver")
        return GUARANTEE["cuda"] + ("; same GPU and driver here, so this is a bug: report it" if same_gpu
                                    else ": this is another GPU model or driver, so different bytes are expected")
    diffs = env_differences(old, new)
    if old.get("numerics") == "native":
        return GUARANTEE["native"] + (f" ({'; '.join(diffs)}): different bytes are expected" if diffs else
                                      "; the environment is the same, so this is a bug: report it")
    versions = [d for d in diffs if d.split(":")[0] in ("torch", "mkl", "onednn")]
    if versions:
        return f"other library versions ({'; '.join(versions)}): pinned kernels of another build may sum differently"
    return (GUARANTEE["portable"] + "; these results differ all the same, so a kernel choice is left unpinned "
            f"({'; '.join(diffs) or 'same environment'}): report it with this output")


def check(project: Path, ref: str, here: Path, checked: list[str]) -> tuple[bool, str]:
    """(reproduced, report) for one pipeline (the repository root, or a scale of the studies: studies/<scale>),
    whose stages `checked` were rerun from scratch in the clone at `here` (their outputs deleted first, so any
    there now were recomputed). Every output of the committed lock lands in one of three groups: recomputed
    and equal, recomputed and different (or not rebuilt: its stage failed), and not recomputed in this check,
    which never counts as reproduced."""
    lock_path = project / "dvc.lock"
    old = lock_stages(committed(ref, lock_path))
    if not old:
        return False, f"{lock_path} at {ref} records no outputs: nothing to compare"
    same, changed, unchecked, untrue = [], [], [], []
    for stage, st in old.items():
        for path, md5 in st["outs"].items():
            if stage in checked:
                (same if dvc_md5(here / project / path) == md5 else changed).append((stage, path))
                continue
            unchecked.append(path)
            tracked = committed_md5(ref, project / path)  # a result git holds must be the one its lock names
            if tracked is not None and tracked != md5:
                untrue.append(path)
    counts = (f"\n  recomputed here, the committed bytes: {len(same)}"
              f"\n  recomputed here, other bytes (or not rebuilt): {len(changed)}"
              f"\n  not recomputed in this check, never counted as reproduced: {len(unchecked)}")
    if untrue:
        counts += (f"\n  NOT what the lock records: {len(untrue)} tracked output(s) committed at {ref} with other "
                   f"bytes than {lock_path} names (edited by hand, or committed without their lock): "
                   + ", ".join(untrue[:10]) + (" …" if len(untrue) > 10 else ""))
    if not changed and same and not untrue:
        return True, (f"reproduced: all {len(same)} outputs of {lock_path} that this check recomputed have the "
                      f"committed bytes ({ref}){counts}")
    if not changed:
        verdict = "NOT reproduced" if untrue else "NOT checked"
        return False, f"{verdict}: this check recomputed {len(same) or 'no'} output(s) of {lock_path}{counts}"
    lines = [f"NOT reproduced: {len(changed)} of the {len(changed) + len(same)} outputs of {lock_path} that this "
             f"check recomputed differ from {ref}{counts}", ""]
    for stage, path in changed:
        full = here / project / path
        lines.append(f"- {path} (stage {stage})" + ("" if full.exists() else ": not rebuilt here"))
        before = committed(ref, project / path) if path.endswith(".json") else None
        if before and full.exists():
            try:
                moves = metric_moves(json.loads(before), json.loads(full.read_text()))
            except ValueError:
                moves = []
            for key, a, b in moves[:40]:
                delta = f" ({b - a:+.6g})" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
                lines.append(f"    {key}: {a} → {b}{delta}")
            if len(moves) > 40:
                lines.append(f"    … and {len(moves) - 40} more")
    lines.append("")
    lines.append("Numeric environment (committed → here):")
    for stage in sorted({stage for stage, _ in changed}):
        record = _record_path(project, stage)
        before_env = _load(committed(ref, record)).get(stage)
        here_env = _load(_read(here / record)).get(stage)
        if before_env is None and here_env is None and (here / record).exists():
            lines.append(f"- {stage}: computes from the outputs of the stages above, no kernels of its own")
            continue
        if before_env and here_env:
            detail = "; ".join(env_differences(before_env, here_env)) or "no deciding difference"
        else:
            detail = "no record from the rebuild" if before_env else "no committed record"
        lines.append(f"- {stage}: {detail}")
        lines.append(f"  meaning: {explain(before_env, here_env)}")
    return False, "\n".join(lines)


def scratch_clone(commit: str, where: Path | None = None) -> Path:
    """A clone of `commit` in a new folder: tracked files only, no DVC cache, so nothing in it is prebuilt
    except what git tracks (which the check deletes before rebuilding)."""
    folder = Path(tempfile.mkdtemp(prefix="lmc-reproduce-", dir=where))
    git = lambda *args: subprocess.run(["git", *args], check=True, capture_output=True, text=True)  # noqa: E731
    root = git("rev-parse", "--show-toplevel").stdout.strip()
    git("clone", "-q", "--shared", "--no-checkout", root, str(folder))
    git("-C", str(folder), "checkout", "-q", "--detach", commit)
    return folder


def rebuild(here: Path, project: Path, stages: dict[str, dict], targets: list[str], cpu: str | None = None
            ) -> list[str]:
    """Delete in the clone `here` the outputs of `targets` and of every stage above them, then run those
    stages from scratch with DVC (never from a run cache); the stages rebuilt, whatever DVC's exit status.
    With `cpu`, each stage's `python` runs under QEMU's emulation of that CPU model, DVC itself natively."""
    rerun = upstream(stages, targets)
    for name in rerun:
        for out in stages[name]["outs"]:
            path = here / project / out
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    forget_records(here, project, rerun)
    bin_dir = Path(sys.executable).parent
    path = [str(bin_dir), os.environ.get("PATH", "")]
    env = numerics.unpinned_environ()
    if cpu:  # DVC's children escape an emulator that runs DVC: emulate each stage's python instead
        path.insert(0, str(emulating_python(here / ".emulated", cpu)))
        env[numerics.EMULATED] = cpu
    subprocess.run([str(bin_dir / "dvc"), "repro", "--force", "--no-run-cache", "--keep-going", *targets],
                   cwd=here / project, env={**env, "PATH": os.pathsep.join(path)})
    return rerun


def forget_records(here: Path, project: Path, names: list[str]) -> None:
    """Remove the committed numeric records of the stages `names` from the clone `here` (git tracks them, DVC
    does not), so that a stage that fails in the rebuild shows no record rather than the committed one."""
    for name in names:
        record = here / _record_path(project, name)
        if record == here / paths.NUMERICS and record.exists():  # the default experiment's: one file, a key each
            write_text_atomic(record, json.dumps({k: v for k, v in _load(record.read_text()).items() if k != name},
                                                 indent=1) + "\n")
        elif record != here / paths.NUMERICS:
            record.unlink(missing_ok=True)


def emulating_python(folder: Path, cpu: str) -> Path:
    """`folder`, holding a `python` that runs this Python under QEMU's user-mode emulation of `cpu`."""
    qemu = shutil.which("qemu-x86_64")
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join([qemu, "-cpu", cpu, sys.executable])} "$@"\n')
    wrapper.chmod(0o755)
    return folder


SAMPLE_BUDGET_S = 480  # the default sample's cells, by their measured times: a CI job of 20 min with set-up


def cell_strata(scale: str, locked: dict[str, dict]) -> dict[str, tuple[str, str, float]]:
    """(model, optimizer, seconds) of each cell stage of the scale's lock: its spec's model and optimizer, and
    its time as measured on the development CPU (reports/cost-measured.json) or, for a cell never timed, as
    lmc/cost.py estimates it; a cell on a trunk adds the trunk's estimate."""
    from . import cost, studies
    raw = studies.load(scale)
    measured = _load(_read(cost.MEASURED)) if scale == "cpu" else {}
    out = {}
    for study in studies.study_names(raw):
        trunk = f"trunk-{study}"
        trunk_s = (3600 * cost.cell_hours(studies.trunk_plan(raw, study)[0])
                   if trunk in locked and studies.has_shared_trunk(raw, study) else 0.0)
        for cell in studies.cells(raw, study):
            stage = f"{study}-{cell.id}"
            if stage in locked:
                spec = studies.resolve(raw, cell)
                seconds = measured.get(stage) or 3600 * cost.cell_hours(spec)
                out[stage] = (spec.model, spec.optimizer, seconds + trunk_s)
    return out


def draw(cells: dict[str, tuple[str, str, float]], k: int, seed: int, budget_s: float) -> list[str]:
    """k cells spread over the models and optimizers: the (model, optimizer) groups in an order the seed
    shuffles, one cell from each in turn, each group's cells shuffled too; a cell whose time would take the
    sample past `budget_s` is passed over."""
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[str]] = {}
    for stage, (model, optimizer, _) in sorted(cells.items()):
        groups.setdefault((model, optimizer), []).append(stage)
    order = sorted(groups)
    rng.shuffle(order)
    for key in order:
        rng.shuffle(groups[key])
    picked, spent = [], 0.0
    while len(picked) < k and any(groups.values()):
        for key in order:
            if groups[key] and len(picked) < k:
                stage = groups[key].pop()
                if spent + cells[stage][2] <= budget_s:
                    picked.append(stage)
                    spent += cells[stage][2]
    return picked


RELOCK_KEYS = ("barrier_test", "barrier_train", "barrier_test_cross_init", "barrier_train_cross_init")


def relock_report(ref: str, results: list[Path], title: str) -> str:
    """A markdown table of how each result's barriers moved against `ref` (in percentage points), and every
    verdict against the 2% line that changed: what a relock reports. A summary comes first, one row per
    group of results (the default experiment, then each study)."""
    from .report import THRESHOLD
    rows = ["| result | metric | before (%) | after (%) | moved (pp) | verdict |", "|---|---|---|---|---|---|"]
    groups: dict[str, dict] = {}
    for path in results:
        before = _load(committed(ref, path))
        after = _load(path.read_text() if path.exists() else None)
        old, new = before.get("metrics", before), after.get("metrics", after)
        name = "default experiment" if path == paths.METRICS else f"{path.parts[-4]}/{path.parent.name}"
        group = groups.setdefault(name,
                                  {"compared": 0, "moves": [], "flips": []})
        for key in RELOCK_KEYS:
            a, b = old.get(key), new.get(key)
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                if a is not None or b is not None:
                    rows.append(f"| {path.as_posix()} | {key} | {a} | {b} | | status |")
                continue
            group["compared"] += 1
            flip = (a < THRESHOLD) != (b < THRESHOLD)
            verdict = ("**connected → not**" if b >= THRESHOLD else "**not → connected**") if flip else ""
            if flip:
                group["flips"].append(f"{path.as_posix()} {key} ({100 * a:.2f} → {100 * b:.2f}%)")
            if a != b:
                group["moves"].append(abs(b - a))
                rows.append(f"| {path.as_posix()} | {key} | {100 * a:.2f} | {100 * b:.2f} | {100 * (b - a):+.2f} | {verdict} |")
    moves = [m for g in groups.values() for m in g["moves"]]
    flips = [f for g in groups.values() for f in g["flips"]]
    summary = (f"{sum(g['compared'] for g in groups.values())} barriers compared with {ref}; {len(moves)} moved, "
               f"the largest by {100 * max(moves, default=0.0):.2f} pp; verdicts against the "
               f"{100 * THRESHOLD:.0f}% line that changed: " + (", ".join(flips) if flips else "none"))
    table = ["| results | barriers compared | moved | median move of those (pp) | largest move (pp) | verdicts "
             "changed |", "|---|---|---|---|---|---|"]
    for name, g in groups.items():
        median = f"{100 * statistics.median(g['moves']):.2f}" if g["moves"] else "–"
        table.append(f"| {name} | {g['compared']} | {len(g['moves'])} | {median} | "
                     f"{100 * max(g['moves'], default=0.0):.2f} | {len(g['flips']) or 'none'} |")
    return f"# {title}\n\n{summary}.\n\n" + "\n".join(table) + "\n\n" + "\n".join(rows) + "\n"


def _record_path(project: Path, stage: str) -> Path:
    if project.resolve() == Path(".").resolve():
        return paths.NUMERICS
    return project / "numerics" / f"{stage}.json"  # a scale of the studies (lmc.studies.numerics_record)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _load(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def usage_problem(project: Path, ref: str) -> str | None:
    """What makes the command impossible, in one line (not at the repository's top, a ref git does not know, a
    project that is no pipeline, a committed lock that is not YAML), before anything is compared; None when
    nothing does."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
    if not top or Path(top).resolve() != Path.cwd().resolve():
        return "run from the repository's top folder (where dvc.yaml and lmc/ are), as make check-repro does"
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True).returncode:
        return f"--against {ref}: git knows no such commit here; name a commit, branch or tag (default HEAD)"
    if not (project / "dvc.yaml").exists():
        return f"--project {project}: no dvc.yaml there; use . or studies/<scale> (one of the scales' folders)"
    try:
        yaml.safe_load(committed(ref, project / "dvc.lock") or "")
    except yaml.YAMLError:
        return f"{project / 'dvc.lock'} at {ref} is not valid YAML; name a commit whose lock is whole"
    return None


def targets(args, locked: dict[str, dict]) -> tuple[list[str], str]:
    """The stages to rebuild, from the options (every stage of the default experiment when none are named), and
    how they were chosen; raises ValueError with the one-line problem."""
    project = Path(args.project)
    if args.stages:
        names = [s for s in args.stages.split(",") if s]
        unknown = [s for s in names if s not in locked]
        if unknown:
            close = difflib.get_close_matches(unknown[0], locked, n=1)
            raise ValueError(f"--stages: {unknown[0]} is no stage of {project / 'dvc.lock'} at {args.against}"
                             + (f" (did you mean {close[0]}?)" if close else ""))
        return names, f"the stages named: {', '.join(names)}"
    if args.sample is not None:
        if project.parent != Path("studies"):
            raise ValueError("--sample draws cells of a scale of the studies: use --project studies/<scale>")
        seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
        cells = cell_strata(project.name, locked)
        picked = draw(cells, args.sample, seed, args.budget_s)
        seconds = sum(cells[c][2] for c in picked)
        return picked, (f"drew {len(picked)} of the {len(cells)} cells of {project} with seed {seed} ({seconds:.0f} s "
                        f"by their measured times, budget {args.budget_s:.0f} s): {', '.join(picked)}\n"
                        f"the same draw again: make check-repro SCALE={project.name} SAMPLE={args.sample} SEED={seed}")
    if project.resolve() != Path(".").resolve():
        raise ValueError(f"name the cells of {project} to rebuild: --sample K (drawn by a seed) or --stages "
                         f"a,b (every cell takes hours: --sample {len(locked)} draws them all)")
    return list(locked), f"every stage of {project / 'dvc.lock'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmc.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="the pipeline to check: . (default) or studies/<scale>")
    parser.add_argument("--against", default="HEAD", help="the commit whose results are the reference")
    parser.add_argument("--sample", type=int, metavar="K", help="rebuild K cells of a scale of the studies, spread "
                        "over models and optimizers, drawn by --seed (their data and trunk stages too)")
    parser.add_argument("--seed", type=int, help="the draw's seed (default: a new one, printed)")
    parser.add_argument("--budget-s", type=float, default=SAMPLE_BUDGET_S, help="the most seconds the drawn cells "
                        "may take by their measured times on the development CPU (default %(default)s)")
    parser.add_argument("--stages", help="rebuild these stages (comma-separated), with the stages above them")
    parser.add_argument("--cpu", metavar="MODEL", help="run each stage under QEMU's emulation of this CPU model "
                        "(qemu-x86_64 -cpu help; hours for the default experiment: python -m lmc.fingerprint "
                        "--check --cpu MODEL is the quick form)")
    parser.add_argument("--workdir", type=Path, help="where to make the scratch clone (default: the temp folder)")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the verdict and its report there")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone (kept anyway on a failure)")
    parser.add_argument("--relock-report", metavar="FILE",
                        help="instead of checking, write how every barrier moved against --against (a relock)")
    args = parser.parse_args(argv)
    project = Path(args.project)
    problem = usage_problem(project, args.against)
    if not problem and args.sample is not None and args.sample < 1:
        problem = f"--sample {args.sample}: draw at least one cell"
    if not problem and args.cpu and not shutil.which("qemu-x86_64"):
        problem = "--cpu needs QEMU's user-mode emulator: apt-get install qemu-user"
    if not problem and args.workdir and not args.workdir.is_dir():
        problem = f"--workdir {args.workdir}: no such folder"
    if not problem and not (Path(sys.executable).parent / "dvc").exists():
        problem = f"no dvc beside {sys.executable}: run make setup, or the check from the project's .venv"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.relock_report:
        results = [paths.METRICS] + sorted(Path("studies").glob("*/out/*/*.json"))
        text = relock_report(args.against, results, f"Relock against {args.against}: how the barriers moved")
        try:
            write_text_atomic(args.relock_report, text)
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(text.split("\n\n")[1])
        return 0
    locked = lock_stages(committed(args.against, project / "dvc.lock"))
    try:
        if not locked:
            raise ValueError(f"{project / 'dvc.lock'} at {args.against} records no stage: nothing to check")
        chosen, chosen_how = targets(args, locked)
        if not chosen:  # dvc repro without targets would rebuild every stage of the folder
            raise ValueError(f"no stage to rebuild ({chosen_how.splitlines()[0]}); raise --budget-s or name "
                             f"--stages")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                      text=True).stdout.strip():
        print(f"note: the check runs the code of HEAD ({head}); uncommitted changes here are not part of it")
    try:
        here = scratch_clone(head, args.workdir)
    except subprocess.CalledProcessError as err:
        print(f"error: cannot clone {head} into a scratch folder: {(err.stderr or '').strip() or err}",
              file=sys.stderr)
        return 2
    print(f"{chosen_how}\nrebuilding them and the stages above them from scratch in {here}", flush=True)
    start = time.monotonic()
    rebuilt = rebuild(here, project, locked, chosen, args.cpu)
    ok, report = check(project, args.against, here, rebuilt)
    where = f" under QEMU's emulation of {args.cpu}" if args.cpu else ""
    report = (f"{chosen_how}\n{report}\n(the code of {head}{where}; {len(rebuilt)} stages rebuilt in "
              f"{time.monotonic() - start:.0f} s)")
    print(report)
    if args.report:
        try:
            write_text_atomic(args.report, report + "\n")
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
    if ok and not args.keep:
        shutil.rmtree(here, ignore_errors=True)
    else:
        print(f"the scratch clone is kept: {here}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
