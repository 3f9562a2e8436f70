"""The fault-injection matrix: every step of taking a result home (lmc/dispatch/common.py: FAULT_STEPS) under
every signal (SIGKILL, SIGTERM, SIGINT, SIGHUP), each case a real dispatch of two tiny studies to 2 local
workers, stopped there, then started again (tests/test_faults.py holds the case and its checks). Writes
reports/faults.md: faults injected, recovered, lost or corrupt.

    python benchmarks/faults.py [--steps commit-cut,pull] [--signals SIGKILL]
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

SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP")


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist processes (the cases share one "
                        "sequential run to compare with, so they stay on one worker: more gives nothing)")
    parser.add_argument("--steps", default=",".join(FAULT_STEPS))
    parser.add_argument("--signals", default=",".join(SIGNALS))
    args = parser.parse_args()
    steps, signals = args.steps.split(","), args.signals.split(",")
    selected = " or ".join(f"{s}-{g}" for s in steps for g in signals)
    junit = ROOT / "benchmarks" / "faults.junit.xml"
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_faults.py",
                    "-k", selected, f"--junitxml={junit}", *(["-n", str(args.workers)] if args.workers > 1 else [])],
                   cwd=ROOT, env={**os.environ, "LMC_FAULTS": "all"})
    wall = time.monotonic() - start
    cases = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        step, sig = case.get("name").split("[", 1)[1].rstrip("]").rsplit("-", 1)
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        cases[step, sig] = ("recovered" if bad is None and case.find("skipped") is None
                            else "skipped" if bad is None else "**lost or corrupt**: " + bad.get("message", "")[:200],
                            float(case.get("time")))
    junit.unlink()
    lost = sum(1 for outcome, _ in cases.values() if outcome.startswith("**"))
    lines = ["# Faults injected into the dispatcher while it takes results home", "",
             f"`python benchmarks/faults.py --workers {args.workers} --steps {args.steps} --signals {args.signals}`"
             f" on a {os.cpu_count()}-core {cpu()}, {time.strftime('%Y-%m-%d')}, {wall / 60:.0f} min.", "",
             "Each case: two tiny studies (4 cells, a trunk and 2 spawn cells) dispatched to 2 local workers; the "
             "dispatcher sends itself the signal the first time it reaches the step; then `--status` (the next "
             "start, which puts back what the journal holds) and a second dispatch. Recovered means every check "
             "of tests/test_faults.py held: the lock parses, each output is absent or complete, `--status` counts "
             "what the lock holds, and the second dispatch leaves the lock and every output byte-identical to a "
             "sequential `dvc repro`, in order.", "",
             f"**{len(cases)} faults injected, {len(cases) - lost} recovered, {lost} lost or corrupt.**", "",
             "| step | " + " | ".join(signals) + " |", "|---|" + "---|" * len(signals)]
    for step in steps:
        row = [f"{cases[step, g][0]} ({cases[step, g][1]:.0f} s)" if (step, g) in cases else "not run"
               for g in signals]
        lines.append(f"| {step} | " + " | ".join(row) + " |")
    (ROOT / "reports" / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
