"""What the portable numerics mode costs against the native one (lmc/numerics.py), per stage of the default
experiment and per study cell: the wall time of `dvc repro -f -s <stage>` (DVC's and Python's start-up
included), each mode started in its own mode (LMC_NUMERICS set, so no stage restarts itself), in a fresh copy
of this repository. Writes reports/numerics-cost.md.

    python benchmarks/numerics.py [--repeats 3] [--cells table2-sgd-hi fig2-cnn-hi]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.header import header  # noqa: E402
from lmc import numerics  # noqa: E402
from tests.fixtures import copy_repo  # noqa: E402

STAGES = ("init", "train", "interpolate", "layerwise")


def timed(cwd: Path, mode: str, *cmd: str) -> float:
    env = {**numerics.unpinned_environ(), numerics.ENV: mode,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def set_mode(repo: Path, mode: str) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "numerics": mode}, sort_keys=False))
    studies = yaml.safe_load((repo / "studies/studies.yaml").read_text())
    studies["scales"]["cpu"]["defaults"]["numerics"] = mode
    (repo / "studies/studies.yaml").write_text(yaml.safe_dump(studies, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cells", nargs="*", default=["table2-sgd-hi", "fig2-cnn-hi", "fig2-vit-hi"])
    args = parser.parse_args()
    top = header()  # the commit before the run: what is measured
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repo(Path(tmp))
        subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=repo, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "dvc", "--cd", "studies", "repro", "prepare-mnist"], cwd=repo,
                       check=True, capture_output=True)
        for rep in range(args.repeats):
            for mode in ("native", "portable"):  # alternating, so that a slow spell of the machine hits both
                set_mode(repo, mode)
                for stage in STAGES:
                    times.setdefault((stage, mode), []).append(
                        timed(repo, mode, sys.executable, "-m", "dvc", "repro", "-f", "-s", stage))
                for cell in args.cells if rep == 0 else []:  # cells are long: once each
                    times.setdefault((cell, mode), []).append(
                        timed(repo / "studies", mode, sys.executable, "-m", "dvc", "repro", "-f", "-s", cell))
                print(f"repeat {rep + 1}, {mode}: done", file=sys.stderr)
    rows = ["| stage | native (s) | portable (s) | portable / native |", "|---|---|---|---|"]
    for name in STAGES + tuple(args.cells):
        n, p = statistics.median(times[name, "native"]), statistics.median(times[name, "portable"])
        rows.append(f"| {name} | {n:.1f} | {p:.1f} | {p / n:.2f} |")
    total_n = sum(statistics.median(times[s, "native"]) for s in STAGES)
    total_p = sum(statistics.median(times[s, "portable"]) for s in STAGES)
    rows.append(f"| default pipeline's computing stages | {total_n:.1f} | {total_p:.1f} | {total_p / total_n:.2f} |")
    text = (f"# The portable numerics mode's cost\n\n{top}: wall time of `dvc repro -f -s <stage>` "
            f"(start-up included), median of {args.repeats} runs per stage of the default experiment, one run per "
            f"study cell. native: every core (2 here), ATen at AVX2, MKL's own branch, oneDNN on; portable: "
            f"ATen's baseline kernels, MKL_CBWR=COMPATIBLE, oneDNN off, {numerics.PORTABLE_THREADS} threads.\n\n"
            + "\n".join(rows) + "\n")
    (ROOT / "reports/numerics-cost.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
