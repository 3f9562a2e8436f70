"""Interruptions: training killed (SIGKILL) or stopped (SIGINT) mid-run; the rerun takes up its saved progress
(lmc/resume.py) and gives the bytes of an uninterrupted run."""
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from .test_pipeline import BIN, as_from_a_terminal, copy_repo, sh

pytestmark = pytest.mark.e2e
PARAMS = {"epochs": 40, "width": 128, "pairs": 2}  # long enough to be stopped in the middle of training
TWINS = [f"data/twins/pair{pair}/{side}.pt" for pair in range(2) for side in "ab"]
COMPARED = ["dvc.lock", "reports/metrics.json", "reports/interpolation.csv", "reports/layerwise.json", *TWINS,
            "data/train.beton", "data/init/pair0.pt", "data/init/pair1.pt"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("reference"), PARAMS)
    sh(repo, "dvc", "repro")
    return repo


def epochs_logged(repo) -> int:
    tsv = repo / "reports/train/plots/metrics/loss_a0.tsv"
    return max(0, len(tsv.read_text().splitlines()) - 1) if tsv.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_training_leaves_nothing_half_written_and_reruns_to_the_same_bytes(tmp_path, reference, sig):
    repo = copy_repo(tmp_path, PARAMS)
    shutil.rmtree(repo / "reports/train")  # the copy's old curves must not look like this run's progress
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "LMC_RESUME_EVERY_S": "0"}  # save every epoch
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + 300
    while epochs_logged(repo) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.killpg(proc.pid, sig)  # the whole process group, as a terminal's Ctrl-C or a killed job would
    proc.wait(timeout=120)
    assert proc.returncode != 0 and epochs_logged(repo) < PARAMS["epochs"]
    # What finished before the kill is whole and final; the killed stage left no output, whole or partial, and
    # DVC did not record it (the copy's lock still holds the committed default experiment's train entry).
    for name in ("data/init/pair0.pt", "data/init/pair1.pt", "data/train.beton"):
        assert (repo / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (repo / "data/twins").exists() and not list(repo.rglob("*.partial"))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["train"]["params"]["params.yaml"]["epochs"] != PARAMS["epochs"]
    assert (repo / "data/.resume/train.pt").exists()  # the progress of the epochs that finished
    assert "data/.resume" not in sh(repo, "git", "status", "--porcelain").stdout  # never a result, never tracked

    rerun = sh(repo, "dvc", "repro")
    assert "resume: data/.resume/train.pt: continuing at step" in rerun.stderr
    assert not (repo / "data/.resume/train.pt").exists()
    for name in COMPARED:
        assert (repo / name).read_bytes() == (reference / name).read_bytes(), name
