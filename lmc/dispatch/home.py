"""Home: the dispatch loop (send what is ready, take results home in the plan's order, run the home stages),
taking one result home with its checks, and the records behind `--status`."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import yaml

from .. import cost, studies, studies_dvc
from ..io import write_bytes_atomic, write_text_atomic
from ..resume import cell_file, read_progress
from .common import (IN_FLIGHT, RUNS, UNKNOWN, UNSENT, Detached, DispatchError, Executor, Task, add_lock_entries,
                     dvc, fault, md5, resume_dir, state_dir)
from .executors import executor_class
from .plan import (blocked, check_committed, data_stages, pending, planned, sent_out, stage_defs, study_stages,
                   unprepared_note, upstream)


# -- home: taking a result in ------------------------------------------------------------------------------

def journal_path(scale: str) -> Path:
    return state_dir(scale) / "journal.json"


@contextlib.contextmanager
def journaled(scale: str, stage: str, outputs: list[Path] = ()):
    """Around every write of the scale's dvc.lock at home (DVC writes it in place, so a kill mid-write leaves it
    cut) and of `outputs`: first the lock and the outputs as they were go to a journal, atomically. If the
    block fails or is interrupted, they are put back; if the process dies (SIGKILL, power), `recover` puts them
    back at the next start. Either way nothing partial stays home and the stage is sent again."""
    lock_file = studies.lock_file(scale)
    saved = {"stage": stage, "lock": lock_file.read_text() if lock_file.exists() else None,
             "outputs": {str(p): base64.b64encode(p.read_bytes()).decode() if p.exists() else None
                         for p in outputs}}
    journal = journal_path(scale)
    write_text_atomic(journal, json.dumps(saved))
    try:
        yield
    except BaseException:
        _restore(scale, saved)  # if this fails too (a full disk), the journal stays for `recover`
        journal.unlink(missing_ok=True)
        raise
    journal.unlink(missing_ok=True)


def _restore(scale: str, saved: dict) -> None:
    lock_file = studies.lock_file(scale)
    if saved["lock"] is None:
        lock_file.unlink(missing_ok=True)
    else:
        write_text_atomic(lock_file, saved["lock"])
    for path, b64 in saved["outputs"].items():
        if b64 is None:
            Path(path).unlink(missing_ok=True)
        else:
            write_bytes_atomic(path, base64.b64decode(b64))


def recover(scale: str) -> str | None:
    """After a dispatcher that died while writing at home: the lock and outputs as they were before that write
    (from the journal); what to tell the user, or None when there was nothing to undo."""
    journal = journal_path(scale)
    try:
        saved = json.loads(journal.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # the journal is written atomically: a damaged one was never a journal of ours
        raise DispatchError(f"dispatch: {journal} is damaged; check studies/{scale}/dvc.lock parses "
                            f"(`git diff` it), then remove the journal") from None
    _restore(scale, saved)
    journal.unlink()
    return (f"dispatch: the last dispatch stopped while recording {saved['stage']}; "
            f"{studies.lock_file(scale)} and its outputs "
            f"are put back as they were before it, and it will be sent again")


def take_home(scale: str, result: dict) -> None:
    """Write a task's uncached outputs (md5-checked against the worker's lock), pull its cached ones, and
    record the stage with `dvc commit`; the lock entry home computes must equal the worker's. On any failure
    or interruption the lock and the outputs are put back as they were (`journaled`): nothing partial stays."""
    stage, lock_entry = result["stage"], result["lock"]
    want = {o["path"]: o["md5"] for o in lock_entry.get("outs", [])}
    home = studies.scale_dir(scale)
    lock_file = studies.lock_file(scale)
    record = studies.numerics_record(scale, stage)
    targets = [home / path for path in result["files"]]  # lock paths are relative to the scale's folder
    with journaled(scale, stage, targets + ([record] if result.get("numerics") else [])):
        fault("journal", stage)  # the journal written, nothing else yet
        for target, (path, b64) in zip(targets, result["files"].items()):
            payload = base64.b64decode(b64)
            if md5(payload) != want.get(path):
                raise DispatchError(f"dispatch: {stage}'s {path} came back damaged (md5 differs from its lock); "
                                    f"dispatch again")
            write_bytes_atomic(target, payload)
            fault("output", stage)
        if len(result["files"]) < len(want):  # cached outputs: pulled by the md5s of the worker's lock entry
            add_lock_entries(lock_file, {stage: lock_entry})
            dvc("pull", "-r", "dispatch", stage, cwd=home)
            fault("pull", stage)
        fault("commit-cut", stage, lock_file)
        dvc("commit", "-f", "-q", stage, cwd=home)
        fault("commit", stage)
        recorded = yaml.safe_load(lock_file.read_text())["stages"][stage]
        if recorded != lock_entry:
            raise DispatchError(f"dispatch: {stage} was recorded at home with other hashes than the worker's "
                                f"(its code, params or data changed since it was sent); dispatch again")
        if result.get("numerics"):
            write_text_atomic(record, result["numerics"])
            fault("numerics", stage)


# -- records: what was sent, what failed ---------------------------------------------------------------------

def load_records(scale: str) -> dict:
    path = state_dir(scale) / "records.json"
    try:
        records = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        records = None
    if not isinstance(records, dict):  # written atomically: damaged from outside
        raise DispatchError(f"dispatch: {path} is damaged; move it aside and run again (tasks it recorded as "
                            f"running are then sent again, and their results taken home as usual)")
    return records


def save_records(scale: str, records: dict) -> None:
    write_text_atomic(state_dir(scale) / "records.json", json.dumps(records, indent=1, sort_keys=True))


def last_error(log: Path) -> str:
    try:
        lines = [l.strip() for l in Path(log).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "no log"
    return next((l for l in reversed(lines) if "Error" in l or l.startswith("error")), lines[-1] if lines else "")


def standings(scale: str, records: dict) -> dict[str, str]:
    """What became of each task recorded as running: "running" while its dispatcher (the only one that takes it
    home) is alive; once that dispatcher is gone, "unowned" when the task runs on or finished with its result
    waiting (the next dispatch adopts it), "pending" when it never started, else "failed". Each executor is
    asked once, through its contract (Executor.left), about the tasks its kind recorded."""
    running = {s: r for s, r in records.items() if r["state"] == "running"}
    left = {}
    for kind in {r.get("executor") for r in running.values()}:
        mine = {s: r for s, r in running.items() if r.get("executor") == kind}
        executor = executor_class(kind)
        left.update(executor.left(scale, mine) if executor else dict.fromkeys(mine, UNKNOWN))
    return {s: "running" if dispatcher_alive(r) else {RUNS: "unowned", UNSENT: "pending"}.get(left[s], "failed")
            for s, r in running.items()}


def dispatcher_alive(record: dict) -> bool:
    try:
        os.kill(record["dispatcher"], 0)
    except (OSError, KeyError, TypeError):
        return False
    return True


# -- the dispatcher ----------------------------------------------------------------------------------------

def status(scale: str, names: list[str]) -> str:
    """Per study: stages done, running, in an archive (if any), failed (with log and last error line) and
    pending."""
    raw = studies.load(scale)
    per_study = study_stages(raw, names)
    records = load_records(scale)
    todo = pending(scale, [s for stages in per_study.values() for s in stages], stage_defs(scale))
    now_of = standings(scale, records)
    lines = []
    for study, stages in per_study.items():
        groups = {"done": [], "running": [], "in archive": [], "failed": [], "pending": []}
        details = []
        for s in stages:
            rec = records.get(s)
            now = now_of.get(s)
            if s not in todo:
                groups["done"].append(s)
            elif now in ("running", "unowned"):
                groups["running"].append(s)
                where = [read_progress(rec["progress"]) if rec.get("progress") else None,
                         "its dispatcher is gone: the next dispatch adopts it" if now == "unowned" else None]
                if any(where):
                    details.append(f"  running {s}: {', '.join(w for w in where if w)}")
            elif rec and rec["state"] == "archived":  # written out by the archive executor, not back yet
                groups["in archive"].append(s)
            elif rec and now != "pending":  # failed, or ended unowned without a result
                groups["failed"].append(s)
            else:
                groups["pending"].append(s)
        lines.append(f"{study}: " + ", ".join(f"{len(v)} {k}" for k, v in groups.items()
                                              if v or k != "in archive"))
        lines += details
        for s in groups["failed"]:
            log = records[s].get("log")
            lines.append(f"  failed {s}: {log or 'no log'}: "
                         f"{records[s].get('error') or (last_error(Path(log)) if log else 'never started')}")
    return "\n".join(lines + unprepared_note(raw, names))


def dry_run(scale: str, names: list[str]) -> str:
    """The stages a dispatch would send, per study, with the estimated device-hours of its cells."""
    raw = studies.load(scale)
    per_study = study_stages(raw, names)
    todo = pending(scale, [s for stages in per_study.values() for s in stages], stage_defs(scale))
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


def adopt(executor: Executor, task: Task, record: dict) -> bool:
    """Take over the task a dispatch that is gone left running (or finished, its result not taken home), if
    it ran on this executor and ran this very task; else stop it through the executor that ran it (it is sent
    again, and its cell takes up its saved progress, lmc/resume.py)."""
    if record.get("executor") == executor.kind and executor.adopt(task, record):
        return True
    ran_it = executor_class(record.get("executor"))
    if ran_it is not None:
        ran_it.stop(record)
    return False


def dispatch(scale: str, names: list[str], executor: Executor, remote: str | None, git_url: str | None,
             scratch: str | None, progress=None) -> list[str]:
    """Bring the reports of `names` up to date: the stages a sequential `dvc repro` would run, taken home in
    its order (so the lock is the same bytes), the trunks and cells run by `executor`'s workers, the rest
    here. Returns the stages that failed."""
    commit = check_committed()
    defs = stage_defs(scale)
    home = studies.scale_dir(scale)
    # First: what is stale can only be told with the data here.
    with journaled(scale, "the data stages"):
        dvc("repro", *data_stages(studies.load(scale), names), cwd=home)
    plan = planned(scale, [f"report-{n}" for n in names])
    home_cache = (studies.ROOT / ".dvc" / "cache").resolve()
    remote = remote or executor.remote or str(home_cache)
    shared = Path(remote).resolve() == home_cache
    dvc("remote", "add", "--local", "-f", "dispatch", remote)
    git_url = git_url or str(studies.ROOT.parent.resolve())
    scratch = scratch or str((state_dir(scale) / "scratch").resolve())
    todo = [s for s in plan if sent_out(s)]
    if progress is not None:
        progress.reset(total=len(todo))
    records = load_records(scale)
    # This dispatcher holds the scale (common.claim): a task recorded as running was left by one that is gone.
    orphans = {s: r for s, r in records.items() if r["state"] == "running"}
    done, failed, results, sent = set(), [], {}, set()
    at = 0
    try:
        while at < len(plan):
            ready = [s for s in todo if s not in sent and not blocked(s, defs, plan, failed)
                     and all(u in done for u in upstream(s, defs) if u in plan)]
            if ready:
                lock = yaml.safe_load(studies.lock_file(scale).read_text())["stages"]
                tasks = [Task(s, scale, commit, git_url, remote, {u: lock[u] for u in upstream(s, defs, cached=True)},
                              scratch) for s in ready]
                adopted = [t for t in tasks if t.stage in orphans and adopt(executor, t, orphans.pop(t.stage))]
                if adopted:
                    print(f"dispatch: adopting {len(adopted)} task(s) a dispatch that is gone left running or "
                          f"finished ({', '.join(t.stage for t in adopted[:3])}{', ...' if len(adopted) > 3 else ''})",
                          file=sys.stderr)
                    for t in adopted:
                        records[t.stage]["dispatcher"] = os.getpid()
                fresh = [t for t in tasks if t not in adopted]
                if fresh:
                    print(f"dispatch: sending {len(fresh)} task(s) ({', '.join(t.stage for t in fresh[:3])}"
                          f"{', ...' if len(fresh) > 3 else ''})", file=sys.stderr)
                for s, job in executor.submit(fresh) if fresh else []:
                    records[s] = {"state": "running", **job,
                                  "progress": str(cell_file(resume_dir(scratch), scale, s))}
                sent.update(ready)
                save_records(scale, records)
            for stage, ids in executor.ids().items():  # worker pids, SLURM job ids and logs, once known
                if any(records[stage].get(k) != v for k, v in ids.items()):
                    records[stage].update(ids)
                    save_records(scale, records)
            for stage, log, result in executor.poll():
                results[stage] = result
                if result is None:
                    records[stage] = {**records.get(stage, {}), "state": "failed", "log": str(log)}
                    failed.append(stage)
                    save_records(scale, records)
                else:
                    IN_FLIGHT.add(stage)  # until it is home, lock sorted
            while at < len(plan):  # take home, in the plan's order, whatever is ready
                stage = plan[at]
                if blocked(stage, defs, plan, failed) or stage in failed:
                    pass
                elif not sent_out(stage):
                    try:  # a home stage that fails (a report, a dataset) stops only what reads it
                        with journaled(scale, stage):
                            dvc("repro", "--single-item", stage, cwd=home)
                        if stage.startswith("prepare-") and not shared:
                            dvc("push", "-r", "dispatch", stage, cwd=home)
                        done.add(stage)
                    except DispatchError as err:
                        print(err, file=sys.stderr)
                        failed.append(stage)
                elif stage in results:
                    try:
                        take_home(scale, results[stage])
                        fault("records", stage)
                        records.pop(stage, None)
                        done.add(stage)
                    except DispatchError as err:
                        records[stage] = {**records.get(stage, {}), "state": "failed", "error": str(err)}
                        failed.append(stage)
                    save_records(scale, records)
                    if progress is not None:
                        progress.update(1)
                else:
                    break
                studies_dvc.sort_lock(scale)  # the lock in dvc.yaml's order, whatever DVC appended
                fault("sort", stage if sent_out(stage) else None)  # after a worker's result, not home's stages
                IN_FLIGHT.discard(stage)
                at += 1
            if at < len(plan):
                time.sleep(0.5)
    except BaseException as stop:  # Ctrl-C, a stage at home that failed, or tasks out in an archive
        executor.cancel()  # no task is left running behind us
        kept = {s: r for s, r in records.items() if r["state"] != "running" or s in orphans}
        if isinstance(stop, Detached):
            kept.update({s: {**records[s], "state": "archived"} for s in stop.stages})
            executor.retire(done | set(failed))
        save_records(scale, kept)
        raise
    executor.retire(done | set(failed))  # the archive executor's inbox: a result is used once
    return failed
