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


def test_workflow_runs_both_checks_through_the_make_targets_and_reports_them():
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]
    checks = {entry["make"]: entry["minutes"] for entry in job["strategy"]["matrix"]["include"]}
    assert checks == {"make check-repro": 30, "make check-repro SCALE=cpu": 30}
    runs = [s.get("run", "") for s in job["steps"]]
    assert "${{ matrix.make }} ARGS=\"--report reproduce.txt\"" in runs  # the make target's own steps, not a copy
    makefile = (ROOT / "Makefile").read_text()
    assert "check-repro: setup" in makefile and "$(ARGS)" in makefile.split("check-repro: setup")[1].split("\n\n")[0]
    summary = next(r for r in runs if "GITHUB_STEP_SUMMARY" in r)
    assert "cat reproduce.txt" in summary and job["steps"][-1].get("if") == "always()"
