"""End to end: the real `dvc` commands on a temporary copy of this repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {"width": 16, "epochs": 2, "batch_size": 500}

pytestmark = pytest.mark.e2e


def sh(cwd, *cmd, check=True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_repo(dest: Path, params: dict | None = None) -> Path:
    """The working tree's tracked and unignored files, as a fresh git repo with one commit."""
    files = sh(ROOT, "git", "ls-files", "-co", "--exclude-standard", "-z").stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    if params:
        raw = yaml.safe_load((dest / "params.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump({**raw, **params}, sort_keys=False))
    sh(dest, "git", "init", "-q")
    # `dvc exp run` commits too: give the copy an identity of its own, whatever the user's config.
    sh(dest, "git", "config", "user.name", "lmc tests")
    sh(dest, "git", "config", "user.email", "tests@lmc.local")
    commit(dest, "copy")
    return dest


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    sh(repo, "dvc", "repro")
    return repo


def test_repro_writes_every_report(tiny_repo):
    metrics = json.loads((tiny_repo / "reports/metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert set(metrics) == {"barrier_train", "barrier_test", "normalized_barrier_train", "normalized_barrier_test",
                            "loss_barrier_train", "loss_barrier_test", "acc_train_a", "acc_train_b",
                            "acc_test_a", "acc_test_b", "status"}
    assert all(0 <= metrics[k] <= 1 for k in metrics if k.startswith(("acc", "barrier")))
    csv = (tiny_repo / "reports/interpolation.csv").read_text().splitlines()
    assert csv[0] == "alpha,train_error,test_error,train_loss,test_loss" and len(csv) == 12
    assert (tiny_repo / "reports/interpolation.png").read_bytes().startswith(b"\x89PNG")
    assert "Verdict" in (tiny_repo / "reports/summary.md").read_text()
    live = json.loads((tiny_repo / "reports/train/metrics.json").read_text())
    assert live["step"] == TINY["epochs"] - 1 and {"loss_a", "loss_b", "acc_a", "acc_b"} <= set(live)
    plots = json.loads(sh(tiny_repo, "dvc", "plots", "show", "--json").stdout)
    assert {"error_vs_alpha", "loss_vs_alpha", "reports/train/plots/metrics/loss_a.tsv"} <= set(plots["data"])


def test_experiment_reruns_only_train_and_later_and_is_compared(tiny_repo):
    commit(tiny_repo, "baseline")
    out = sh(tiny_repo, "dvc", "exp", "run", "-S", "optimizer=adam", "-S", "lr=0.005").stdout
    assert ran(out) == ["check", "train", "interpolate", "report"]
    table = json.loads(sh(tiny_repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(table)
    assert '"optimizer": "adam"' in text and '"optimizer": "sgd"' in text and "barrier_test" in text
    out = sh(tiny_repo, "dvc", "exp", "run", "-S", "alphas=5").stdout
    assert ran(out) == ["check", "interpolate", "report"]


def test_diverged_experiment_finishes_and_reports_unstable(tiny_repo):
    """A twin whose loss turns non-finite stops cleanly; every later stage still runs and says so."""
    proc = sh(tiny_repo, "dvc", "exp", "run", "-S", "lr=1000000.0")
    assert ran(proc.stdout) == ["check", "train", "interpolate", "report"]
    metrics = json.loads((tiny_repo / "reports/metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["barrier_test"] is None
    assert "**unstable**" in (tiny_repo / "reports/summary.md").read_text()
    assert json.loads((tiny_repo / "reports/train/metrics.json").read_text())["diverged"] == 1
    shown = json.dumps(json.loads(sh(tiny_repo, "dvc", "exp", "show", "--json").stdout))
    assert '"status": "diverged"' in shown and '"status": "ok"' in shown


def test_lock_is_bit_reproducible(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    sh(repo, "dvc", "repro")
    commit(repo, "lock")
    sh(repo, "dvc", "repro", "-f")
    sh(repo, "git", "diff", "--exit-code", "dvc.lock", "reports")


@pytest.mark.parametrize("line,message", [
    ("learning_rate: 0.1", "unknown key 'learning_rate'"),
    ("depth: 0", "depth=0 is out of range"),
])
def test_bad_params_stop_dvc_repro_with_one_line_and_no_output(tmp_path, line, message):
    repo = copy_repo(tmp_path)
    params = (repo / "params.yaml").read_text()
    key = line.split(":")[0]
    kept = [l for l in params.splitlines() if not l.startswith(f"{key}:")]
    (repo / "params.yaml").write_text("\n".join(kept + [line]) + "\n")
    proc = sh(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
    assert not any((repo / "data").glob("*.beton")) and not (repo / "data/init.pt").exists()


def test_committed_lock_reproduces_here(tmp_path):
    """The default experiment, run from scratch, gives the bytes pinned in the committed dvc.lock."""
    repo = copy_repo(tmp_path)
    sh(repo, "dvc", "repro", "-f")
    diff = sh(repo, "git", "diff", "--stat", "dvc.lock", "reports/metrics.json", check=False).stdout
    assert diff == "", f"the committed results do not reproduce:\n{diff}"
