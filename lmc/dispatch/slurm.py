"""The SLURM executor: array jobs through submitit, requeued when out of time or preempted."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from submitit.helpers import Checkpointable

from .common import ENDED, RUNS, UNSENT, DispatchError, LateResults, Task, error_line, minutes, squeue, state_dir
from .worker import run_task


class Requeueable(Checkpointable):
    """run_task as a SLURM task that submitit requeues when it runs out of time or is preempted: its default
    `checkpoint` resubmits the same call; the cell then takes up its saved progress (lmc/resume.py)."""

    def __call__(self, task: Task) -> dict:
        return run_task(task)


class SlurmExecutor:
    """Array jobs through submitit, one array task per stage, at most `jobs` tasks out at once (queued here
    beyond that). Without accounting (slurmdbd) submitit cannot tell how a task ended, so a task that left
    `squeue` without a result file failed (killed, cancelled, out of time)."""
    kind = "slurm"
    remote = None  # the home studies cache, on the cluster's shared filesystem (or --remote)

    def __init__(self, jobs: int, state: Path, partition: str | None, gpus_per_task: int, cpus_per_task: int,
                 time_limit: str, requeues: int = 20, signal_delay_s: int = 90):
        import submitit

        self.limit = jobs
        # A task out of time or preempted is requeued (submitit signals it before the limit; Requeueable tells
        # it to resubmit) up to `requeues` times, and its cell takes up its saved progress.
        self.folder = state / "slurm" / "%j"
        self.executor = submitit.AutoExecutor(folder=str(self.folder), cluster="slurm",
                                              slurm_max_num_timeout=requeues)
        params = dict(timeout_min=minutes(time_limit), cpus_per_task=cpus_per_task, name="lmc-dispatch",
                      slurm_signal_delay_s=signal_delay_s)
        if partition:
            params["slurm_partition"] = partition
        if gpus_per_task:
            params["gpus_per_node"] = gpus_per_task  # one task per node: its GPUs
        self.executor.update_parameters(**params)
        self.queue: list[Task] = []
        self.jobs: list[tuple[Task, object]] = []
        self.late = LateResults()

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
            last = error_line(err, last=True)
            raise DispatchError(f"dispatch: SLURM refused the job ({last}); check --partition, --time and "
                                f"--gpus-per-task") from None
        self.jobs += list(zip(batch, jobs))

    def adopt(self, task: Task, record: dict) -> bool:
        """Take over the array task a dispatcher that is gone left for `task`, if it was submitted with this
        very task and is still queued or left its result."""
        import submitit
        from submitit.core.utils import DelayedSubmission

        job = submitit.SlurmJob(folder=self.folder, job_id=record["job"])
        try:
            sent = DelayedSubmission.load(job.paths.submitted_pickle)
        except Exception:  # noqa: BLE001 (absent, or unreadable: not a task to adopt)
            return False
        queued = squeue()
        if sent.args != (task,) or not (job.paths.result_pickle.exists() or queued is None
                                        or record["job"] in queued):
            return False
        self.jobs.append((task, job))
        return True

    def ids(self) -> dict[str, dict]:
        return {t.stage: {"job": j.job_id, "log": str(j.paths.stdout)} for t, j in self.jobs}

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        queued = squeue()
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
                if not self.late.failed(job.job_id, job.paths.folder):
                    continue  # out of the queue, its result maybe not yet visible here (NFS)
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

    def retire(self, settled: set[str]) -> None:
        pass  # submitit's job folders stay, for their logs

    @classmethod
    def left(cls, scale: str, records: dict[str, dict]) -> dict[str, str]:
        """An array task runs while SLURM's queue holds it (or squeue cannot tell), and left its result when
        submitit's result file is written; a task without a job id was still queued in its dispatcher."""
        queued = squeue()  # asked once for all
        def where(record: dict) -> str:
            job = record.get("job")
            if not job:
                return UNSENT
            result = state_dir(scale) / "slurm" / job / f"{job}_0_result.pkl"
            return RUNS if queued is None or job in queued or result.exists() else ENDED
        return {stage: where(record) for stage, record in records.items()}

    @classmethod
    def stop(cls, record: dict) -> None:
        if record.get("job"):
            subprocess.run(["scancel", record["job"]], capture_output=True, check=False)
