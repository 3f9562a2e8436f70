"""Faults injected into the dispatcher while it takes results home (lmc/dispatch/common.py: fault): a signal, or
the disk filling up, at one step of writing a result, its lock entry or the lock's order. Each case starts from a
repository holding an older run's results (another width: every trunk and cell is out of date) and checks that
the fault fired once, while a worker's result was taken home (its record); after it: the next start puts back
what was cut (the journal, lmc/dispatch/home.py), the lock parses, every output and the trunk's files are their
old or their new bytes, `--status` counts what the lock holds, and the next dispatch ends byte for byte as a
sequential run, in order too. A full disk is a real one: the repository on a small tmpfs that the fault fills.

`make test` runs the cases below; `LMC_FAULTS=all` runs every step under every signal (benchmarks/faults.py,
which writes reports/faults.md from the faults' records)."""
import copy
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.faults import FAULTS, MEASURED
from lmc.dispatch.common import FAULT_ENV, FAULT_LOG_ENV, FAULT_STEPS, FILLER

from .fixtures import (CELLS, ROOT, STUDIES, commit, dispatch_cmd, report_runs_no_cell, results, sh, study_repo,
                       write_studies)

# The worst cases: killed outright with the lock cut in half, a polite kill while a trunk is pulled home, and a
# disk that is full when DVC writes the lock (in place).
CASES = (list(itertools.product(FAULT_STEPS, FAULTS)) if os.environ.get("LMC_FAULTS") == "all"
         else [("commit-cut", "SIGKILL"), ("pull", "SIGTERM"), ("commit-cut", "ENOSPC")])
LOCK = "studies/cpu/dvc.lock"
SENT = {"trunk-tinyspawn", "tinyspawn-k0", "tinyspawn-k3", *CELLS}  # the stages workers run
OLDER = copy.deepcopy(STUDIES)
OLDER["scales"]["cpu"]["defaults"]["width"] = 8  # a scale setting: every trunk and cell reads it


def outputs(repo: Path) -> dict[str, bytes]:
    """`results`, with the numerics records and the trunk's files (cached: what `dvc pull` brings home)."""
    cpu = repo / "studies/cpu"
    files = [*(cpu / "numerics").glob("*.json"), *(f for f in (cpu / "trunk").rglob("*") if f.is_file())]
    return {**results(repo), **{str(f.relative_to(repo)): f.read_bytes() for f in files}}


@pytest.fixture(scope="module")
def older(tmp_path_factory):
    """A repository holding an older run's outputs and lock entries, committed."""
    repo = study_repo(tmp_path_factory.mktemp("older"), OLDER)
    sh(repo / "studies/cpu", "dvc", "repro", "report-tiny", "report-tinyspawn")
    commit(repo, "an older run")
    return repo


def now_from(older: Path, dest: Path) -> Path:
    """A copy of `older` with the studies as they are now, committed: every trunk and cell is out of date."""
    repo = dest / "repo"
    shutil.copytree(older, repo, symlinks=True)
    write_studies(repo, STUDIES)
    commit(repo, "tiny studies, now")
    return repo


@pytest.fixture(scope="module")
def versions(older, tmp_path_factory):
    """Every output's bytes before (old) and after (new) a sequential `dvc repro` of the studies as they are."""
    repo = now_from(older, tmp_path_factory.mktemp("sequential"))
    sh(repo / "studies/cpu", "dvc", "repro", "report-tiny", "report-tinyspawn")
    old, new = outputs(older), outputs(repo)
    changed = [n for n in new if "/out/" in n or "/trunk/" in n]
    assert changed and all(old.get(n) not in (None, new[n]) for n in changed), "the older run must differ"
    return old, new


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
@pytest.mark.e2e
def test_a_dispatcher_stopped_while_taking_a_result_home_loses_nothing(request, tmp_path, older, versions, step,
                                                                       sig):
    old, new = versions
    repo = now_from(older, request.getfixturevalue("small_disk") if sig == "ENOSPC" else tmp_path)
    lock_file, records = repo / LOCK, repo / "studies/cpu/.dispatch/records.json"
    log = tmp_path / "faults.jsonl"  # off the small disk: the record outlives the fault
    first = dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2", check=False,
                         env={FAULT_ENV: f"{step}:{sig}", FAULT_LOG_ENV: str(log)})
    fired = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if os.environ.get(FAULT_LOG_ENV):  # benchmarks/faults.py counts the faults that fired
        with open(os.environ[FAULT_LOG_ENV], "a") as tally:
            tally.writelines(json.dumps({**f, "case": f"{step}-{sig}"}) + "\n" for f in fired)
    assert len(fired) == 1 and fired[0]["stage"] in SENT and fired[0]["in_flight"], \
        f"the fault at {step} fired {fired}, not once while a result was taken home:\n{first.stderr[-2000:]}"
    assert first.returncode != 0, first.stderr
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
    lock = yaml.safe_load(lock_file.read_text())["stages"]  # parses
    now = outputs(repo)
    for name in (set(old) | set(new) | set(now)) - {LOCK}:  # every output, the trunk's too: old or new bytes
        assert now.get(name) in (old.get(name), new.get(name)), name
    new_lock = yaml.safe_load(new[LOCK])["stages"]
    for study in ("tiny", "tinyspawn"):  # done: recorded as the new run records it
        done = sum(1 for s, entry in lock.items() if s.startswith((f"{study}-", f"trunk-{study}"))
                   and entry == new_lock[s])
        assert f"{study}: {done} done" in status.stdout, status.stdout
    dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2")
    report_runs_no_cell(repo)
    assert outputs(repo) == new


def test_the_fault_report_is_from_the_code_here():
    """reports/faults.md names the commit it was made at; what it measures must be HEAD's (regenerate it with
    `python benchmarks/faults.py --workers 2` at a commit, without uncommitted changes to MEASURED)."""
    header = re.search(r"at commit `(\w+)`( with uncommitted changes)?", (ROOT / "reports/faults.md").read_text())
    assert header and not header[2], "reports/faults.md names no commit, or one with uncommitted changes"
    known = subprocess.run(["git", "cat-file", "-e", f"{header[1]}^{{commit}}"], cwd=ROOT, capture_output=True)
    if known.returncode:
        pytest.skip(f"commit {header[1]} is not in this clone (a shallow one?)")
    same = subprocess.run(["git", "diff", "--quiet", header[1], "HEAD", "--", *MEASURED], cwd=ROOT)
    assert same.returncode == 0, f"reports/faults.md is from {header[1]}; {', '.join(MEASURED)} changed since: " \
                                 f"rerun python benchmarks/faults.py --workers 2"
