"""A bare machine for the tests: a fresh virtual environment that sees only the packages of the lent GPU machine's
image (Python and torch with their kin, pandas, scipy, pyyaml, tqdm...; none of DVC, FFCV, dvclive, submitit),
taken from this environment through a .pth file, and then the bundle (lmc/bundle.py) installed with
`pip --no-index`, as the README tells a user to do there. Building the bundle needs the package index, as
`make bundle` does; the environment then runs offline."""
import os
import re
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
# The image's packages (the device library's KINDS.md, nvidia-h200, 2026-11-17), as far as this environment has them.
IMAGE = set("""
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit filelock fsspec jinja2 markupsafe mpmath networkx numpy
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx pandas pillow python-dateutil pyyaml scipy setuptools six sympy torch
torchvision tqdm triton typing-extensions matplotlib contourpy cycler fonttools kiwisolver packaging pyparsing
seaborn tzdata pytz
""".split())
NOT_ON_IMAGE = {"dvc", "ffcv", "dvclive", "submitit", "mlxtend"}


def _name(dist) -> str:
    return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()


def image_view(folder: Path) -> Path:
    """A folder of links to the image packages' files in this environment (their code and their metadata)."""
    folder.mkdir(parents=True)
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for dist in distributions(path=[str(site)]):
        if _name(dist) not in IMAGE:
            continue
        for entry in {Path(str(f)).parts[0] for f in dist.files or []}:
            if entry not in ("..", "__pycache__") and (site / entry).exists() and not (folder / entry).exists():
                (folder / entry).symlink_to(site / entry)
    return folder


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """The python of a bare machine with the bundle installed (skipped, saying why, where the package index
    cannot be reached to build the bundle). Built once per test run: workers of `pytest -n` share it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's folder, above each worker's own
    tmp, done = root / "bare", root / "bare.done"
    with FileLock(str(root / "bare.lock")):
        if not done.exists():
            done.write_text(_build(tmp) or "")
    skipped = done.read_text()
    if skipped:
        pytest.skip(skipped)
    return tmp / "env/bin/python"


def _build(tmp: Path) -> str | None:
    """Build the bundle and the bare environment in `tmp`; why not (one line), where the index is unreachable."""
    tmp.mkdir()
    build = subprocess.run([sys.executable, "-m", "lmc.bundle", "--out", str(tmp / "bundle")], cwd=ROOT,
                           capture_output=True, text=True)
    if build.returncode:
        if "network" in build.stderr or "index" in build.stderr:
            return f"the bundle cannot be built here: {build.stderr.strip().splitlines()[-1]}"
        raise AssertionError(build.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "env")], check=True)
    python = tmp / "env/bin/python"
    env_site = next((tmp / "env/lib").glob("python3*/site-packages"))
    (env_site / "image.pth").write_text(str(image_view(tmp / "image")) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    seen = subprocess.run([str(python), "-c", "import torch, pandas, scipy, yaml\n"
                           "for m in ('dvc', 'ffcv', 'submitit', 'dvclive'):\n"
                           "    try:\n        __import__(m); print(m)\n    except ImportError:\n        pass"],
                          capture_output=True, text=True, env=env, cwd=tmp)
    assert seen.returncode == 0 and seen.stdout == "", (seen.stdout, seen.stderr)  # bare: torch, nothing of ours
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(tmp / "bundle/wheels"), "-r", str(tmp / "bundle/requirements.txt")],
                   check=True, env=env, cwd=tmp)
    return None
