"""Wall time of one study at one scale (cpu by default) through `lmc.dispatch` with 1 and with 2 local workers,
each in a fresh copy of this repository (committed, the study's results at that scale removed so that every cell
runs; the data prepared before the clock starts). Writes benchmarks/dispatch.txt; both runs must leave the same
studies/<scale>/dvc.lock bytes.

    python benchmarks/dispatch.py [--study table2] [--scale cpu]
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.header import header  # noqa: E402
from lmc import studies  # noqa: E402
from lmc.dispatch.plan import data_stages  # noqa: E402
from tests.fixtures import commit, copy_repo, sh  # noqa: E402


def fresh_copy(where: Path, study: str, scale: str) -> Path:
    repo = copy_repo(where, {"download": False})
    sh(repo, "git", "rm", "-rq", "--ignore-unmatch", str(studies.scale_dir(scale) / "out" / study))
    commit(repo, f"without {study}'s results at {scale} scale")
    return repo


def timed(repo: Path, cmd: list[str]) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="table2")
    parser.add_argument("--scale", default="cpu", choices=studies.SCALES)
    args = parser.parse_args()
    study, scale = args.study, args.scale
    lock = studies.dvc_file(scale).with_suffix(".lock")
    data = data_stages(studies.load(scale, ROOT / studies.STUDIES_FILE), [study])
    rows, locks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        dispatch = [sys.executable, "-m", "lmc.dispatch", study, "--scale", scale]
        runs = {"dispatch, 1 local worker": dispatch + ["--jobs", "1"],
                "dispatch, 2 local workers": dispatch + ["--jobs", "2"]}
        for i, (name, cmd) in enumerate(runs.items()):
            repo = fresh_copy(Path(tmp) / str(i), study, scale)
            sh(repo, "dvc", "--cd", str(studies.scale_dir(scale)), "repro", *data)  # the data, outside the timing
            seconds = timed(repo, cmd)
            locks[name] = hashlib.md5((repo / lock).read_bytes()).hexdigest()
            rows.append(f"| {name} | {seconds:.0f} s |")
            print(rows[-1], flush=True)
    same = len(set(locks.values())) == 1
    text = (f"# Dispatching one study to local workers\n\n"
            f"{header(f'python benchmarks/dispatch.py --study {study} --scale {scale}')}; one run each\n\n"
            f"| how | wall time |\n|---|---|\n" + "\n".join(rows)
            + f"\n\n{lock} identical across the runs: {same} ({', '.join(sorted(set(locks.values())))})\n")
    (ROOT / "benchmarks/dispatch.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
