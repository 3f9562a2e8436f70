"""Interruptions: training killed (SIGKILL) or stopped (SIGINT) mid-run, or killed while it writes the twins; the
rerun takes up its saved progress (lmc/resume.py) and gives the bytes of an uninterrupted run."""
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml
from .fixtures import BIN, as_from_a_terminal, copy_repo, sh


pytestmark = pytest.mark.e2e
PARAMS = {"epochs": 40, "width": 128, "pairs": 2}  # long enough to be stopped in the middle of training
TWINS = [f"data/twins/pair{pair}/{side}.pt" for pair in range(2) for side in "ab"]
COMPARED = ["dvc.lock", "reports/metrics.json", "reports/interpolation.csv", "reports/layerwise.json", *TWINS,
            "data/train.beton", "data/init/pair0.pt", "data/init/pair1.pt"]
RESUME = "data/.resume/train.pt"
# What a kill inside a progress save leaves (lmc/io.py writes through a `.partial` sibling): never read.
RESUME_PARTIALS = {"data/.resume/train.pt.partial", "data/.resume/train.progress.json.partial"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("reference"), PARAMS)
    sh(repo, "dvc", "repro")
    return repo


def epochs_logged(repo) -> int:
    tsv = repo / "reports/train/plots/metrics/loss_a0.tsv"
    return max(0, len(tsv.read_text().splitlines()) - 1) if tsv.exists() else 0


def repro(repo, **env) -> subprocess.Popen:
    """`dvc repro` in the background, saving progress every epoch, in a process group of its own."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "LMC_RESUME_EVERY_S": "0", **env}
    return subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=as_from_a_terminal)


def partials(repo) -> set[str]:
    return {str(p.relative_to(repo)) for p in repo.rglob("*.partial")}


def assert_only_training_was_lost(repo, reference):
    """What finished before the kill is whole and final; DVC did not record the killed stage (the copy's lock
    still holds the committed default experiment's train entry); the progress of the finished epochs is kept,
    never as a result."""
    for name in ("data/init/pair0.pt", "data/init/pair1.pt", "data/train.beton"):
        assert (repo / name).read_bytes() == (reference / name).read_bytes(), name
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["train"]["params"]["params.yaml"]["epochs"] != PARAMS["epochs"]
    assert (repo / RESUME).exists()
    assert "data/.resume" not in sh(repo, "git", "status", "--porcelain").stdout  # never tracked


def assert_rerun_resumes_to_the_uninterrupted_bytes(repo, reference):
    rerun = sh(repo, "dvc", "repro")
    assert f"resume: {RESUME}: continuing at step" in rerun.stderr
    assert not (repo / RESUME).exists() and partials(repo) == set()  # leftovers of the kill removed
    for name in COMPARED:
        assert (repo / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_training_leaves_nothing_half_written_and_reruns_to_the_same_bytes(tmp_path, reference, sig):
    repo = copy_repo(tmp_path, PARAMS)
    shutil.rmtree(repo / "reports/train")  # the copy's old curves must not look like this run's progress
    proc = repro(repo)
    deadline = time.monotonic() + 300
    while epochs_logged(repo) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.killpg(proc.pid, sig)  # the whole process group, as a terminal's Ctrl-C or a killed job would
    proc.wait(timeout=120)
    assert proc.returncode != 0 and epochs_logged(repo) < PARAMS["epochs"]
    assert not (repo / "data/twins").exists() and not (repo / "data/twins.partial").exists()  # long before them
    assert partials(repo) <= RESUME_PARTIALS  # a kill may land inside a progress save
    assert_only_training_was_lost(repo, reference)
    # Whether or not this kill cut a save short, the rerun meets what one leaves (half a file) and ignores it.
    (repo / RESUME).with_name("train.pt.partial").write_bytes((repo / RESUME).read_bytes()[:1000])
    assert_rerun_resumes_to_the_uninterrupted_bytes(repo, reference)


def test_a_kill_while_the_twins_are_written_leaves_no_twins_and_reruns_to_the_same_bytes(tmp_path, reference):
    repo = copy_repo(tmp_path, PARAMS)
    proc = repro(repo, LMC_TRAIN_FAULT="twins")  # stages/train.py: SIGKILL once the first twin file is written
    assert proc.wait(timeout=600) != 0
    # The kill came between two twin files: one is written, in the temporary folder only.
    assert [p.name for p in (repo / "data/twins.partial").rglob("*.pt")] == ["a.pt"]
    assert not (repo / "data/twins").exists()
    assert_only_training_was_lost(repo, reference)
    assert_rerun_resumes_to_the_uninterrupted_bytes(repo, reference)
