"""What every part of the dispatcher shares: the task a worker runs, where a scale's pipeline and records live,
the dvc and git it calls, and the one-line error."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import yaml

from .. import studies
from ..io import write_text_atomic
from ..spec import SpecError, env_seconds


# What a dispatch relies on being the same in the workers' clone as at home: the commit they check out.
INPUTS = ("lmc", "stages", "studies/studies.yaml", "studies/*/dvc.yaml", "studies/*/notes", "params.yaml",
          "pyproject.toml", "requirements.txt")


def error_line(err: BaseException, last: bool = False) -> str:
    """One line of an exception's message for a one-line error: its first (or, for tools that end with the
    reason, like sbatch, its last), or the exception's type where the message is empty."""
    lines = [l.strip() for l in str(err).splitlines() if l.strip()] or [type(err).__name__]
    return (lines[-1] if last else lines[0].rstrip(":"))


# Fault injection (tests/test_faults.py, benchmarks/faults.py): "<step>:<SIGNAL>" makes the dispatcher send
# itself SIGNAL the first time `step` (FAULT_STEPS) handles a worker's result it is taking home (not the data or
# report stages home runs: a fault there tests nothing of taking a result home), as a user's kill, a closed
# terminal or the OOM killer would at that moment. "commit-cut" leaves first what a write of dvc.lock cut halfway
# leaves (DVC writes it in place): its first half. "<step>:ENOSPC" fills the disk there instead: every later write
# at home fails as on a full disk (only on a file system of at most FILL_LIMIT bytes, a test's). Each fault that
# fires appends where it fired to the file FAULT_LOG_ENV names, one JSON line: what the report counts.
FAULT_ENV = "LMC_DISPATCH_FAULT"
FAULT_LOG_ENV = "LMC_DISPATCH_FAULT_LOG"
FAULT_STEPS = ("journal", "output", "pull", "commit-cut", "commit", "numerics", "records", "sort")
FILLER = "disk-filler"  # in the folder the dispatcher runs in (the repository's root)
FILL_LIMIT = 2 << 30
# The stages whose worker results home.dispatch holds and has not yet finished taking home (lock sorted): a
# fault's record says whether its stage was one, apart from the caller saying which stage it handles.
IN_FLIGHT: set[str] = set()


def fault(step: str, stage: str | None, lock_file: Path | None = None) -> None:
    """`stage`: the trunk or cell whose result `step` handles; None where it handles none (home's own stages)."""
    name, _, action = os.environ.get(FAULT_ENV, "").partition(":")
    if name != step or stage is None:
        return
    del os.environ[FAULT_ENV]  # once
    if os.environ.get(FAULT_LOG_ENV):  # first: a SIGKILL leaves no other word of where it struck
        with open(os.environ[FAULT_LOG_ENV], "a") as log:
            log.write(json.dumps({"step": step, "fault": action, "stage": stage, "in_flight": stage in IN_FLIGHT})
                      + "\n")
    if action == "ENOSPC":
        return fill_disk(Path.cwd() / FILLER)
    if step == "commit-cut" and lock_file is not None:
        text = lock_file.read_bytes()
        lock_file.write_bytes(text[:len(text) // 2])
    os.kill(os.getpid(), getattr(signal, action))
    time.sleep(1)  # a handled signal acts here, at the latest


def fill_disk(filler: Path) -> None:
    """Write `filler` until its file system has no space left (a small one only: a test's tmpfs)."""
    disk = os.statvfs(filler.parent)
    if disk.f_blocks * disk.f_frsize > FILL_LIMIT:
        raise RuntimeError(f"fault injection: refusing to fill {filler.parent}'s file system (over "
                           f"{FILL_LIMIT >> 30} GiB); run on a small one")
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):  # whole MiB, then what is left in pages, then bytes
            try:
                while True:
                    out.write(chunk[:size])
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise


class LateResults:
    """A task that ended without a visible result is taken for failed only once it has stayed so for
    LMC_RESULT_GRACE_S seconds (default 120): on NFS a file another host wrote can stay invisible here for up
    to a minute (attribute caching: acregmax 60 s by default)."""

    def __init__(self):
        self.since: dict[str, float] = {}
        self.grace_s = result_grace_s()  # an executor is made before any work: a bad value stops it there

    def failed(self, key: str, folder: Path) -> bool:
        with contextlib.suppress(OSError):
            os.listdir(folder)  # reading the folder revalidates the client's cached entries
        first = self.since.setdefault(key, time.monotonic())
        return time.monotonic() - first >= self.grace_s


def result_grace_s() -> float:
    """LMC_RESULT_GRACE_S (default 120), or one DispatchError line for a value that is no number of seconds."""
    return env_seconds("LMC_RESULT_GRACE_S", 120, error=DispatchError, prefix="dispatch: ")


def resume_dir(scratch: str | Path) -> Path:
    """Where the workers' cells keep their training progress: beside their clones, not in one, so that a task
    killed, cancelled, preempted or out of time and sent again (a requeue, the next dispatch) takes it up."""
    return Path(scratch).resolve() / "resume"


def state_dir(scale: str) -> Path:
    """Records of sent tasks, logs, worker scratch of a scale's dispatches (git- and dvc-ignored)."""
    return studies.scale_dir(scale) / ".dispatch"


def claim(scale: str):
    """The scale's dispatcher lock (an flock the kernel drops when the process dies, SIGKILL included): the open
    file while this process holds it, or None while another dispatcher runs at this scale."""
    state_dir(scale).mkdir(parents=True, exist_ok=True)
    handle = open(state_dir(scale) / "dispatcher.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def holder(scale: str) -> str:
    """The pid the dispatcher that holds the scale's lock wrote there ("?" when unreadable)."""
    try:
        return (state_dir(scale) / "dispatcher.lock").read_text().strip() or "?"
    except OSError:
        return "?"


def process_start(pid: int | None) -> str | None:
    """When process `pid` started (Linux: /proc/<pid>/stat's start time, in clock ticks since boot), which tells
    it from a later process given the same pid; None when no such process lives (a zombie does not) or the
    system has no /proc."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, TypeError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces: field 3 on
    return None if fields[0] in ("Z", "X") else fields[19]


BIN = Path(sys.executable).absolute().parent  # absolute: workers run dvc from other folders
CANCEL_WAIT_S = 10.0  # how long a cancelled local worker gets to stop (and clean up) before it is killed
# The stages' commands say `python`: this environment's, whatever PATH the dispatcher (or a node) was given.
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class Detached(Exception):
    """Every task left is out where this dispatch cannot wait for it (an archive that has not come back): the
    dispatch stops here, nothing is lost; the next one takes up what came back. `stages`: the tasks out there."""

    def __init__(self, message: str, stages: list[str]):
        super().__init__(message)
        self.stages = stages


class DispatchError(SpecError):
    """A dispatch that cannot start or whose result cannot be taken home (one line, like a bad param)."""


# What Executor.left says of a task recorded as running by a dispatcher of its kind.
RUNS, ENDED, UNSENT, UNKNOWN = "runs", "ended", "unsent", "unknown"


class Executor(Protocol):
    """The contract between home (home.py) and whatever runs the tasks: the one way home starts, watches, adopts
    and stops them. A new executor is a module beside local.py, slurm.py and archive.py with a class that meets
    it, and one entry in executors.py; its workers call worker.run_task."""

    kind: ClassVar[str]  # its name in --executor and in the records ("executor": kind)
    remote: str | None  # the DVC remote its workers trade data through; None: the home studies cache

    def submit(self, tasks: list[Task]) -> list[tuple[str, dict]]:
        """Start (or queue) `tasks`; for each, (stage, the fields home records: executor, dispatcher, log...)."""

    def ids(self) -> dict[str, dict]:
        """Record fields learnt after submit (a pid and its start time, a job id, a log), by stage."""

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        """The tasks that finished since the last poll: (stage, log, run_task's result or None for a failure).
        May raise Detached when what is left cannot be waited for."""

    def cancel(self) -> None:
        """Stop every task this executor runs or queues; none may run on after it returns."""

    def adopt(self, task: Task, record: dict) -> bool:
        """Take over the task a dispatcher that is gone recorded (`record`), if it ran this very `task` and still
        runs or left its result: it is then watched and cancelled like this executor's own."""

    def retire(self, settled: set[str]) -> None:
        """Hear which stages this dispatch settled (taken home, or failed and to be sent again)."""

    @classmethod
    def left(cls, scale: str, records: dict[str, dict]) -> dict[str, str]:
        """For each task recorded as running by a dispatcher of this kind, whether it still runs or left its
        result (RUNS), ended without one (ENDED), never started (UNSENT), or cannot be told from here (UNKNOWN).
        No executor instance is needed: --status asks it of the records alone."""

    @classmethod
    def stop(cls, record: dict) -> None:
        """End the task `record` names, if it still runs (a dispatcher that is gone left it, and it is not
        adopted): it is sent again, and its cell takes up its saved progress."""


def dvc(*args: str, cwd: Path = studies.ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """The dvc of this Python's environment, in the studies project (or `cwd`: a scale's pipeline)."""
    proc = subprocess.run([str(BIN / "dvc"), "--wait-for-lock", *args], cwd=cwd, capture_output=True, text=True,
                          env=ENV)
    if check and proc.returncode:
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        last = next((l for l in lines if l.startswith(("ERROR", "error"))), lines[-1] if lines else "no output")
        full = "No space left on device" in proc.stderr + proc.stdout  # the disk at home: what to do
        raise DispatchError(f"dispatch: `dvc {' '.join(args)}` failed in {cwd}: {last}"
                            + ("; free disk space, then dispatch again" if full else ""))
    return proc


def git(*args: str, cwd: Path = Path(".")) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


# -- what to send ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One stage to run in a clone of `git_url` at `commit`, pulling the cached outputs of the stages in
    `pull` (home's lock entries for them: home may have run them since the commit) from `remote` first, and
    pushing its own cached outputs there after."""
    stage: str
    scale: str
    commit: str
    git_url: str
    remote: str
    pull: dict  # stage -> its lock entry at home
    scratch: str  # where the worker makes its clone (a per-task folder is created inside)


def outputs(stage_def: dict) -> list[tuple[str, bool]]:
    """(path, cached) of each output of a dvc.yaml stage definition."""
    return [(o, True) if isinstance(o, str) else (next(iter(o)), next(iter(o.values())).get("cache", True))
            for o in stage_def.get("outs", [])]


def add_lock_entries(lock_file: Path, entries: dict) -> None:
    """Put `entries` (stage -> lock entry) into a dvc.lock so that `dvc pull <stage>` knows what to fetch
    (DVC rewrites the file in its own format at the next commit or repro)."""
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {"schema": "2.0", "stages": {}}
    lock["stages"].update(entries)
    write_text_atomic(lock_file, yaml.safe_dump(lock, sort_keys=False))


def squeue() -> set[str] | None:
    """Job ids (as submitit names them, array tasks as <job>_<task>) in SLURM's queue; None if squeue failed."""
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(proc.stdout.split()) if proc.returncode == 0 else None


# SLURM's options are read and checked here, not in slurm.py (which needs submitit): --status and --dry-run check
# them too.
def minutes(limit: str) -> int:
    """SLURM's --time as sbatch reads it, in minutes (seconds rounded up): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
    D-HH:MM:SS. (A day form without seconds: `1-12` is a day and 12 hours; `10:30` is 10 minutes 30 seconds.)"""
    bad = DispatchError(f"dispatch: --time={limit!r} is not a finite SLURM time limit; write minutes (90), "
                        f"HH:MM:SS (4:00:00) or D-HH[:MM[:SS]] (1-12 for a day and 12 hours)")
    days, dash, rest = limit.strip().partition("-")
    try:
        parts = [int(p) for p in rest.split(":")] if dash else [int(p) for p in days.split(":")]
        day = int(days) if dash else 0
    except ValueError:
        raise bad from None
    if dash:
        if not 1 <= len(parts) <= 3:
            raise bad
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    elif len(parts) == 3:
        h, m, s = parts
    else:
        raise bad
    seconds = ((day * 24 + h) * 60 + m) * 60 + s
    if min(day, h, m, s) < 0 or seconds <= 0:
        raise bad
    return -(-seconds // 60)


def check_options(gpus_per_task: int, cpus_per_task: int, time_limit: str, requeues: int, signal_delay_s: int) -> None:
    """The SLURM options as sbatch would take them, checked before any work (a DispatchError line otherwise)."""
    for flag, value, least in (("--gpus-per-task", gpus_per_task, 0), ("--cpus-per-task", cpus_per_task, 1),
                               ("--requeues", requeues, 0), ("--signal-delay", signal_delay_s, 0)):
        if value < least:
            raise DispatchError(f"dispatch: {flag}={value}; give at least {least}")
    if signal_delay_s >= 60 * minutes(time_limit):
        raise DispatchError(f"dispatch: --signal-delay={signal_delay_s} s is not shorter than --time={time_limit}: "
                            f"a task would be told to requeue before it starts; give a longer --time or a shorter "
                            f"delay")
