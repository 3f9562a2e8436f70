"""The worker side: one task in a clone of its own (`python -m lmc.dispatch --worker TASK RESULT` for the local
executor; SLURM calls run_task through submitit; the archive executor's runner calls it on the bare machine)."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .. import studies
from ..io import write_text_atomic
from ..resume import DIR_ENV as RESUME_DIR_ENV
from .common import BIN, CANCEL_WAIT_S, ENV, Task, add_lock_entries, dvc, git, outputs, resume_dir


def run_task(task: Task) -> dict:
    """On the worker: clone, pull what the stage reads, `dvc repro --single-item`, push its cached outputs.
    Returns the stage's lock entry and the bytes of its uncached outputs (base64). The clone is removed."""
    Path(task.scratch).mkdir(parents=True, exist_ok=True)
    ws = Path(tempfile.mkdtemp(prefix=f"{task.stage}-", dir=task.scratch))
    try:
        subprocess.run(["git", "clone", "-q", "--no-checkout", task.git_url, str(ws)], check=True)
        git("checkout", "-q", task.commit, cwd=ws)
        proj = ws / studies.scale_dir(task.scale)
        dvc("remote", "add", "--local", "-f", "dispatch", task.remote, cwd=proj)
        if task.pull:
            add_lock_entries(proj / "dvc.lock", task.pull)
            dvc("pull", "-r", "dispatch", *task.pull, cwd=proj)
        run = subprocess.run([str(BIN / "dvc"), "repro", "--single-item", task.stage], cwd=proj,
                             stderr=subprocess.PIPE, text=True,
                             env={**ENV, RESUME_DIR_ENV: str(resume_dir(task.scratch))})  # lmc/resume.py
        sys.stderr.write(run.stderr)  # into the task's log: the stage's one-line error, or its resume and time
        if run.returncode:
            last = next((l for l in reversed(run.stderr.splitlines()) if l.strip()), "no output")
            raise RuntimeError(f"dvc repro {task.stage} failed: {last}")
        locked = yaml.safe_load((proj / "dvc.lock").read_text())["stages"][task.stage]
        outs = outputs(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"][task.stage])
        uncached = [path for path, cached in outs if not cached]
        if len(uncached) < len(outs):
            dvc("push", "-r", "dispatch", task.stage, cwd=proj)
        files = {p: base64.b64encode((proj / p).read_bytes()).decode() for p in uncached}
        record = ws / studies.numerics_record(task.scale, task.stage)  # its numeric environment, with the results
        return {"stage": task.stage, "lock": locked, "files": files,
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
