"""`python -m lmc.dispatch`: the command line."""
from __future__ import annotations

import argparse
import shutil
import signal
import sys

from .. import studies
from ..stage import entry
from .archive import ArchiveExecutor, run_archive
from .common import Detached, DispatchError, check_options, claim, holder, state_dir
from .executors import EXECUTORS
from .home import dispatch, dry_run, recover, status
from .local import LocalExecutor, gpu_ids
from .worker import worker_main


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@entry
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # what an executor starts (worker.py), not typed by users
        if len(argv) != 3:
            raise DispatchError("dispatch: usage: python -m lmc.dispatch --worker TASK.json RESULT.json")
        return worker_main(*argv[1:3])
    if argv[:1] == ["--run-archive"]:  # on the bare machine (archive.py)
        if len(argv) != 3:
            raise DispatchError("dispatch: usage: python -m lmc.dispatch --run-archive TASKS.tar.gz RESULTS.tar.gz")
        raise SystemExit(run_archive(*argv[1:3]))
    parser = argparse.ArgumentParser(prog="python -m lmc.dispatch",
                                     description="Send the studies' pending cells to workers; take them home.")
    parser.add_argument("studies", nargs="+", help="studies of studies/studies.yaml")
    parser.add_argument("--scale", default="cpu", choices=studies.SCALES,
                        help="the scale whose pipeline to run (studies/<scale>); default cpu")
    parser.add_argument("--executor", choices=list(EXECUTORS), default="local")
    parser.add_argument("--jobs", type=int, default=max(1, len(gpu_ids()) or 1),
                        help="tasks running at once (local: worker processes; slurm: the array's parallelism)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--gpus-per-task", type=int, default=0)
    parser.add_argument("--cpus-per-task", type=int, default=2)
    parser.add_argument("--time", default="4:00:00", help="SLURM time limit per task, [D-]HH:MM[:SS]")
    parser.add_argument("--requeues", type=int, default=20, help="SLURM: times a task out of time or preempted "
                        "is requeued; it continues from its last saved epoch (LMC_RESUME_EVERY_S, default 300 s)")
    parser.add_argument("--signal-delay", type=int, default=90, help="SLURM: seconds before the time limit at "
                        "which a task is told to requeue (SLURM may signal up to a minute early)")
    parser.add_argument("--remote", help="DVC remote URL the workers trade data through (default: the home "
                        "studies cache, which needs a shared filesystem; archive: its own folder)")
    parser.add_argument("--git-url", help="where workers clone the home commit from (default: this repository)")
    parser.add_argument("--scratch", help="where workers make their clones (default: "
                        "studies/<scale>/.dispatch/scratch)")
    parser.add_argument("--status", action="store_true", help="show done/running/failed/pending and exit")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent, with its cost")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise DispatchError(f"dispatch: --jobs={args.jobs}; give at least 1")
    if args.executor == "slurm":
        check_options(args.gpus_per_task, args.cpus_per_task, args.time, args.requeues, args.signal_delay)
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing and not (args.status or args.dry_run):
            raise DispatchError(f"dispatch: --executor slurm needs SLURM's {' and '.join(missing)} on PATH; run on "
                                f"a login node")
    raw = studies.load(args.scale)
    for name in args.studies:
        if not studies.cells(raw, name):  # an unknown study raises: one line, before anything runs
            raise DispatchError(f"dispatch: {name} has no cell at {args.scale} scale (studies/studies.yaml)")
    # One dispatcher per scale: the journal, the records and the tasks recorded as running are its own.
    held = claim(args.scale)
    if held is not None:
        recovered = recover(args.scale)  # a dispatcher killed while writing at home: undo that write first
        if recovered:
            print(recovered, file=sys.stderr)
    if args.status:
        return print(status(args.scale, args.studies))
    if args.dry_run:
        return print(dry_run(args.scale, args.studies))
    if held is None:
        pid = holder(args.scale)
        raise DispatchError(f"dispatch: another dispatch (pid {pid}) is running at {args.scale} scale; watch it "
                            f"with --status, or stop it first (kill {pid}: it cancels its tasks)")
    for name in args.studies:
        studies.missing_cpu_results(raw, name)
    if args.executor == "slurm":
        from .slurm import SlurmExecutor  # submitit: not on a bare machine, which runs archives only

        executor = SlurmExecutor(args.jobs, state_dir(args.scale), args.partition, args.gpus_per_task,
                                 args.cpus_per_task, args.time, args.requeues, args.signal_delay)
    elif args.executor == "archive":
        given = [f for f, v in (("--remote", args.remote), ("--git-url", args.git_url), ("--scratch", args.scratch))
                 if v]
        if given:
            raise DispatchError(f"dispatch: {given[0]} has no use with --executor archive (the archive carries the "
                                f"commit and the data, and the bare machine works beside it); leave it out")
        executor = ArchiveExecutor(state_dir(args.scale) / "archive", args.scale)
    else:
        executor = LocalExecutor(args.jobs, state_dir(args.scale))
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
            failed = dispatch(args.scale, args.studies, executor, args.remote, args.git_url, args.scratch, bar)
        except Detached as waiting:
            print(status(args.scale, args.studies), file=sys.stderr)
            print(f"dispatch: {waiting}; the rest follows when their results are in the inbox", file=sys.stderr)
            return
        except KeyboardInterrupt:
            print("dispatch: interrupted; running tasks cancelled, nothing partial kept", file=sys.stderr)
            raise SystemExit(130) from None
    if failed:
        print(status(args.scale, args.studies), file=sys.stderr)
        raise DispatchError(f"dispatch: {len(failed)} task(s) failed ({', '.join(failed[:5])}); see the logs "
                            f"above, then dispatch again to send what is missing")
    print(f"dispatch: {', '.join(args.studies)} up to date at {args.scale} scale ({studies.scale_dir(args.scale)})")

