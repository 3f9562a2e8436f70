import os

# `make test` runs 2 workers, and the dispatcher's tests run 2 workers of their own, each torch process with the
# portable mode's 2 threads: on a 2-core machine OpenMP's spinning waits made them 7x slower (lmc/dispatch/local.py).
# Waiting passively changes no byte.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


