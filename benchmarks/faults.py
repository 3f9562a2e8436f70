"""The fault-injection report: every step of taking a result home (lmc/dispatch/common.py: FAULT_STEPS) under
every fault (SIGKILL, SIGTERM, SIGINT, SIGHUP, and a full disk: ENOSPC), each case a real dispatch of two tiny
studies to 2 local workers, stopped there, then started again (tests/test_faults.py holds the case and its
checks); then the faults around it (tests/test_dispatch.py): the dispatcher stopped mid-dispatch, a worker or
SLURM task killed or cancelled mid-cell, a result that shows late. Writes reports/faults.md: the faults that
fired (each one's record: where it struck), recovered, lost or corrupt; with the commit measured.

    python benchmarks/faults.py [--steps commit-cut,pull] [--faults SIGKILL,ENOSPC] [--no-others]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.header import header  # noqa: E402
from lmc.dispatch.common import FAULT_LOG_ENV, FAULT_STEPS  # noqa: E402

FAULTS = ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "ENOSPC")
# The faults beside the matrix: (what is done, the test of tests/test_dispatch.py that does it and checks).
OTHERS = (
    ("dispatcher SIGTERM mid-dispatch: workers cancelled, nothing partial",
     "test_kill_cancels_the_workers_and_keeps_nothing_partial[SIGTERM]"),
    ("dispatcher SIGINT mid-dispatch (Ctrl-C): as SIGTERM",
     "test_kill_cancels_the_workers_and_keeps_nothing_partial[SIGINT]"),
    ("dispatcher SIGHUP mid-dispatch (terminal closed): as SIGTERM",
     "test_kill_cancels_the_workers_and_keeps_nothing_partial[SIGHUP]"),
    ("dispatcher SIGKILL mid-dispatch, local workers: the next dispatch adopts them",
     "test_a_dispatcher_killed_outright_is_followed_by_one_that_adopts_its_workers"),
    ("dispatcher SIGKILL mid-dispatch, SLURM array: the next dispatch adopts its tasks",
     "test_a_slurm_dispatcher_killed_outright_is_followed_by_one_that_adopts_its_array_tasks"),
    ("dispatcher SIGKILL mid-cell, then --status (epoch) and adoption",
     "test_status_shows_the_epoch_of_a_running_cell_and_an_adopted_cell_finishes"),
    ("local worker SIGKILL mid-cell: failed, only it sent again",
     "test_a_killed_worker_leaves_its_cell_failed_and_the_next_dispatch_sends_only_it"),
    ("SLURM task cancelled (scancel) mid-cell: failed, only it sent again",
     "test_a_slurm_task_cancelled_mid_cell_is_failed_and_the_next_dispatch_sends_only_it"),
    ("local result visible late: waited for; never visible: failed after the grace",
     "test_a_local_result_that_shows_late_is_waited_for_and_one_that_never_shows_fails"),
    ("SLURM result visible late (NFS): waited for", "test_a_slurm_result_that_shows_late_is_waited_for"),
)


# What reports/faults.md measures: its header names the commit, and tests/test_faults.py checks that none of these
# changed since.
MEASURED = ("lmc/dispatch", "tests/test_faults.py", "benchmarks/faults.py")


def outcome(case) -> str:
    bad = case.find("failure") if case.find("failure") is not None else case.find("error")
    if bad is not None:
        return "**lost or corrupt**: " + bad.get("message", "")[:200].replace("\n", " ")
    return "skipped" if case.find("skipped") is not None else "recovered"


def fired_once(fired: list[dict]) -> bool:
    return len(fired) == 1 and fired[0]["in_flight"]


def where(result: str, seconds: float, fired: list[dict]) -> str:
    """A matrix cell: the outcome, where its fault fired (its record), and the case's time."""
    if result != "skipped" and not fired_once(fired):
        return f"**fired {len(fired)} times, not once with a result in flight**: {result} ({seconds:.0f} s)"
    at = f" at {fired[0]['stage']}" if fired else ""
    return f"{result}{at} ({seconds:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist processes (each builds its own "
                        "sequential run to compare with)")
    parser.add_argument("--steps", default=",".join(FAULT_STEPS))
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--no-others", action="store_true", help="the matrix only")
    args = parser.parse_args()
    steps, faults = args.steps.split(","), args.faults.split(",")
    selected = " or ".join(f"{s}-{g}" for s in steps for g in faults)
    runs = [("matrix", ["tests/test_faults.py", "-k", selected])]
    if not args.no_others:
        runs.append(("others", [f"tests/test_dispatch.py::{test}" for _, test in OTHERS]))
    start, cases = time.monotonic(), []
    command = (f"python benchmarks/faults.py --workers {args.workers} --steps {args.steps} --faults {args.faults}"
               f"{' --no-others' if args.no_others else ''}")
    top = header(command, MEASURED)  # the commit before the run: what was measured
    tally = ROOT / "benchmarks" / "faults-fired.jsonl"  # each matrix case adds the record of the fault that fired
    tally.unlink(missing_ok=True)
    for name, selection in runs:  # two runs: a -k selects among every test given
        junit = ROOT / "benchmarks" / f"faults-{name}.junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection,
                        f"--junitxml={junit}", *(["-n", str(args.workers)] if args.workers > 1 else [])],
                       cwd=ROOT, env={**os.environ, "LMC_FAULTS": "all", FAULT_LOG_ENV: str(tally)})
        cases += list(ET.parse(junit).getroot().iter("testcase"))
        junit.unlink()
    fired = {}  # case -> the records of the faults that fired in it (one, where all is well)
    for record in map(json.loads, tally.read_text().splitlines() if tally.exists() else []):
        fired.setdefault(record.pop("case"), []).append(record)
    tally.unlink(missing_ok=True)
    wall = time.monotonic() - start
    matrix, beside = {}, {}
    for case in cases:
        name = case.get("name")
        if case.get("classname", "").endswith("test_faults") and "[" in name:
            step, fault = name.split("[", 1)[1].rstrip("]").rsplit("-", 1)
            matrix[step, fault] = (outcome(case), float(case.get("time")), fired.get(f"{step}-{fault}", []))
        else:
            beside[name] = (outcome(case), float(case.get("time")))
    # A matrix case counts as a fault injected by its record alone, not by its test passing: one fault that fired
    # while a worker's result was being taken home.
    struck = [result for result, _, f in matrix.values() if fired_once(f)]
    lost = sum(1 for result in struck if result.startswith("**"))
    skipped_matrix = sum(1 for result, _, _ in matrix.values() if result == "skipped")
    misfired = len(matrix) - len(struck) - skipped_matrix
    lost_beside = sum(1 for result, _ in beside.values() if result.startswith("**"))
    skipped = sum(1 for result, _ in beside.values() if result == "skipped")
    lines = ["# Faults injected into the dispatcher", "",
             f"{top}, {wall / 60:.0f} min.", "",
             f"**{len(struck)} faults fired while a result was taken home (their records), "
             f"{len(struck) - lost} recovered, {lost} lost or corrupt"
             f"{f', {skipped_matrix} skipped (no tmpfs here)' if skipped_matrix else ''}"
             f"{f'; {misfired} cases where no fault, or not one, fired there' if misfired else ''}.**", "",
             "## While taking a result home", "",
             "Each case: two tiny studies (4 cells, a trunk and 2 spawn cells) dispatched to 2 local workers from a "
             "repository that holds an older run's outputs and lock entries (another width: every trunk and cell "
             "is out of date); the dispatcher sends itself the signal the first time the step handles a worker's "
             "result, or fills the disk there (ENOSPC: the repository on a 512 MiB tmpfs, filled by a file that the "
             "user then removes), and records where: the step, the stage whose result it was taking home, and "
             "whether that result was in flight. Then `--status` (the next start, which puts back what the journal "
             "holds) and a second dispatch. Recovered means every check of tests/test_faults.py held: the lock "
             "parses, each output and each of the trunk's files is its old or its new bytes, `--status` counts "
             "what the lock holds, and the second dispatch leaves the lock, every output and the trunk "
             "byte-identical to a sequential `dvc repro`, in order. Each cell: the outcome, where the fault "
             "fired, and the case's time.", "",
             "| step | " + " | ".join(faults) + " |", "|---|" + "---|" * len(faults)]
    for step in steps:
        row = [where(*matrix[step, g]) if (step, g) in matrix else "not run" for g in faults]
        lines.append(f"| {step} | " + " | ".join(row) + " |")
    if beside:
        lines += ["", "## Around it", "",
                  f"Faults from outside (no record of their own: a test passes when its checks held). "
                  f"**{len(beside)} run, {len(beside) - lost_beside - skipped} recovered, {lost_beside} lost or "
                  f"corrupt{f', {skipped} skipped (no SLURM here)' if skipped else ''}.** "
                  "Each a test of tests/test_dispatch.py with real processes and signals, the real single-node "
                  "SLURM for the SLURM cases, checked against a sequential run where it ends with results.", "",
                  "| fault | outcome | test |", "|---|---|---|"]
        lines += [f"| {what} | {beside[test][0]} ({beside[test][1]:.0f} s) | `{test}` |"
                  for what, test in OTHERS if test in beside]
    (ROOT / "reports" / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
