"""Send the studies' pending cells to workers, gather them back into the home workspace's lock of their scale,
studies/<scale>/dvc.lock.

    python -m lmc.dispatch table1 fig1 --scale paper --executor slurm --jobs 64 --partition gpu --gpus-per-task 1
    python -m lmc.dispatch table1 --jobs 2            # local worker processes (the default executor), cpu scale
    python -m lmc.dispatch table2 --scale paper --executor archive   # a machine that shares nothing with home
    python -m lmc.dispatch table1 --status            # done / running / in archive / failed / pending per study
    python -m lmc.dispatch table1 --dry-run           # what would be sent, and its estimated device-hours

One dispatch serves one scale (--scale, default cpu): it runs and records that scale's stages only. A report
at another scale reads the cpu scale's results as they are (`--single-item`): it never reruns a cpu cell.

Each task runs one stage through DVC itself, `dvc repro --single-item <stage>`, in a workspace of its own: a
git clone of the home repository at the home commit (never two `dvc repro` in one workspace: DVC locks it).
Cached data (the .beton files, trunk snapshots) travels through a DVC remote: the home studies cache by default
(a shared filesystem), or `--remote URL` (S3, SSH, or a path; nothing else is shared then but the job folder
of the executor: the task descriptions, the few-KB results and the logs). A cell's result (a committed,
uncached JSON) comes back with the task's result and is checked against the md5 the worker's lock recorded;
home then writes it atomically and records the stage with `dvc commit`, and checks that the lock entry home
computes equals the worker's. So the home lock is byte for byte what a sequential `dvc repro` writes.
A task that fails, is killed or cancelled leaves nothing at home; the next dispatch sends it again.

The modules:
- plan.py: which stages a dispatch runs, in which order, which go to workers;
- home.py: the dispatch loop, taking a result home (take_home), the records behind --status;
- worker.py: one task in its own clone (run_task), wherever it runs;
- common.py: the Task, paths of a scale's pipeline, dvc and git;
- cli.py: the command line (`python -m lmc.dispatch`);
- executors.py: the executors by name;
- one module per executor: local.py, slurm.py, archive.py.

An executor meets common.Executor, a typing.Protocol, and home reaches it only through that contract:
`submit(tasks)`, `ids()` (a pid, a job id, a log, learnt later), `poll()` (the finished tasks; it may raise
common.Detached when what is left cannot be waited for, as the archive executor's does), `cancel()`,
`adopt(task, record)`, `retire(settled)`, and, without an instance, `left(scale, records)` (for --status: does
a recorded task still run?) and `stop(record)` (end what a dispatcher that is gone left). A fourth executor (Ray,
Kubernetes) is a new module beside these, one entry in executors.py and its construction in cli.py; its
workers call worker.run_task.
"""
