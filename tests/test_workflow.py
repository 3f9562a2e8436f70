"""The users' CI reproduction check (.github/workflows/reproduce.yml), validated offline."""
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github/workflows/reproduce.yml"
CHECK = [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CHECK + [str(path)], capture_output=True, text=True)


def test_workflow_matches_githubs_schema_and_a_broken_one_does_not(tmp_path):
    proc = validate(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = yaml.safe_load(WORKFLOW.read_text())
    del broken["jobs"]["reproduce"]["runs-on"]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert validate(tmp_path / "broken.yml").returncode != 0


def test_workflow_reproduces_and_fails_on_any_change_with_a_report():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "make setup" in runs and "dvc repro --force" in runs
    assert "python -m lmc.reproduce" in runs and "pipefail" in runs  # fails with its report
    summary = next(s["run"] for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert "dvc exp diff --md" in summary and "dvc metrics diff --md" in summary and "reproduce.txt" in summary
