"""The local executor: worker processes on this machine."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..io import write_text_atomic
from .common import CANCEL_WAIT_S, ENDED, RUNS, UNSENT, LateResults, Task, process_start, state_dir


class LocalExecutor:
    """`jobs` worker processes on this machine: each gets one GPU (CUDA_VISIBLE_DEVICES) where there are
    GPUs, else an equal share of the cores (OMP_NUM_THREADS); tasks beyond that wait their turn here."""
    kind = "local"
    remote = None  # the home studies cache: the workers share this machine's filesystem

    def __init__(self, jobs: int, state: Path):
        self.jobs, self.folder = jobs, state / "local"
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpus = [g for g in (gpus.split(",") if gpus is not None else gpu_ids()) if g]
        self.queue: list[Task] = []
        self.running: dict[int, tuple[Task, subprocess.Popen]] = {}  # slot -> (task, worker process)
        self.late = LateResults()

    def _log(self, stage: str) -> Path:
        return self.folder / f"{stage}.log"

    def _files(self, stage: str) -> dict[str, Path]:
        return {k: self.folder / f"{stage}.{k}.json" for k in ("task", "result")}

    def _free_slot(self) -> int:
        return next(i for i in range(len(self.running) + 1) if i not in self.running)

    def submit(self, tasks: list[Task]) -> list[tuple[str, dict]]:
        self.queue += tasks
        self._start()
        return [(t.stage, {"executor": "local", "dispatcher": os.getpid(), "log": str(self._log(t.stage))})
                for t in tasks]

    def _start(self) -> None:
        while self.queue and len(self.running) < self.jobs:
            task = self.queue.pop(0)
            slot = self._free_slot()
            env = dict(os.environ)
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
            else:
                threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
                env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
                if self.jobs > 1:  # the portable mode keeps 2 threads per worker whatever the cores: where
                    # workers share cores, OpenMP's spinning waits cost 7x (two 2-thread runs on 2 cores, AMD EPYC:
                    # 130 s against 19 s passive, one alone 13-15 s either way); the bytes do not depend on it
                    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            self.folder.mkdir(parents=True, exist_ok=True)
            files = self._files(task.stage)
            files["result"].unlink(missing_ok=True)
            write_text_atomic(files["task"], json.dumps(dataclasses.asdict(task)))
            with open(self._log(task.stage), "w") as log:
                self.running[slot] = (task, subprocess.Popen(
                    [sys.executable, "-m", "lmc.dispatch", "--worker", str(files["task"]), str(files["result"])],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def ids(self) -> dict[str, dict]:
        started = {slot: process_start(proc.pid) for slot, (_, proc) in self.running.items()}
        return {task.stage: {"pid": proc.pid, "started": started[slot], "slot": slot}
                for slot, (task, proc) in self.running.items() if started[slot]}

    def adopt(self, task: Task, record: dict) -> bool:
        """Take over the worker a dispatcher that is gone left for `task` (`record`: what that dispatcher
        recorded), if it ran this very task and still runs, or finished with a result: it is then watched, and
        cancelled, like this dispatcher's own. False where it cannot be (another task, gone without a result)."""
        files = self._files(task.stage)
        try:
            sent = json.loads(files["task"].read_text())
        except (OSError, ValueError):
            return False
        if sent != json.loads(json.dumps(dataclasses.asdict(task))):
            return False
        if not record.get("pid") or not (files["result"].exists() or worker_alive(record)):
            return False  # never started, or ended without a result
        slot = record.get("slot", 0)
        if slot in self.running:
            slot = self._free_slot()
        self.running[slot] = (task, Adopted(record["pid"], record.get("started"), files["result"]))
        return True

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        """Finished tasks: (stage, log, result), result None when the task failed or was killed."""
        done = []
        for slot, (task, proc) in list(self.running.items()):
            if proc.poll() is None:
                continue
            result = self._files(task.stage)["result"]
            if proc.returncode == 0 and not result.exists() and not self.late.failed(task.stage, self.folder):
                continue  # it ended well: its result is on its way (a network file system)
            del self.running[slot]
            ok = proc.returncode == 0 and result.exists()
            done.append((task.stage, self._log(task.stage), json.loads(result.read_text()) if ok else None))
        self._start()
        return done

    def cancel(self) -> None:
        """Stop every worker (its whole process group: the worker, its dvc and the stage it runs)."""
        self.queue.clear()
        for _, proc in self.running.values():
            if isinstance(proc, Adopted) and proc.poll() is not None:
                continue  # gone: its pid may be another process's by now
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
            if not isinstance(proc, Adopted):  # an adopted worker's group is not ours to wait for
                wait_group_gone(proc.pid)
        self.running.clear()

    def retire(self, settled: set[str]) -> None:
        pass  # nothing kept beyond the dispatch: a result file is rewritten when its task is sent again

    @classmethod
    def left(cls, scale: str, records: dict[str, dict]) -> dict[str, str]:
        """A worker runs while its pid lives with the start time recorded; one that wrote its result (atomically,
        as its last act) left it; a task without a pid was still queued in its dispatcher."""
        return {stage: UNSENT if not record.get("pid") else
                RUNS if worker_alive(record) or local_result(scale, stage).exists() else ENDED
                for stage, record in records.items()}

    @classmethod
    def stop(cls, record: dict) -> None:
        """End the worker's whole process group (the worker, its dvc, the stage), if it still runs."""
        if not worker_alive(record):
            return
        worker = Adopted(record["pid"], record["started"], Path(os.devnull))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.killpg(worker.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(CANCEL_WAIT_S)
                return


def local_result(scale: str, stage: str) -> Path:
    """Where a local worker writes its task's result (atomically, as its last act)."""
    return state_dir(scale) / "local" / f"{stage}.result.json"


class Adopted:
    """A worker another dispatcher started (not our child: its exit status is not ours to read), seen through
    the Popen methods the executor uses. It succeeded iff it wrote its result (atomically, as its last act)."""

    def __init__(self, pid: int, started: str | None, result: Path):
        self.pid, self.started, self.result = pid, started, result
        self.returncode = None

    def poll(self) -> int | None:
        if self.returncode is None and (self.started is None or process_start(self.pid) != self.started):
            self.returncode = 0 if self.result.exists() else 1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


def worker_alive(record: dict) -> bool:
    """Whether the local worker a record names still runs: its pid is alive and started when the record says
    (not a later process given the same pid)."""
    return bool(record.get("started")) and process_start(record.get("pid")) == record["started"]


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


def gpu_ids() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
