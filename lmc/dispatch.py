"""Send the studies' pending cells to workers, gather them back into the home workspace's studies/dvc.lock.

    python -m lmc.dispatch table1 fig1 --executor slurm --jobs 64 --partition gpu --gpus-per-task 1 --time 4:00:00
    python -m lmc.dispatch table1 --jobs 2            # local worker processes (the default executor)
    python -m lmc.dispatch table1 --status            # done / running / failed / pending per study
    python -m lmc.dispatch table1 --dry-run           # what would be sent, and its estimated device-hours

Each task runs one stage through DVC itself, `dvc repro --single-item <stage>`, in a workspace of its own: a
git clone of the home repository at the home commit (never two `dvc repro` in one workspace: DVC locks it).
Cached data (the .beton files, trunk snapshots) travels through a DVC remote: the home studies cache by default
(a shared filesystem), or `--remote URL` (S3, SSH, or a path; nothing else is shared then but the job folder
of the executor: the task descriptions, the few-KB results and the logs). A cell's result (a committed,
uncached JSON) comes back with the task's result and is checked against the md5 the worker's lock recorded;
home then writes it atomically and records the stage with `dvc commit`, and checks that the lock entry home
computes equals the worker's. So the home lock is byte for byte what a sequential `dvc repro` writes.
A task that fails, is killed or cancelled leaves nothing at home; the next dispatch sends it again.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from submitit.helpers import Checkpointable

from . import cost, paths, studies, studies_dvc
from .io import write_bytes_atomic, write_text_atomic
from .resume import DIR_ENV as RESUME_DIR_ENV
from .spec import SpecError
from .stage import entry

STUDIES_DIR = studies.DVC_FILE.parent  # the studies' own DVC project
STATE_DIR = STUDIES_DIR / ".dispatch"  # records of sent tasks, logs, worker scratch (git- and dvc-ignored)
EXECUTORS = ("local", "slurm")
# What a dispatch relies on being the same in the workers' clone as at home: the commit they check out.
INPUTS = ("lmc", "stages", "studies/studies.yaml", "studies/dvc.yaml", "params.yaml", "pyproject.toml",
          "requirements.txt")


BIN = Path(sys.executable).absolute().parent  # absolute: workers run dvc from other folders
CANCEL_WAIT_S = 10.0  # how long a cancelled local worker gets to stop (and clean up) before it is killed
# The stages' commands say `python`: this environment's, whatever PATH the dispatcher (or a node) was given.
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class DispatchError(SpecError):
    """A dispatch that cannot start or whose result cannot be taken home (one line, like a bad param)."""


def dvc(*args: str, cwd: Path = STUDIES_DIR, check: bool = True) -> subprocess.CompletedProcess:
    """The dvc of this Python's environment, in the studies project (or `cwd`)."""
    proc = subprocess.run([str(BIN / "dvc"), "--wait-for-lock", *args], cwd=cwd, capture_output=True, text=True,
                          env=ENV)
    if check and proc.returncode:
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        last = next((l for l in lines if l.startswith(("ERROR", "error"))), lines[-1] if lines else "no output")
        raise DispatchError(f"dispatch: `dvc {' '.join(args)}` failed in {cwd}: {last}")
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
    commit: str
    git_url: str
    remote: str
    pull: dict  # stage -> its lock entry at home
    scratch: str  # where the worker makes its clone (a per-task folder is created inside)


def stage_defs() -> dict:
    return yaml.safe_load(studies.DVC_FILE.read_text())["stages"]


def study_stages(raw: dict, names: list[str]) -> dict[str, list[str]]:
    """Per study, the stages workers run: its trunk (if it shares one) and its cells."""
    return {study: ([f"trunk-{study}"] if studies.has_shared_trunk(raw, study) else [])
            + [f"{study}-{cell.id}" for cell in studies.cells(raw, study)] for study in names}


def data_stages(raw: dict, names: list[str]) -> list[str]:
    """The source and prepare stages of the studies' datasets: they read data_root, so they run at home."""
    datasets = sorted({studies.paper_dataset(raw, c) for study in names for c in studies.cells(raw, study)})
    return [f"{kind}-{ds}" for ds in datasets for kind in ("source", "prepare")]


def unprepared_note(raw: dict, names: list[str]) -> list[str]:
    """A line saying why the counts may be too high: stages whose data is not prepared here look pending
    (dispatch prepares it first, and then sends only what really changed)."""
    missing = stale([s for s in data_stages(raw, names) if s.startswith("prepare-")])
    return [f"note: {', '.join(missing)} not up to date here, so every stage reading it counts as pending; "
            f"`dvc --cd studies repro {' '.join(missing)}` first for exact counts"] if missing else []


def outputs(stage_def: dict) -> list[tuple[str, bool]]:
    """(path, cached) of each output of a dvc.yaml stage definition."""
    return [(o, True) if isinstance(o, str) else (next(iter(o)), next(iter(o.values())).get("cache", True))
            for o in stage_def.get("outs", [])]


def upstream(stage: str, defs: dict, cached: bool = False) -> list[str]:
    """The stages whose outputs `stage` reads (with `cached`, only those whose outputs DVC caches: its .beton
    files, its trunk)."""
    deps = set(defs[stage].get("deps", []))
    return [name for name, d in defs.items() if any(path in deps and (c or not cached) for path, c in outputs(d))]


def stale(stages: list[str]) -> list[str]:
    """The stages among `stages` whose lock does not match the workspace (each one's own changes, as `dvc status`
    reports them)."""
    if not stages:
        return []
    # The whole project at once: naming 100 targets makes dvc collect the pipeline 100 times (minutes).
    changed = json.loads(dvc("status", "--json").stdout or "{}")
    return [s for s in stages if s in changed]


def pending(stages: list[str], defs: dict) -> set[str]:
    """The stages among `stages` that a dispatch would run: those stale themselves, and every one below a stage
    that will rerun (a cell below a rerun trunk reruns too, as in a sequential repro)."""
    todo = set(stale(stages))
    grown = True
    while grown:
        below = {s for s in stages if s not in todo and any(u in todo for u in upstream(s, defs))}
        todo |= below
        grown = bool(below)
    return todo


def check_committed() -> str:
    """The home commit the workers will run; refuses when the inputs differ from it (they would compute
    something else than home records)."""
    dirty = (git("diff", "--name-only", "HEAD", "--", *INPUTS).splitlines()
             + git("ls-files", "--others", "--exclude-standard", "--", *INPUTS).splitlines())
    if dirty:
        raise DispatchError(f"dispatch: {dirty[0]} (and {len(dirty) - 1} more) differ from the last commit; "
                            f"workers run the commit, so commit your changes first, then dispatch")
    return git("rev-parse", "HEAD")


def numerics_record(stage: str) -> Path:
    """Where a study stage's numeric environment is recorded (stages/cell.py, stages/trunk.py)."""
    return paths.STUDY_NUMERICS_DIR / f"{stage}.json"


def add_lock_entries(lock_file: Path, entries: dict) -> None:
    """Put `entries` (stage -> lock entry) into a dvc.lock so that `dvc pull <stage>` knows what to fetch
    (DVC rewrites the file in its own format at the next commit or repro)."""
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {"schema": "2.0", "stages": {}}
    lock["stages"].update(entries)
    write_text_atomic(lock_file, yaml.safe_dump(lock, sort_keys=False))


# -- the worker side ---------------------------------------------------------------------------------------

def run_task(task: Task) -> dict:
    """On the worker: clone, pull what the stage reads, `dvc repro --single-item`, push its cached outputs.
    Returns the stage's lock entry and the bytes of its uncached outputs (base64). The clone is removed."""
    Path(task.scratch).mkdir(parents=True, exist_ok=True)
    ws = Path(tempfile.mkdtemp(prefix=f"{task.stage}-", dir=task.scratch))
    try:
        subprocess.run(["git", "clone", "-q", "--no-checkout", task.git_url, str(ws)], check=True)
        git("checkout", "-q", task.commit, cwd=ws)
        proj = ws / STUDIES_DIR
        dvc("remote", "add", "--local", "-f", "dispatch", task.remote, cwd=proj)
        if task.pull:
            add_lock_entries(proj / "dvc.lock", task.pull)
            dvc("pull", "-r", "dispatch", *task.pull, cwd=proj)
        # Training's progress goes beside the clones, not into one: a task killed, cancelled, preempted or out
        # of time and sent again (a requeue, the next dispatch) takes it up (lmc/resume.py).
        run = subprocess.run([str(BIN / "dvc"), "repro", "--single-item", task.stage], cwd=proj,
                             stderr=subprocess.PIPE, text=True,
                             env={**ENV, RESUME_DIR_ENV: str(Path(task.scratch).resolve() / "resume")})
        if run.returncode:
            sys.stderr.write(run.stderr)
            last = next((l for l in reversed(run.stderr.splitlines()) if l.strip()), "no output")
            raise RuntimeError(f"dvc repro {task.stage} failed: {last}")
        entry_ = yaml.safe_load((proj / "dvc.lock").read_text())["stages"][task.stage]
        outs = outputs(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"][task.stage])
        uncached = [path for path, cached in outs if not cached]
        if len(uncached) < len(outs):
            dvc("push", "-r", "dispatch", task.stage, cwd=proj)
        files = {p: base64.b64encode((proj / p).read_bytes()).decode() for p in uncached}
        record = ws / numerics_record(task.stage)  # the worker's numeric environment, beside the results
        return {"stage": task.stage, "lock": entry_, "files": files,
                "numerics": record.read_text() if record.exists() else None}
    except BaseException:
        reap_descendants()  # a cancelled stage may still be exiting; it must not write into a removed clone
        raise
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def become_subreaper() -> None:
    """Orphaned descendants (the stage, once its dvc is killed) are re-parented to this process rather than
    to init, so that `reap_descendants` can wait for them (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_descendants(timeout: float = CANCEL_WAIT_S / 2) -> None:
    """Wait (bounded) until this process has no child left, orphans included under `become_subreaper`. The
    bound stays under the dispatcher's CANCEL_WAIT_S, so that a cancelled worker removes its clone before
    the dispatcher kills its group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            time.sleep(0.05)


def worker_main(task_file: str, result_file: str) -> None:
    """`python -m lmc.dispatch --worker TASK RESULT` (the local executor's process)."""
    become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cancelled: run_task's finally removes the clone
    task = Task(**json.loads(Path(task_file).read_text()))
    result = run_task(task)
    write_text_atomic(result_file, json.dumps(result))


# -- home: taking a result in ------------------------------------------------------------------------------

def take_home(result: dict) -> None:
    """Write a task's uncached outputs (md5-checked against the worker's lock), pull its cached ones, and
    record the stage with `dvc commit`; the lock entry home computes must equal the worker's. On any failure
    the lock and the outputs are put back as they were: nothing partial stays home."""
    stage, lock_entry = result["stage"], result["lock"]
    want = {o["path"]: o["md5"] for o in lock_entry.get("outs", [])}
    lock_file = studies.DVC_FILE.with_suffix(".lock")
    before = lock_file.read_text() if lock_file.exists() else None
    written = []
    try:
        for path, b64 in result["files"].items():
            payload = base64.b64decode(b64)
            if md5(payload) != want.get(path):
                raise DispatchError(f"dispatch: {stage}'s {path} came back damaged (md5 differs from its lock); "
                                    f"dispatch again")
            target = STUDIES_DIR / path  # lock paths are relative to the studies project
            written.append((target, target.read_bytes() if target.exists() else None))
            write_bytes_atomic(target, payload)
        if len(result["files"]) < len(want):  # cached outputs: pulled by the md5s of the worker's lock entry
            add_lock_entries(lock_file, {stage: lock_entry})
            dvc("pull", "-r", "dispatch", stage)
        dvc("commit", "-f", "-q", stage)
        home = yaml.safe_load(lock_file.read_text())["stages"][stage]
        if home != lock_entry:
            raise DispatchError(f"dispatch: {stage} was recorded at home with other hashes than the worker's "
                                f"(different code, params or data?); run `dvc --cd studies repro {stage}` here")
        if result.get("numerics"):
            write_text_atomic(numerics_record(stage), result["numerics"])
    except BaseException:
        if before is None:
            lock_file.unlink(missing_ok=True)
        else:
            write_text_atomic(lock_file, before)
        for target, old in written:
            if old is None:
                target.unlink(missing_ok=True)
            else:
                write_bytes_atomic(target, old)
        raise


# -- executors ---------------------------------------------------------------------------------------------

class LocalExecutor:
    """`jobs` worker processes on this machine: each gets one GPU (CUDA_VISIBLE_DEVICES) where there are
    GPUs, else an equal share of the cores (OMP_NUM_THREADS); tasks beyond that wait their turn here."""

    def __init__(self, jobs: int, state: Path):
        self.jobs, self.folder = jobs, state / "local"
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpus = [g for g in (gpus.split(",") if gpus is not None else _gpu_ids()) if g]
        self.queue: list[Task] = []
        self.running: dict[int, tuple[Task, subprocess.Popen]] = {}  # slot -> (task, worker process)

    def _log(self, stage: str) -> Path:
        return self.folder / f"{stage}.log"

    def submit(self, tasks: list[Task]) -> list[tuple[str, dict]]:
        self.queue += tasks
        self._start()
        return [(t.stage, {"executor": "local", "dispatcher": os.getpid(), "log": str(self._log(t.stage))})
                for t in tasks]

    def _start(self) -> None:
        while self.queue and len(self.running) < self.jobs:
            task = self.queue.pop(0)
            slot = next(i for i in range(self.jobs) if i not in self.running)
            env = dict(os.environ)
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
            else:
                threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
                env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
            self.folder.mkdir(parents=True, exist_ok=True)
            files = {k: self.folder / f"{task.stage}.{k}.json" for k in ("task", "result")}
            files["result"].unlink(missing_ok=True)
            write_text_atomic(files["task"], json.dumps(dataclasses.asdict(task)))
            with open(self._log(task.stage), "w") as log:
                self.running[slot] = (task, subprocess.Popen(
                    [sys.executable, "-m", "lmc.dispatch", "--worker", str(files["task"]), str(files["result"])],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def ids(self) -> dict[str, dict]:
        return {task.stage: {"pid": proc.pid} for task, proc in self.running.values()}

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        """Finished tasks: (stage, log, result), result None when the task failed or was killed."""
        done = []
        for slot, (task, proc) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[slot]
            result = self.folder / f"{task.stage}.result.json"
            ok = proc.returncode == 0 and result.exists()
            done.append((task.stage, self._log(task.stage), json.loads(result.read_text()) if ok else None))
        self._start()
        return done

    def cancel(self) -> None:
        """Stop every worker (its whole process group: the worker, its dvc and the stage it runs)."""
        self.queue.clear()
        for _, proc in self.running.values():
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.running.values():
            try:
                proc.wait(CANCEL_WAIT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for _, proc in self.running.values():
            wait_group_gone(proc.pid)
        self.running.clear()


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Until no process of the group is left (a worker's exit does not prove its descendants are gone);
    what outlives `timeout` is killed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL if time.monotonic() > deadline else 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return  # the group id was reused by another user's process: ours are gone
        time.sleep(0.05)


class Requeueable(Checkpointable):
    """run_task as a SLURM task that submitit requeues when it runs out of time or is preempted: its default
    `checkpoint` resubmits the same call; the cell then takes up its saved progress (lmc/resume.py)."""

    def __call__(self, task: Task) -> dict:
        return run_task(task)


class SlurmExecutor:
    """Array jobs through submitit, one array task per stage, at most `jobs` tasks out at once (queued here
    beyond that). Without accounting (slurmdbd) submitit cannot tell how a task ended, so a task that left
    `squeue` without a result file failed (killed, cancelled, out of time)."""

    def __init__(self, jobs: int, state: Path, partition: str | None, gpus_per_task: int, cpus_per_task: int,
                 time_limit: str, requeues: int = 20):
        import submitit

        self.limit = jobs
        # A task out of time or preempted is requeued (submitit signals it before the limit; Requeueable tells
        # it to resubmit) up to `requeues` times, and its cell takes up its saved progress.
        self.executor = submitit.AutoExecutor(folder=str(state / "slurm" / "%j"), cluster="slurm",
                                              slurm_max_num_timeout=requeues)
        params = dict(timeout_min=_minutes(time_limit), cpus_per_task=cpus_per_task, name="lmc-dispatch")
        if partition:
            params["slurm_partition"] = partition
        if gpus_per_task:
            params["gpus_per_node"] = gpus_per_task  # one task per node: its GPUs
        self.executor.update_parameters(**params)
        self.queue: list[Task] = []
        self.jobs: list[tuple[Task, object]] = []

    def submit(self, tasks: list[Task]) -> list[tuple[str, dict]]:
        self.queue += tasks
        self._start()
        return [(t.stage, {"executor": "slurm", "dispatcher": os.getpid()}) for t in tasks]

    def _start(self) -> None:
        batch, self.queue = self.queue[:self.limit - len(self.jobs)], self.queue[self.limit - len(self.jobs):]
        if not batch:
            return
        try:
            jobs = self.executor.map_array(Requeueable(), batch)
        except Exception as err:  # noqa: BLE001 (sbatch refused: partition, QOS, time limit...)
            self.queue = batch + self.queue
            last = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            raise DispatchError(f"dispatch: SLURM refused the job ({last}); check --partition, --time and "
                                f"--gpus-per-task") from None
        self.jobs += list(zip(batch, jobs))

    def ids(self) -> dict[str, dict]:
        return {t.stage: {"job": j.job_id, "log": str(j.paths.stdout)} for t, j in self.jobs}

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        queued = _squeue()
        if queued is None:  # squeue did not answer: ask again next round rather than fail every task
            return []
        done = []
        for task, job in list(self.jobs):
            if job.paths.result_pickle.exists():
                try:
                    result = job.result()
                except Exception:  # noqa: BLE001 (a failed task: its traceback is in its log)
                    result = None
            elif job.job_id not in queued:
                result = None
            else:
                continue
            self.jobs.remove((task, job))
            done.append((task.stage, Path(job.paths.stdout), result))
        self._start()
        return done

    def cancel(self) -> None:
        self.queue.clear()
        for _, job in self.jobs:
            with contextlib.suppress(Exception):
                job.cancel(check=False)  # scancel
        self.jobs.clear()


def _squeue() -> set[str] | None:
    """Job ids (as submitit names them, array tasks as <job>_<task>) in SLURM's queue; None if squeue failed."""
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(proc.stdout.split()) if proc.returncode == 0 else None


def _gpu_ids() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _minutes(limit: str) -> int:
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


# -- records: what was sent, what failed ---------------------------------------------------------------------

def load_records() -> dict:
    path = STATE_DIR / "records.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_records(records: dict) -> None:
    write_text_atomic(STATE_DIR / "records.json", json.dumps(records, indent=1, sort_keys=True))


def last_error(log: Path) -> str:
    try:
        lines = [l.strip() for l in Path(log).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "no log"
    return next((l for l in reversed(lines) if "Error" in l or l.startswith("error")), lines[-1] if lines else "")


def alive(record: dict) -> bool:
    """Whether a task recorded as running still is: its dispatcher (the only one that can take it home) is
    alive, and a SLURM task that was submitted is still in the queue (or squeue cannot tell)."""
    try:
        os.kill(record["dispatcher"], 0)
    except OSError:
        return False
    queued = _squeue() if record.get("job") else None
    return queued is None or record["job"] in queued


# -- the dispatcher ----------------------------------------------------------------------------------------

def status(names: list[str]) -> str:
    """Per study: stages done, running, failed (with log and last error line) and pending."""
    raw = studies.load()
    per_study = study_stages(raw, names)
    records = load_records()
    todo = pending([s for stages in per_study.values() for s in stages], stage_defs())
    lines = []
    for study, stages in per_study.items():
        groups = {"done": [], "running": [], "failed": [], "pending": []}
        for s in stages:
            rec = records.get(s)
            if s not in todo:
                groups["done"].append(s)
            elif rec and rec["state"] == "running" and alive(rec):
                groups["running"].append(s)
            elif rec:  # failed, or recorded running by a dispatcher that is gone
                groups["failed"].append(s)
            else:
                groups["pending"].append(s)
        lines.append(f"{study}: " + ", ".join(f"{len(v)} {k}" for k, v in groups.items()))
        for s in groups["failed"]:
            log = records[s].get("log")
            lines.append(f"  failed {s}: {log or 'no log'}: "
                         f"{records[s].get('error') or (last_error(Path(log)) if log else 'never started')}")
    return "\n".join(lines + unprepared_note(raw, names))


def dry_run(names: list[str]) -> str:
    """The stages a dispatch would send, per study, with the estimated device-hours of its cells."""
    raw = studies.load()
    per_study = study_stages(raw, names)
    todo = pending([s for stages in per_study.values() for s in stages], stage_defs())
    lines, devices = [], set()
    for study, stages in per_study.items():
        mine = [s for s in stages if s in todo]
        specs = [studies.resolve(raw, studies.find_cell(raw, study, s[len(study) + 1:]))
                 for s in mine if s != f"trunk-{study}"]
        device = specs[0].device if specs else "cpu"
        devices |= {(s.device, s.precision, s.numerics, s.cpu_step) for s in specs} or {("cpu", "fp32", "portable",
                                                                                         "per_model")}
        lines.append(f"{study}: {len(mine)} to send, about {sum(map(cost.cell_hours, specs)):.2f} "
                     f"{device.upper()}-hours")
        lines += [f"  {s}" for s in mine]
    lines += [f"{d.upper()}-hours ({p}) {cost.basis(d, p, n, c)} (lmc/cost.py; reports/cost.md: every study, every "
              f"precision)" for d, p, n, c in sorted(devices)]
    return "\n".join(lines + unprepared_note(raw, names))


def planned(targets: list[str]) -> list[str]:
    """The stages a sequential `dvc repro <targets>` walks, in its order (DVC's own planner: `--dry` cannot plan
    stages whose inputs do not exist yet). Stages up to date are left out but for the home ones (cheap)."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    dvc_file = studies.DVC_FILE.resolve()
    with Repo(str(dvc_file.parent)) as repo:
        wanted = collect_stages(repo, [f"{dvc_file}:{t}" for t in targets])
        steps = [s.name for s in plan_repro(get_active_graph(repo.index.graph), wanted)]
    defs = stage_defs()
    # DVC's planner walks a small subgraph in a set's (hash-seeded) order; dvc.yaml's order is a dependency
    # order (the generator writes data, trunks, cells, then reports), and the same from one run to the next.
    position = {name: i for i, name in enumerate(defs)}
    steps.sort(key=position.__getitem__)
    late = [s for s in steps for u in upstream(s, defs) if u in steps and position[u] > position[s]]
    if late:
        raise DispatchError(f"dispatch: {studies.DVC_FILE} lists {late[0]} before a stage it reads; regenerate it "
                            f"with `python -m lmc.studies_dvc`")
    behind = set(stale([s for s in steps if sent_out(s)]))
    plan = []
    for s in steps:  # a cell below a trunk that reruns reruns too, as in a sequential repro
        if not sent_out(s) or s in behind or any(u in plan and sent_out(u) for u in upstream(s, defs)):
            plan.append(s)
    return plan


def sent_out(stage: str) -> bool:
    """Trunks and cells go to workers; source, prepare (they read data_root) and reports run at home."""
    return not stage.startswith(("source-", "prepare-", "report-"))


def dispatch(names: list[str], executor, remote: str | None, git_url: str | None, scratch: str | None,
             progress=None) -> list[str]:
    """Bring the reports of `names` up to date: the stages a sequential `dvc repro` would run, taken home in
    its order (so the lock is the same bytes), the trunks and cells run by `executor`'s workers, the rest
    here. Returns the stages that failed."""
    commit = check_committed()
    defs = stage_defs()
    dvc("repro", *data_stages(studies.load(), names))  # first: what is stale can only be told with the data here
    plan = planned([f"report-{n}" for n in names])
    home_cache = (STUDIES_DIR / ".dvc" / "cache").resolve()
    remote = remote or str(home_cache)
    shared = Path(remote).resolve() == home_cache
    dvc("remote", "add", "--local", "-f", "dispatch", remote)
    git_url = git_url or str(STUDIES_DIR.parent.resolve())
    scratch = scratch or str((STATE_DIR / "scratch").resolve())
    todo = [s for s in plan if sent_out(s)]
    if progress is not None:
        progress.reset(total=len(todo))
    records = load_records()
    done, failed, results, sent = set(), [], {}, set()
    at = 0
    try:
        while at < len(plan):
            ready = [s for s in todo if s not in sent and not _blocked(s, defs, plan, failed)
                     and all(u in done for u in upstream(s, defs) if u in plan)]
            if ready:
                lock = yaml.safe_load(studies.DVC_FILE.with_suffix(".lock").read_text())["stages"]
                print(f"dispatch: sending {len(ready)} task(s) ({', '.join(ready[:3])}"
                      f"{', ...' if len(ready) > 3 else ''})", file=sys.stderr)
                for s, job in executor.submit([Task(s, commit, git_url, remote, {u: lock[u] for u in
                                                    upstream(s, defs, cached=True)}, scratch) for s in ready]):
                    records[s] = {"state": "running", **job}
                sent.update(ready)
                save_records(records)
            for stage, ids in executor.ids().items():  # worker pids, SLURM job ids and logs, once known
                if any(records[stage].get(k) != v for k, v in ids.items()):
                    records[stage].update(ids)
                    save_records(records)
            for stage, log, result in executor.poll():
                results[stage] = result
                if result is None:
                    records[stage] = {**records.get(stage, {}), "state": "failed", "log": str(log)}
                    failed.append(stage)
                    save_records(records)
            while at < len(plan):  # take home, in the plan's order, whatever is ready
                stage = plan[at]
                if _blocked(stage, defs, plan, failed) or stage in failed:
                    pass
                elif not sent_out(stage):
                    try:  # a home stage that fails (a report, a dataset) stops only what reads it
                        dvc("repro", "--single-item", stage)
                        if stage.startswith("prepare-") and not shared:
                            dvc("push", "-r", "dispatch", stage)
                        done.add(stage)
                    except DispatchError as err:
                        print(err, file=sys.stderr)
                        failed.append(stage)
                elif stage in results:
                    try:
                        take_home(results[stage])
                        records.pop(stage, None)
                        done.add(stage)
                    except DispatchError as err:
                        records[stage] = {**records.get(stage, {}), "state": "failed", "error": str(err)}
                        failed.append(stage)
                    save_records(records)
                    if progress is not None:
                        progress.update(1)
                else:
                    break
                studies_dvc.sort_lock()  # the lock in dvc.yaml's order, whatever DVC appended
                at += 1
            if at < len(plan):
                time.sleep(0.5)
    except BaseException:  # Ctrl-C, or a stage at home that failed: no task is left running behind us
        executor.cancel()
        save_records({s: r for s, r in records.items() if r["state"] != "running"})
        raise
    return failed


def _blocked(stage: str, defs: dict, plan: list[str], failed: list[str]) -> bool:
    """Whether `stage` reads (through any chain of the plan's stages) the output of a failed stage."""
    return bool(failed) and any(u in failed or _blocked(u, defs, plan, failed)
                                for u in upstream(stage, defs) if u in plan)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@entry
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(*argv[1:3])
    parser = argparse.ArgumentParser(prog="python -m lmc.dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("studies", nargs="+", help="studies of studies/studies.yaml")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--jobs", type=int, default=max(1, len(_gpu_ids()) or 1),
                        help="tasks running at once (local: worker processes; slurm: the array's parallelism)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--gpus-per-task", type=int, default=0)
    parser.add_argument("--cpus-per-task", type=int, default=2)
    parser.add_argument("--time", default="4:00:00", help="SLURM time limit per task, [D-]HH:MM[:SS]")
    parser.add_argument("--requeues", type=int, default=20, help="SLURM: times a task out of time or preempted "
                        "is requeued; it continues from its last saved epoch (LMC_RESUME_EVERY_S, default 300 s)")
    parser.add_argument("--remote", help="DVC remote URL the workers trade data through (default: the home "
                        "studies cache, which needs a shared filesystem)")
    parser.add_argument("--git-url", help="where workers clone the home commit from (default: this repository)")
    parser.add_argument("--scratch", help="where workers make their clones (default: studies/.dispatch/scratch)")
    parser.add_argument("--status", action="store_true", help="show done/running/failed/pending and exit")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent, with its cost")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise DispatchError(f"dispatch: --jobs={args.jobs}; give at least 1")
    raw = studies.load()
    for name in args.studies:
        studies.cells(raw, name)  # an unknown study: one line, before anything runs
    if args.status:
        return print(status(args.studies))
    if args.dry_run:
        return print(dry_run(args.studies))
    if args.executor == "slurm":
        if shutil.which("sbatch") is None:
            raise DispatchError("dispatch: --executor slurm needs SLURM's sbatch on PATH; run on a login node")
        executor = SlurmExecutor(args.jobs, STATE_DIR, args.partition, args.gpus_per_task, args.cpus_per_task,
                                 args.time, args.requeues)
    else:
        executor = LocalExecutor(args.jobs, STATE_DIR)
    from tqdm import tqdm

    # `kill` (SIGTERM) cancels like Ctrl-C; a background launch (`nohup ... &`) ignores SIGINT, so it is restored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    # A closed terminal or ssh session (SIGHUP) cancels too, so that no worker or SLURM job runs on unowned;
    # under `nohup` (SIGHUP ignored) the dispatch outlives its terminal, as asked.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _interrupt)
    with tqdm(total=0, desc="cells", unit="cell", disable=None) as bar:
        try:
            failed = dispatch(args.studies, executor, args.remote, args.git_url, args.scratch, bar)
        except KeyboardInterrupt:
            print("dispatch: interrupted; running tasks cancelled, nothing partial kept", file=sys.stderr)
            raise SystemExit(130) from None
    if failed:
        print(status(args.studies), file=sys.stderr)
        raise DispatchError(f"dispatch: {len(failed)} task(s) failed ({', '.join(failed[:5])}); see the logs "
                            f"above, then dispatch again to send what is missing")
    print(f"dispatch: {', '.join(args.studies)} up to date; `dvc --cd studies repro` has nothing to run")


if __name__ == "__main__":
    main()
