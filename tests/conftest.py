import os
import subprocess
import sys
from pathlib import Path

# `make test` runs 2 workers, and the dispatcher's tests run 2 workers of their own, each torch process with the
# portable mode's 2 threads: on a 2-core machine OpenMP's spinning waits made them 7x slower (lmc/dispatch/local.py).
# Waiting passively changes no byte.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from lmc import data, datasets
from lmc.spec import Spec


def pytest_configure(config):
    # pytest-xdist's mark, declared for runs without it (`TEST_WORKERS=0`, `-p no:xdist`)
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one worker")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist loadgroup` (`make test`): the tests that share a module-scoped fixture (a `dvc
    repro` of a tiny study, say) run on one worker, which builds it once; every other test goes to whichever
    worker is free."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        shared = sorted(name for name, fixture in (defs.name2fixturedefs.items() if defs else ())
                        if fixture[-1].scope == "module")
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:{shared[0]}"))


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


def run_stage_stderr(cwd: Path, *args: str, tty: bool) -> tuple[int, str]:
    """`python -m stages.<args>` in `cwd` as `run_stage` runs it, its stderr on a pseudo-terminal (tty=True,
    as in a user's shell) or on a pipe (as under DVC in CI, or redirected to a log); (exit status, stderr)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    home = cwd.parent / f"{cwd.name}-home"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    command = [sys.executable, "-m", f"stages.{args[0]}", *args[1:]]
    if not tty:
        proc = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        return proc.returncode, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size (tqdm's width)
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)  # the child holds the only copy: reading ends (EIO) when it exits
    out = b""
    try:
        while chunk := os.read(master, 4096):
            out += chunk
    except OSError:
        pass
    finally:
        os.close(master)
    return proc.wait(), out.decode(errors="replace")


def shows_a_bar(stderr: str) -> bool:
    """Whether tqdm drew a progress bar (its "NN%|" and rate) into this output."""
    return "%|" in stderr and "/s" in stderr


class Counter:
    """A progress sink for the library's `progress=`: counts what a tqdm bar would be advanced by."""

    def __init__(self):
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n
