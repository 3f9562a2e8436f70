"""The `slurm_cluster` fixture gives a working single-node SLURM: sbatch arrays, submitit, scancel."""
from __future__ import annotations

import os
import sys
import time
import warnings

import pytest

from .slurm import slurm_cluster  # noqa: F401  (the fixture)

submitit = pytest.importorskip("submitit")


def task_facts(x: int) -> dict:
    """What a submitit task sees. Module-level: cloudpickle pickles it by reference (tests.test_slurm), so the
    task imports it from its working directory, which is the submitter's."""
    return {"square": x * x, "executable": sys.executable, "cwd": os.getcwd(),
            "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"), "conf": os.environ.get("SLURM_CONF")}


def fail(x: int) -> int:
    raise ValueError(f"cell {x} failed on purpose")


def executor(cluster, folder, timeout_min=5):
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition=cluster.partition, timeout_min=timeout_min, cpus_per_task=1)
    return ex


def wait_state(cluster, job_id, state="RUNNING", timeout=20):
    deadline = time.monotonic() + timeout
    while state not in cluster.squeue(job_id).values():
        assert time.monotonic() < deadline, f"job {job_id} never {state}: {cluster.squeue(job_id)}"
        time.sleep(0.1)


def test_sbatch_array_writes_every_task(slurm_cluster, tmp_path):
    script = tmp_path / "task.sh"
    script.write_text(f"#!/bin/bash\necho \"task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID\" "
                      f"> {tmp_path}/done-$SLURM_ARRAY_TASK_ID\n")
    t0 = time.monotonic()
    # `sbatch --wait` works too, but polls every 10 s: polling squeue is faster
    job = slurm_cluster.sbatch("--array=0-2", f"--output={tmp_path}/%A_%a.out", str(script))
    slurm_cluster.wait_left_queue(job, timeout=30)
    assert slurm_cluster.squeue(job, all_states=True) == {f"{job}_{i}": "COMPLETED" for i in range(3)}
    assert sorted(p.name for p in tmp_path.glob("done-*")) == ["done-0", "done-1", "done-2"]
    assert (tmp_path / "done-1").read_text().startswith("task 1 of ")
    assert len(list(tmp_path.glob("*_*.out"))) == 3
    assert time.monotonic() - t0 < 30


def test_submitit_map_array(slurm_cluster, tmp_path):
    ex = executor(slurm_cluster, tmp_path / "submitit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no sacct here: submitit warns that it cannot read the states
        jobs = ex.map_array(task_facts, [1, 2, 3])
        got = [j.result() for j in jobs]
    assert [f["square"] for f in got] == [1, 4, 9]
    assert [f["array_task"] for f in got] == ["0", "1", "2"]
    assert all(f["executable"] == sys.executable and f["cwd"] == os.getcwd() for f in got)
    assert all(f["conf"] == str(slurm_cluster.conf) for f in got)
    assert jobs[0].job_id.split("_")[1] == "0" and jobs[0].job_id.split("_")[0] == jobs[2].job_id.split("_")[0]


def test_submitit_failure_surfaces(slurm_cluster, tmp_path):
    ex = executor(slurm_cluster, tmp_path / "submitit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = ex.submit(fail, 7)
        with pytest.raises(submitit.core.utils.FailedJobError) as e:
            job.result()
        assert "cell 7 failed on purpose" in str(e.value) and "ValueError" in str(e.value)
        assert isinstance(job.exception(), submitit.core.utils.FailedJobError)


def test_scancel_ends_a_running_job(slurm_cluster, tmp_path):
    script = tmp_path / "sleep.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    job_id = slurm_cluster.sbatch(f"--output={tmp_path}/%j.out", str(script))
    wait_state(slurm_cluster, job_id)
    slurm_cluster.cmd("scancel", job_id)
    assert slurm_cluster.wait_left_queue(job_id, timeout=15) < 15
    assert slurm_cluster.squeue(job_id, all_states=True) == {job_id: "CANCELLED"}


def test_submitit_cancel_ends_a_running_task(slurm_cluster, tmp_path):
    ex = executor(slurm_cluster, tmp_path / "submitit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = ex.submit(time.sleep, 300)
        wait_state(slurm_cluster, job.job_id)
        job.cancel(check=True)  # scancel <job_id>
        waited = slurm_cluster.wait_left_queue(job.job_id, timeout=15)  # submitit ignores SIGTERM: KillWait=2
        assert waited < 15
        # no sacct: submitit cannot tell CANCELLED from anything else, and no result file is ever written
        assert job.state == "UNKNOWN"
        assert not job.done()  # so job.result() would wait forever: ask squeue how it ended
        assert slurm_cluster.squeue(job.job_id, all_states=True) == {job.job_id: "CANCELLED"}
