"""Faults injected into the dispatcher while it takes results home (lmc/dispatch/common.py: fault): a signal, or
the disk filling up, at one step of writing a result, its lock entry or the lock's order. After each: the next
start puts back what was cut (the journal, lmc/dispatch/home.py), the lock parses, every output is absent or
complete, `--status` counts what the lock holds, and the next dispatch ends byte for byte as a sequential run,
in order too. A full disk is a real one: the repository on a small tmpfs that the fault fills.

`make test` runs the cases below; `LMC_FAULTS=all` runs every step under every signal (benchmarks/faults.py,
which writes reports/faults.md)."""
import itertools
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from lmc.dispatch.common import FAULT_ENV, FAULT_STEPS, FILLER

from .test_dispatch import dispatch_cmd, report_runs_no_cell, results, sequential, study_repo  # noqa: F401

pytestmark = pytest.mark.e2e
FAULTS = ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "ENOSPC")
# The worst cases: killed outright with the lock cut in half, a polite kill while a trunk is pulled home, and a
# disk that is full when DVC writes the lock (in place).
CASES = (list(itertools.product(FAULT_STEPS, FAULTS)) if os.environ.get("LMC_FAULTS") == "all"
         else [("commit-cut", "SIGKILL"), ("pull", "SIGTERM"), ("commit-cut", "ENOSPC")])


@pytest.fixture
def small_disk(tmp_path):
    """A 512 MiB tmpfs for the repository, so that filling it is quick and harms nothing (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(disk)], capture_output=True,
                           text=True)
    if mount.returncode:
        pytest.skip(f"no tmpfs can be mounted here for a full disk ({mount.stderr.strip() or 'not root'})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def wait_gone(pids, timeout=300.0):
    """Until the workers an killed dispatcher left behind have finished (they run on, unowned)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize("step,sig", CASES, ids=[f"{s}-{g}" for s, g in CASES])
def test_a_dispatcher_stopped_while_taking_a_result_home_loses_nothing(request, tmp_path, sequential, step,  # noqa: F811
                                                                       sig):
    repo = study_repo(request.getfixturevalue("small_disk") if sig == "ENOSPC" else tmp_path)
    lock_file, records = repo / "studies/cpu/dvc.lock", repo / "studies/cpu/.dispatch/records.json"
    first = dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2", check=False, env={FAULT_ENV: f"{step}:{sig}"})
    assert first.returncode != 0, f"the fault at {step} never fired:\n{first.stderr[-2000:]}"
    left = [r["pid"] for r in json.loads(records.read_text()).values() if r.get("pid")] if records.exists() else []
    if sig == "SIGKILL":
        wait_gone(left)  # killed outright, the dispatcher could not cancel its workers
    elif sig == "ENOSPC":  # one line that names the full disk and what to do; then the user frees space
        last = first.stderr.strip().splitlines()[-1]
        assert first.returncode == 2 and last.startswith("error: ") and "No space left on device" in last \
            and "free disk space" in last, first.stderr
        (repo / FILLER).unlink()
    else:  # a signal the dispatcher handles: it cancelled its workers and said so
        assert first.returncode == 130 and "interrupted; running tasks cancelled" in first.stderr, first.stderr
    journal_left = (repo / "studies/cpu/.dispatch/journal.json").exists()
    status = dispatch_cmd(repo, "tiny", "tinyspawn", "--status")  # the next start: what was cut is put back
    # What the journal puts back: a write cut by SIGKILL inside it, or one that a full disk made fail and whose
    # undoing failed too (where there was something to write back); the next start says so, and only then.
    put_back = "the last dispatch stopped while recording" in status.stderr
    if step in ("journal", "output", "pull", "commit-cut", "commit", "numerics") and sig == "SIGKILL":
        assert put_back, status.stderr
    if sig == "ENOSPC":
        assert put_back == journal_left, status.stderr
        if step in ("output", "pull", "commit-cut"):  # a write failed with a lock to write back: that failed too
            assert journal_left
    lock = yaml.safe_load(lock_file.read_text())["stages"] if lock_file.exists() else {}  # parses (none yet:
    # stopped before the first stage was recorded)
    for path in [*(repo / "studies/cpu/out").rglob("*.json"), *(repo / "reports/cpu").glob("tiny*")]:
        name = str(path.relative_to(repo))  # every output: absent, or the complete result
        assert path.read_bytes() == sequential[name], name
    done = sum(1 for s in lock if s.startswith("tiny-"))
    assert f"tiny: {done} done" in status.stdout, status.stdout
    dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2")
    report_runs_no_cell(repo)
    assert results(repo) == sequential
