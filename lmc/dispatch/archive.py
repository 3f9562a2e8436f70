"""The archive executor: tasks for a machine that shares nothing with home, not even a network (the lent GPU
machine, an air-gapped lab box: Python and torch, and the bundle of lmc/bundle.py installed).

    python -m lmc.dispatch table2 --scale paper --executor archive   # writes studies/paper/.dispatch/archive/tasks.tar.gz
    python -m lmc.dispatch --run-archive tasks.tar.gz results.tar.gz  # there, in a copy of the project
    # home again, with results.tar.gz in studies/paper/.dispatch/archive/inbox/:
    python -m lmc.dispatch table2 --scale paper --executor archive   # takes the results home, runs the reports

The tasks archive holds the home commit (a git bundle), the DVC objects the tasks read (the remote of this
executor: the .beton files, a trunk) and the tasks. The runner works through them as the other workers do
(run_task: a clone, `dvc pull`, `dvc repro --single-item`, `dvc push`), each in the tasks' order, and packs
each task's result and the objects it pushed. Home takes every result in through take_home, with the same
checks as the other executors (the md5 of each output, a lock entry equal to the worker's), in the plan's
order, so the end state is byte-identical to a sequential run. Only tasks whose inputs are home already go
into one archive: a study with a shared trunk takes two trips (the trunk, then its cells).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path

from ..io import write_text_atomic
from .common import DispatchError, Task, git
from .worker import run_task

TASKS, RESULTS = "tasks.json", "results.json"


class Detached(Exception):
    """Every task left is in an archive that has not come back: this dispatch stops here, nothing is lost."""


class ArchiveExecutor:
    """Writes the tasks it is given into `folder`/tasks.tar.gz and takes results from `folder`/inbox/*.tar.gz.
    Its DVC remote is `folder`/remote: home pushes the prepared data there, the results' objects land there."""

    def __init__(self, folder: Path, scale: str):
        self.folder, self.scale = folder, scale
        self.remote = str((folder / "remote").resolve())
        self.results, self.ready, self.archived = self._inbox(), [], []  # archived: the tasks written out

    def _inbox(self) -> dict[str, dict]:
        """The results of every archive in the inbox (their objects unpacked into the remote), by stage."""
        results = {}
        for path in sorted((self.folder / "inbox").glob("*.tar.gz")):
            try:
                with tarfile.open(path) as tar:
                    meta = json.load(tar.extractfile(RESULTS))
                    members = [m for m in tar.getmembers() if m.name.startswith("remote/") and m.isfile()]
                    tar.extractall(self.folder, members=members, filter="data")
            except (OSError, tarfile.TarError, KeyError, ValueError) as err:
                why = (str(err).splitlines() or [type(err).__name__])[0].rstrip(":")
                raise DispatchError(f"dispatch: {path} is not a results archive ({why}); remove it or bring it "
                                    f"again") from None
            if meta.get("scale") != self.scale:
                raise DispatchError(f"dispatch: {path} holds {meta.get('scale')}-scale results; this dispatch is "
                                    f"at {self.scale} scale")
            results.update({stage: {**r, "commit": meta["commit"]} for stage, r in meta["results"].items()})
        return results

    def submit(self, tasks: list[Task]) -> list[tuple[str, dict]]:
        back = [t for t in tasks if self.results.get(t.stage, {}).get("commit") == t.commit]  # run at this commit
        self.ready += [t.stage for t in back]
        out = [t for t in tasks if t not in back]
        if out:
            self.archived += out
            path = self.folder / "tasks.tar.gz"
            write_archive(path, self.archived, self.remote)
            print(f"dispatch: {len(out)} task(s) written to {path}: run them on the other machine with "
                  f"`python -m lmc.dispatch --run-archive {path.name} results.tar.gz`, put results.tar.gz in "
                  f"{self.folder / 'inbox'}/, then dispatch again", file=sys.stderr)
        return [(t.stage, {"executor": "archive", "dispatcher": os.getpid()}) for t in tasks]

    def ids(self) -> dict[str, dict]:
        return {}

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        if not self.ready and self.archived:
            raise Detached(f"{len(self.archived)} task(s) wait in {self.folder / 'tasks.tar.gz'}")
        done, self.ready = self.ready, []
        finished = []
        for stage in done:
            result, log = self.results[stage], self.folder / "logs" / f"{stage}.log"
            if "error" in result:  # what the runner said, for --status
                write_text_atomic(log, result["error"] + "\n")
            finished.append((stage, log, None if "error" in result else result))
        return finished

    def cancel(self) -> None:
        self.ready.clear()


def write_archive(path: Path, tasks: list[Task], remote: str) -> None:
    """tasks.json, repo.bundle (the home repository up to the tasks' commit) and remote/ (the DVC objects they
    read), as one .tar.gz, atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "repo.bundle"
        git("bundle", "create", "-q", str(bundle), "HEAD")
        meta = {"scale": tasks[0].scale, "commit": tasks[0].commit, "tasks": [dataclasses.asdict(t) for t in tasks]}
        (Path(tmp) / TASKS).write_text(json.dumps(meta, indent=1))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(Path(tmp) / TASKS, TASKS)
            tar.add(bundle, "repo.bundle")
            if Path(remote).exists():
                tar.add(remote, "remote")
        os.replace(partial, path)


def run_archive(tasks_archive: str, results_archive: str) -> int:
    """On the bare machine: every task of the archive in its order; a task whose input failed is not run.
    Writes the results archive (each task's result or its error, and the DVC objects the tasks pushed)."""
    work = Path(tempfile.mkdtemp(prefix="lmc-archive-"))
    try:
        with tarfile.open(tasks_archive) as tar:
            tar.extractall(work, filter="data")
        meta = json.loads((work / TASKS).read_text())
        remote = work / "remote"
        remote.mkdir(exist_ok=True)
        before = {p for p in remote.rglob("*") if p.is_file()}
        results, failed = {}, 0
        for fields in meta["tasks"]:
            task = Task(**{**fields, "git_url": str(work / "repo.bundle"), "remote": str(remote),
                           "scratch": str(work / "scratch")})
            print(f"run-archive: {task.stage}", file=sys.stderr)
            try:
                results[task.stage] = run_task(task)
            except Exception as err:  # noqa: BLE001 (one task's failure is its result; the others run on)
                traceback.print_exc()
                results[task.stage] = {"stage": task.stage, "error": f"{type(err).__name__}: {err}"}
                failed += 1
        (work / RESULTS).write_text(json.dumps({"scale": meta["scale"], "commit": meta["commit"], "results": results}))
        partial = Path(results_archive + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(work / RESULTS, RESULTS)
            for p in sorted(p for p in remote.rglob("*") if p.is_file() and p not in before):
                tar.add(p, str(Path("remote") / p.relative_to(remote)))
        os.replace(partial, results_archive)
        print(f"run-archive: {len(results) - failed} of {len(results)} task(s) done -> {results_archive}",
              file=sys.stderr)
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
