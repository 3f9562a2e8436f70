"""The fault-injection report: every step of taking a result home (lmc/dispatch/common.py: FAULT_STEPS) under
every fault (SIGKILL, SIGTERM, SIGINT, SIGHUP, and a full disk: ENOSPC), each case a real dispatch of two tiny
studies to 2 local workers, stopped there, then started again (tests/test_faults.py holds the case and its
checks); then the faults around it (tests/test_dispatch.py): the dispatcher stopped mid-dispatch, a worker or
SLURM task killed or cancelled mid-cell, a result that shows late. Writes reports/faults.md: faults injected,
recovered, lost or corrupt.

    python benchmarks/faults.py [--steps commit-cut,pull] [--faults SIGKILL,ENOSPC] [--no-others]
"""
import argparse
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmc.dispatch.common import FAULT_STEPS  # noqa: E402

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


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def outcome(case) -> str:
    bad = case.find("failure") if case.find("failure") is not None else case.find("error")
    if bad is not None:
        return "**lost or corrupt**: " + bad.get("message", "")[:200].replace("\n", " ")
    return "skipped" if case.find("skipped") is not None else "recovered"


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
    for name, selection in runs:  # two runs: a -k selects among every test given
        junit = ROOT / "benchmarks" / f"faults-{name}.junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection,
                        f"--junitxml={junit}", *(["-n", str(args.workers)] if args.workers > 1 else [])],
                       cwd=ROOT, env={**os.environ, "LMC_FAULTS": "all"})
        cases += list(ET.parse(junit).getroot().iter("testcase"))
        junit.unlink()
    wall = time.monotonic() - start
    matrix, beside = {}, {}
    for case in cases:
        name = case.get("name")
        if case.get("classname", "").endswith("test_faults"):
            step, fault = name.split("[", 1)[1].rstrip("]").rsplit("-", 1)
            matrix[step, fault] = (outcome(case), float(case.get("time")))
        else:
            beside[name] = (outcome(case), float(case.get("time")))
    results = list(matrix.values()) + list(beside.values())
    lost = sum(1 for result, _ in results if result.startswith("**"))
    skipped = sum(1 for result, _ in results if result == "skipped")
    lines = ["# Faults injected into the dispatcher", "",
             f"`python benchmarks/faults.py --workers {args.workers} --steps {args.steps} --faults {args.faults}"
             f"{' --no-others' if args.no_others else ''}` on a {os.cpu_count()}-core {cpu()}, "
             f"{time.strftime('%Y-%m-%d')}, {wall / 60:.0f} min.", "",
             f"**{len(results)} faults injected, {len(results) - lost - skipped} recovered, {lost} lost or corrupt"
             f"{f', {skipped} skipped (no SLURM or tmpfs here)' if skipped else ''}.**", "",
             "## While taking a result home", "",
             "Each case: two tiny studies (4 cells, a trunk and 2 spawn cells) dispatched to 2 local workers; the "
             "dispatcher sends itself the signal the first time it reaches the step, or fills the disk there (ENOSPC: "
             "the repository on a 512 MiB tmpfs, filled by a file that the user then removes); then `--status` "
             "(the next start, which puts back what the journal holds) and a second dispatch. Recovered means every "
             "check of tests/test_faults.py held: the lock parses, each output is absent or complete, `--status` "
             "counts what the lock holds, and the second dispatch leaves the lock and every output byte-identical to "
             "a sequential `dvc repro`, in order.", "",
             "| step | " + " | ".join(faults) + " |", "|---|" + "---|" * len(faults)]
    for step in steps:
        row = [f"{matrix[step, g][0]} ({matrix[step, g][1]:.0f} s)" if (step, g) in matrix else "not run"
               for g in faults]
        lines.append(f"| {step} | " + " | ".join(row) + " |")
    if beside:
        lines += ["", "## Around it", "",
                  "Each a test of tests/test_dispatch.py with real processes and signals, the real single-node "
                  "SLURM for the SLURM cases, checked against a sequential run where it ends with results.", "",
                  "| fault | outcome | test |", "|---|---|---|"]
        lines += [f"| {what} | {beside[test][0]} ({beside[test][1]:.0f} s) | `{test}` |"
                  for what, test in OTHERS if test in beside]
    (ROOT / "reports" / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
