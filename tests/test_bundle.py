"""The bundle's contents (lmc/bundle.py); that it installs offline into a bare environment and runs cells there
is tested end to end with the archive executor (tests/test_dispatch.py, tests/bare.py)."""
from importlib.metadata import version

import pytest

from lmc import bundle
from lmc.spec import SpecError


def test_the_bundle_holds_dvc_and_all_it_pulls_in_at_the_pinned_versions():
    pins = bundle.closure(bundle.ROOTS, "3.12")
    assert pins["dvc"] == version("dvc") == "3.67.1"
    assert {"dvc-data", "dvc-objects", "scmrepo", "pygit2", "dulwich", "celery", "ruamel-yaml"} <= set(pins)
    assert all(pins[name] == version(name) for name in pins)  # what runs here, nothing resolved anew
    # nothing of the bare machine's own stack, and none of what cells do not need
    assert not {"torch", "numpy", "pandas", "ffcv", "dvclive", "submitit", "mlxtend"} & set(pins)


def test_a_python_version_that_is_not_major_minor_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        bundle.main(["--python", "3.12.1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "error: bundle: --python='3.12.1'; give MAJOR.MINOR, e.g. 3.12"


def test_a_root_that_is_not_installed_is_one_line():
    with pytest.raises(SpecError, match="no-such-package is required but not installed here; run `make setup`"):
        bundle.closure(("no-such-package",), "3.12")
