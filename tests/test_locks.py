"""The committed results are pinned to the committed code: every code file a stage ran with still has the
hash its lock file recorded (otherwise its results came from other code and must be rerun)."""
import hashlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ["dvc.lock", "studies/dvc.lock"]


@pytest.mark.parametrize("lock", LOCKS)
def test_locked_code_is_the_committed_code(lock):
    stale = []
    for name, stage in yaml.safe_load((ROOT / lock).read_text())["stages"].items():
        for dep in stage.get("deps", []):
            if dep["path"].endswith(".py"):
                path = ROOT / dep["path"]
                if not path.exists() or hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                    stale.append(f"{name}: {dep['path']}")
    assert not stale, f"{lock} was written by other code; rerun these stages: {sorted(set(stale))[:10]}"
