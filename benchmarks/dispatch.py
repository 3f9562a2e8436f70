"""Wall time of one cpu-scale study through `lmc.dispatch` with 1 and with 2 local workers, each in a fresh copy
of this repository (committed, the study's results removed so that every cell runs; the data prepared before
the clock starts). Writes benchmarks/dispatch.txt; both runs must leave the same studies/dvc.lock bytes.

    python benchmarks/dispatch.py [--study table2]
"""
import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_pipeline import commit, copy_repo, sh  # noqa: E402  (the tests' copy of the repository)


def fresh_copy(where: Path, study: str) -> Path:
    repo = copy_repo(where, {"download": False})
    sh(repo, "git", "rm", "-rq", "--ignore-unmatch", f"studies/out/{study}")
    commit(repo, f"without {study}'s results")
    return repo


def timed(repo: Path, cmd: list[str]) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="table2")
    study = parser.parse_args().study
    rows, locks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"dispatch, 1 local worker": [sys.executable, "-m", "lmc.dispatch", study, "--jobs", "1"],
                "dispatch, 2 local workers": [sys.executable, "-m", "lmc.dispatch", study, "--jobs", "2"]}
        for i, (name, cmd) in enumerate(runs.items()):
            repo = fresh_copy(Path(tmp) / str(i), study)
            sh(repo, "dvc", "--cd", "studies", "repro", "prepare-mnist")  # the data, outside the timing
            seconds = timed(repo, cmd)
            locks[name] = hashlib.md5((repo / "studies/dvc.lock").read_bytes()).hexdigest()
            rows.append(f"| {name} | {seconds:.0f} s |")
            print(rows[-1], flush=True)
    same = len(set(locks.values())) == 1
    text = (f"# `python benchmarks/dispatch.py --study {study}` ({platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores; one run each)\n\n| how | wall time |\n|---|---|\n" + "\n".join(rows)
            + f"\n\nstudies/dvc.lock identical across the runs: {same} ({', '.join(sorted(set(locks.values())))})\n")
    (ROOT / "benchmarks/dispatch.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
