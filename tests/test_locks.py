"""The committed results are pinned to the committed code: no stage of any pipeline (the default experiment,
each scale of the studies that has results) has a code dependency whose hash differs from what its lock recorded (otherwise its
results came from other code and must be rerun). Missing data files (not built in a fresh clone) are not
staleness, and a stage never run (no lock entry: the studies whose datasets are absent here) has no results to
be stale."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def code_changes(status: dict) -> list[str]:
    """'stage: path' for each code dependency (a .py file, or the lmc package folder) that changed."""
    stale = []
    for stage, changes in status.items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            stale += [f"{stage}: {path}" for path, what in deps.items()
                      if what == "modified" and (path.endswith(".py") or Path(path).name == "lmc")]
    return stale


LOCKED = [".", *sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("studies/*/dvc.lock"))]


def test_the_cpu_scale_has_committed_results():
    assert "studies/cpu" in LOCKED


@pytest.mark.parametrize("project", LOCKED)
def test_locked_code_is_the_committed_code(project):
    proc = subprocess.run([str(DVC), "status", "--json"], cwd=ROOT / project, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{DVC.parent}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    locked = yaml.safe_load((ROOT / project / "dvc.lock").read_text())["stages"]
    stale = code_changes({k: v for k, v in json.loads(proc.stdout or "{}").items() if k in locked})
    assert not stale, f"{project}/dvc.lock was written by other code; rerun these stages: {sorted(set(stale))[:10]}"


def test_a_changed_code_file_is_reported():
    status = {"train": [{"changed deps": {"lmc": "modified", "data/train.beton": "deleted"}}],
              "cell": [{"changed deps": {"../lmc/spec.py": "modified"}}, "always changed"]}
    assert code_changes(status) == ["train: lmc", "cell: ../lmc/spec.py"]
