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
from .common import CANCEL_WAIT_S, Task


class LocalExecutor:
    """`jobs` worker processes on this machine: each gets one GPU (CUDA_VISIBLE_DEVICES) where there are
    GPUs, else an equal share of the cores (OMP_NUM_THREADS); tasks beyond that wait their turn here."""

    def __init__(self, jobs: int, state: Path):
        self.jobs, self.folder = jobs, state / "local"
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpus = [g for g in (gpus.split(",") if gpus is not None else gpu_ids()) if g]
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
                if self.jobs > 1:  # the portable mode keeps 2 threads per worker whatever the cores: where
                    # workers share cores, OpenMP's spinning waits cost 7x (two 2-thread runs on 2 cores, AMD EPYC:
                    # 130 s against 19 s passive, one alone 13-15 s either way); the bytes do not depend on it
                    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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


def gpu_ids() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
