"""The reproduction check: after `dvc repro -f`, compare the results with the committed ones and explain.

    python -m lmc.reproduce                 # the default experiment (make check-repro reruns it first)
    python -m lmc.reproduce --project studies/cpu    # one scale of the studies
    python -m lmc.reproduce --against REF   # another commit than HEAD

Exit 0 when every output recorded in the committed dvc.lock has the same bytes here. Otherwise exit 1 with a
report: which outputs changed, how far each metric moved, and how the numeric environment that made the
results here (reports/numerics.json, studies/<scale>/numerics/) differs from the one recorded with the committed
results, with what that means (lmc/numerics.py). It never compares the environment records themselves.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from . import paths

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


def lock_outputs(text: str | None) -> dict[str, tuple[str, str]]:
    """(stage, md5) of every output a dvc.lock records, by path."""
    stages = (yaml.safe_load(text) or {}).get("stages", {}) if text else {}
    return {o["path"]: (name, o.get("md5")) for name, st in stages.items() for o in st.get("outs", [])}


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
        return "no numeric environment was recorded here: run the stages (dvc repro -f) before the check"
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


def check(project: Path, ref: str) -> tuple[bool, str]:
    """(reproduced, report) for one pipeline (the repository root, or a scale of the studies: studies/<scale>)."""
    lock_path = project / "dvc.lock"
    old, new = lock_outputs(committed(ref, lock_path)), lock_outputs(lock_path.read_text() if lock_path.exists() else None)
    if not old:
        return False, f"{lock_path} at {ref} records no outputs: nothing to compare"
    changed = [p for p in old if old[p][1] != new.get(p, (None, None))[1]]
    if not changed:
        return True, f"reproduced: all {len(old)} outputs of {lock_path} have the committed bytes ({ref})"
    lines = [f"NOT reproduced: {len(changed)} of {len(old)} outputs of {lock_path} differ from {ref}:"]
    for path in changed:
        stage = old[path][0]
        lines.append(f"- {path} (stage {stage})" + ("" if path in new else ": missing here"))
        full = project / path
        before = committed(ref, full) if path.endswith(".json") else None
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
    stages = sorted({old[p][0] for p in changed})
    unrun = set(stages) - {stage for stage, _ in new.values()}  # not in the lock here: the stage never finished
    for stage in stages:
        if stage in unrun:
            repro = "dvc repro" if project.resolve() == Path(".").resolve() else f"dvc --cd {project} repro"
            lines.append(f"- {stage}: not recorded in {lock_path} here (not run, interrupted, or the lock was cut "
                         f"short): run `{repro}` before the check")
            continue
        record = _record_path(project, stage)
        before_env = _load(committed(ref, record)).get(stage)
        here_env = _load(record.read_text() if record.exists() else None).get(stage)
        if before_env is None and here_env is None and record.exists():
            lines.append(f"- {stage}: computes from the outputs of the stages above, no kernels of its own")
            continue
        diffs = env_differences(before_env or {}, here_env or {}) if before_env and here_env else []
        lines.append(f"- {stage}: {'; '.join(diffs) or ('no deciding difference' if before_env else 'no record')}")
        lines.append(f"  meaning: {explain(before_env, here_env)}")
    return False, "\n".join(lines)


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


def _load(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def usage_problem(project: Path, ref: str) -> str | None:
    """What makes the command impossible, in one line (a ref git does not know, a project that is no pipeline,
    a lock that is not YAML), before anything is compared; None when nothing does."""
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True).returncode:
        return f"--against {ref}: git knows no such commit here; name a commit, branch or tag (default HEAD)"
    if not (project / "dvc.yaml").exists():
        return f"--project {project}: no dvc.yaml there; use . or studies/<scale> (one of the scales' folders)"
    for text, where in ((committed(ref, project / "dvc.lock"), f"{project / 'dvc.lock'} at {ref}"),
                        ((project / "dvc.lock").read_text() if (project / "dvc.lock").exists() else None,
                         f"{project / 'dvc.lock'} here")):
        try:
            yaml.safe_load(text or "")
        except yaml.YAMLError:
            return f"{where} is not valid YAML (cut short by an interrupted write?); restore it with git checkout"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmc.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="the pipeline to check: . (default) or studies/<scale>")
    parser.add_argument("--against", default="HEAD", help="the commit whose results are the reference")
    parser.add_argument("--relock-report", metavar="FILE",
                        help="instead of checking, write how every barrier moved against --against (a relock)")
    args = parser.parse_args(argv)
    problem = usage_problem(Path(args.project), args.against)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.relock_report:
        from .io import OutputError, write_text_atomic
        results = [paths.METRICS] + sorted(Path("studies").glob("*/out/*/*.json"))
        text = relock_report(args.against, results, f"Relock against {args.against}: how the barriers moved")
        try:
            write_text_atomic(args.relock_report, text)
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(text.split("\n\n")[1])
        return 0
    ok, report = check(Path(args.project), args.against)
    print(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
