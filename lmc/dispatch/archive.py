"""The archive executor: tasks for a machine that shares nothing with home, not even a network (the lent GPU
machine, an air-gapped lab box: Python and torch, and the bundle of lmc/bundle.py installed).

    python -m lmc.dispatch table2 --scale paper --executor archive   # writes studies/paper/.dispatch/archive/tasks-<id>.tar.gz
    python -m lmc.dispatch --run-archive tasks-<id>.tar.gz results.tar.gz   # there, in a copy of the project
    # home again, with results.tar.gz in studies/paper/.dispatch/archive/inbox/:
    python -m lmc.dispatch table2 --scale paper --executor archive   # takes the results home, runs the reports

A tasks archive holds the home repository (a git bundle), the DVC objects its tasks read (the .beton files, a
trunk: the objects of their `pull` lock entries) and the tasks. The runner works through them as the other
workers do (run_task: a clone, `dvc pull`, `dvc repro --single-item`, `dvc push`) and rewrites the results
archive after each task, so that a run cut short keeps what it finished (and a cell's saved progress, beside
it); run again, it skips what is done. Home takes each result in through take_home, with the same checks as
the other executors (the md5 of each output, a lock entry equal to the worker's), in the plan's order, so the
end state is byte-identical to a sequential run. A results archive is used once: a dispatch that read it
moves it to inbox/taken/, and a task whose result was an error is sent again by the next dispatch. Only tasks
whose inputs are home already go into one archive: a study with a shared trunk takes two trips.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path

from ..io import write_text_atomic
from .common import INPUTS, UNKNOWN, Detached, DispatchError, Task, error_line, git
from .worker import run_task

TASKS, RESULTS = "tasks.json", "results.json"


class ArchiveExecutor:
    """Writes the tasks it is given into `folder`/tasks-<id>.tar.gz and takes results from `folder`/inbox/.
    Its DVC remote is `folder`/remote: home pushes the prepared data there, the results' objects land there."""
    kind = "archive"

    def __init__(self, folder: Path, scale: str):
        self.folder, self.scale = folder, scale
        self.remote = str((folder / "remote").resolve())
        self.read: dict[Path, set[str]] = {}  # the inbox archives this dispatch read, and their stages
        self.results = self._inbox()
        self.ready: list[str] = []
        self.archived: list[Task] = []  # the tasks written out by this dispatch

    def _inbox(self) -> dict[str, dict]:
        """The results of every archive in the inbox (their objects unpacked into the remote), by stage; a
        result that worked wins over an error for the same stage."""
        results = {}
        for path in sorted((self.folder / "inbox").glob("*.tar.gz")):
            try:
                with tarfile.open(path) as tar:
                    meta = json.load(tar.extractfile(RESULTS))
                    members = [m for m in tar.getmembers() if m.name.startswith("remote/") and m.isfile()]
                    tar.extractall(self.folder, members=members, filter="data")
                scale, commit, found = meta["scale"], meta["commit"], meta["results"]
            except (OSError, tarfile.TarError, KeyError, TypeError, ValueError) as err:
                why = error_line(err)
                raise DispatchError(f"dispatch: {path} is not a results archive ({why}); remove it or bring it "
                                    f"again") from None
            if scale != self.scale:
                raise DispatchError(f"dispatch: {path} holds {scale}-scale results; move it to "
                                    f"studies/{scale}/.dispatch/archive/inbox/")
            for stage, result in found.items():
                if "error" not in result or "error" in results.get(stage, {"error": ""}):
                    results[stage] = {**result, "commit": commit}
            self.read[path] = set(found)
        return results

    def submit(self, tasks: list[Task]) -> list[tuple[str, dict]]:
        back = [t for t in tasks if t.stage in self.results and same_inputs(self.results[t.stage]["commit"], t.commit)]
        self.ready += [t.stage for t in back]
        out = [t for t in tasks if t not in back]
        if out:
            self.archived += out
            path = write_archive(self.folder, self.archived, self.remote)
            print(f"dispatch: {len(self.archived)} task(s) written to {path}: run them on the other machine with "
                  f"`python -m lmc.dispatch --run-archive {path.name} results.tar.gz`, put results.tar.gz in "
                  f"{self.folder / 'inbox'}/, then dispatch again", file=sys.stderr)
        return [(t.stage, {"executor": "archive", "dispatcher": os.getpid()}) for t in tasks]

    def ids(self) -> dict[str, dict]:
        return {}

    def poll(self) -> list[tuple[str, Path, dict | None]]:
        if not self.ready and self.archived:
            raise Detached(f"{len(self.archived)} task(s) wait in an archive", [t.stage for t in self.archived])
        done, self.ready = self.ready, []
        finished = []
        for stage in done:
            result, log = self.results[stage], self.folder / "logs" / f"{stage}.log"
            if "error" in result:  # what the runner said, for --status; the next dispatch sends the task again
                write_text_atomic(log, result["error"] + "\n")
            finished.append((stage, log, None if "error" in result else result))
        return finished

    def cancel(self) -> None:
        self.ready.clear()

    def adopt(self, task: Task, record: dict) -> bool:
        return False  # an archive's task comes back through the inbox, never from a dispatcher that is gone

    @classmethod
    def left(cls, scale: str, records: dict[str, dict]) -> dict[str, str]:
        return dict.fromkeys(records, UNKNOWN)  # out on another machine: nothing here can tell

    @classmethod
    def stop(cls, record: dict) -> None:
        pass  # nothing runs here: what is out in an archive is not taken home unless it is sent again

    def retire(self, settled: set[str]) -> None:
        """Move to inbox/taken/ each inbox archive whose every result is `settled` (taken home, or failed and to
        be sent again): a result is used once. An archive with a result this dispatch did not reach stays."""
        for path, stages in self.read.items():
            if stages <= settled:
                (path.parent / "taken").mkdir(exist_ok=True)
                os.replace(path, path.parent / "taken" / path.name)


@functools.lru_cache(maxsize=None)
def same_inputs(commit: str, head: str) -> bool:
    """Whether a result made at `commit` was made from the inputs of `head` (committing the results of a first
    trip before the second comes back moves HEAD, not the inputs)."""
    if commit == head:
        return True
    try:
        return git("diff", "--name-only", commit, head, "--", *INPUTS) == ""
    except subprocess.CalledProcessError:  # a commit this repository does not have
        return False


def objects(remote: Path, tasks: list[Task]) -> list[Path]:
    """The remote's files that the tasks' `pull` entries name (a directory output: its .dir listing and the
    files in it), in DVC 3's layout files/md5/<2>/<30>."""
    def path(md5: str) -> Path:
        return remote / "files" / "md5" / md5[:2] / md5[2:]
    found = []
    for entry in (e for t in tasks for e in t.pull.values()):
        for out in entry.get("outs", []):
            found.append(path(out["md5"]))
            if out["md5"].endswith(".dir") and found[-1].exists():
                found += [path(f["md5"]) for f in json.loads(found[-1].read_text())]
    missing = [p for p in found if not p.exists()]
    if missing:
        raise DispatchError(f"dispatch: {missing[0]} is not in the archive's remote; dispatch again (home pushes "
                            f"the prepared data there first)")
    return sorted(set(found))


def write_archive(folder: Path, tasks: list[Task], remote: str) -> Path:
    """tasks.json, repo.bundle (the home repository up to the tasks' commit) and remote/ (the DVC objects they
    read), as one .tar.gz named by its tasks, written atomically; returns its path."""
    meta = {"scale": tasks[0].scale, "commit": tasks[0].commit, "tasks": [dataclasses.asdict(t) for t in tasks]}
    text = json.dumps(meta, indent=1)
    path = folder / f"tasks-{hashlib.sha256(text.encode()).hexdigest()[:10]}.tar.gz"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "repo.bundle"
        git("bundle", "create", "-q", str(bundle), "HEAD")
        (Path(tmp) / TASKS).write_text(text)
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(Path(tmp) / TASKS, TASKS)
            tar.add(bundle, "repo.bundle")
            for obj in objects(Path(remote), tasks):
                tar.add(obj, str(Path("remote") / obj.relative_to(remote)))
        os.replace(partial, path)
    return path


def run_archive(tasks_archive: str, results_archive: str) -> int:
    """On the bare machine: every task of the archive in its order, the results archive rewritten after each
    (each task's result or its error, and the DVC objects the tasks pushed). Work and a cell's saved progress
    live beside the results archive (<results>.work/), so that a run cut short and started again goes on."""
    results_path = Path(results_archive).absolute()
    work = results_path.with_name(results_path.name + ".work")
    try:
        source = hashlib.sha256(Path(tasks_archive).read_bytes()).hexdigest()
        if not (work / "source.txt").exists() or (work / "source.txt").read_text() != source:
            shutil.rmtree(work, ignore_errors=True)  # another archive's work: start afresh
            with tarfile.open(tasks_archive) as tar:
                tar.extractall(work, filter="data")
            (work / "source.txt").write_text(source)
        meta = json.loads((work / TASKS).read_text())
    except (OSError, tarfile.TarError, ValueError) as err:
        shutil.rmtree(work, ignore_errors=True)
        why = error_line(err)
        raise DispatchError(f"dispatch: {tasks_archive} is not a tasks archive ({why}); bring it again") from None
    remote = work / "remote"
    remote.mkdir(exist_ok=True)
    sent = {p for p in remote.rglob("*") if p.is_file()} if not (work / "sent.json").exists() else {
        work / p for p in json.loads((work / "sent.json").read_text())}
    write_text_atomic(work / "sent.json", json.dumps(sorted(str(p.relative_to(work)) for p in sent)))
    done = json.loads((work / RESULTS).read_text())["results"] if (work / RESULTS).exists() else {}
    for fields in meta["tasks"]:
        if "error" not in done.get(fields["stage"], {"error": ""}):
            continue  # finished by an earlier run of this archive
        task = Task(**{**fields, "git_url": str(work / "repo.bundle"), "remote": str(remote),
                       "scratch": str(work / "scratch")})
        print(f"run-archive: {task.stage}", file=sys.stderr)
        try:
            done[task.stage] = run_task(task)
        except Exception as err:  # noqa: BLE001 (one task's failure is its result; the others run on)
            traceback.print_exc()
            done[task.stage] = {"stage": task.stage, "error": f"{type(err).__name__}: {err}"}
        write_text_atomic(work / RESULTS, json.dumps({"scale": meta["scale"], "commit": meta["commit"],
                                                      "results": done}))
        partial = results_path.with_name(results_path.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(work / RESULTS, RESULTS)
            for p in sorted(p for p in remote.rglob("*") if p.is_file() and p not in sent):
                tar.add(p, str(Path("remote") / p.relative_to(remote)))
        os.replace(partial, results_path)
    failed = [s for s, r in done.items() if "error" in r]
    print(f"run-archive: {len(done) - len(failed)} of {len(done)} task(s) done -> {results_archive}"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0
