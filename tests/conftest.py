import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmc import data, datasets
from lmc.spec import Spec


@pytest.fixture(scope="session")
def mnist5k():
    return datasets.read_mnist5k()


@pytest.fixture(scope="session")
def betons(tmp_path_factory, mnist5k):
    """The real prepared mnist5k splits, written once for the session."""
    root = tmp_path_factory.mktemp("betons")
    for split, s in zip(("train", "test"), mnist5k):
        data.write_beton(s, root / f"{split}.beton")
    return {split: root / f"{split}.beton" for split in ("train", "test")}


@pytest.fixture
def tiny_spec():
    return Spec(width=32, epochs=2, batch_size=500)


def small_split(n=64, shape=(28, 28, 1), seed=0):
    rng = np.random.default_rng(seed)
    return data.Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))


ROOT = Path(__file__).resolve().parents[1]


def run_stage(cwd: Path, stage: str) -> subprocess.CompletedProcess:
    """`python -m stages.<stage>` in `cwd`, as DVC runs it, with a bare environment (HOME outside cwd, so
    that nothing but the stage's own outputs can appear there)."""
    home = cwd.parent / f"{cwd.name}-home"
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)})
