"""The dispatcher end to end: a tiny study sent to local workers, to a real single-node SLURM and through a
DVC remote, each checked byte for byte against a plain sequential `dvc repro` of the same study."""
import copy
import inspect
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import types
from pathlib import Path

import pytest
import yaml

from lmc.dispatch import archive, common, executors, home, local, plan, slurm
from lmc.resume import read_progress

from .bare import bare_python  # noqa: F401  (a fixture)
from .fixtures import (STUDIES, as_from_a_terminal, commit, copy_repo, dispatch_cmd, report_runs_no_cell, results,
                       sh, study_repo)
from .slurm import slurm_cluster  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e



def of_tiny(files: dict[str, bytes]) -> dict:
    """Study tiny's part of `results`: its outputs and its stages' lock entries."""
    lock = yaml.safe_load(files["studies/cpu/dvc.lock"])["stages"]
    return {"lock": {k: v for k, v in lock.items() if k.startswith("tiny-") or k in ("report-tiny", "prepare-mnist")},
            **{k: v for k, v in files.items() if "/tiny/" in k or k.startswith("reports/cpu/tiny.")}}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    repo = study_repo(tmp_path_factory.mktemp("sequential"))
    sh(repo / "studies/cpu", "dvc", "repro", "report-tiny", "report-tinyspawn")
    return results(repo)


def dispatch_bg(repo, *args, env=None):
    """A dispatch running in the background, as a user's terminal starts it."""
    return subprocess.Popen([sys.executable, "-m", "lmc.dispatch", *args], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                                 **(env or {})})


def started_workers(repo, count, timeout=120.0) -> dict:
    """stage -> record, once `count` workers are recorded as started."""
    records = repo / "studies/cpu/.dispatch/records.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = json.loads(records.read_text()) if records.exists() else {}
        started = {s: r for s, r in running.items() if r.get("started")}
        if len(started) >= count:
            return started
        time.sleep(0.1)
    raise AssertionError(f"{count} worker(s) did not start")


def test_local_workers_give_the_bytes_of_a_sequential_run(tmp_path, sequential):
    repo = study_repo(tmp_path)
    dry = dispatch_cmd(repo, "tiny", "tinyspawn", "--dry-run").stdout
    assert "tiny: 4 to send" in dry and "tinyspawn: 3 to send" in dry and "CPU-hours" in dry
    out = dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2")
    # the trunk with the cells that need no trunk, then the spawn cells once their trunk is home
    assert "sending 5 task(s)" in out.stderr and "sending 2 task(s)" in out.stderr
    report_runs_no_cell(repo)
    assert results(repo) == sequential
    status = dispatch_cmd(repo, "tiny", "tinyspawn", "--status").stdout
    assert "tiny: 4 done, 0 running, 0 failed, 0 pending" in status
    assert "tinyspawn: 3 done" in status
    again = dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2").stderr
    assert "sending" not in again  # nothing left to send


def test_a_killed_worker_leaves_its_cell_failed_and_the_next_dispatch_sends_only_it(tmp_path, sequential):
    repo = study_repo(tmp_path)
    proc = dispatch_bg(repo, "tiny", "--jobs", "2")
    records = repo / "studies/cpu/.dispatch/records.json"
    victim = next(iter(started_workers(repo, 1).values()))  # one with a worker (the others may be queued)
    time.sleep(2)  # mid-cell: cloning, pulling or training
    os.killpg(victim["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "1 task(s) failed" in err
    failed = [s for s, r in json.loads(records.read_text()).items() if r["state"] == "failed"]
    assert len(failed) == 1
    assert not (repo / "studies/cpu/out/tiny" / f"{failed[0][len('tiny-'):]}.json").exists()  # nothing partial
    assert failed[0] not in yaml.safe_load((repo / "studies/cpu/dvc.lock").read_text())["stages"]
    status = dispatch_cmd(repo, "tiny", "--status").stdout
    assert "tiny: 3 done, 0 running, 1 failed, 0 pending" in status and f"failed {failed[0]}: " in status
    out = dispatch_cmd(repo, "tiny", "--jobs", "2").stderr
    assert "sending 1 task(s)" in out
    report_runs_no_cell(repo, ["tiny"])
    assert of_tiny(results(repo)) == of_tiny(sequential)


def test_a_dispatch_at_another_scale_sends_only_its_cells_and_leaves_the_cpu_scale_as_it_is(tmp_path, sequential):
    """With tiny's cpu results home, a paper-scale dispatch sends the paper cells only, records them in the
    paper scale's lock, and builds the paper report beside the cpu results it reads; not a byte of the cpu
    scale changes (its cells, though they read the same data, are neither sent nor rerun)."""
    repo = study_repo(tmp_path)
    for name, payload in sequential.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(payload)
    commit(repo, "tiny at cpu scale")
    dry = dispatch_cmd(repo, "tiny", "--scale", "paper", "--dry-run").stdout
    assert "tiny: 4 to send" in dry, dry
    out = dispatch_cmd(repo, "tiny", "--scale", "paper", "--jobs", "2")
    assert "sending 4 task(s)" in out.stderr and "sending" not in out.stderr.split("sending 4 task(s)", 1)[1]
    assert "at paper scale (studies/paper)" in out.stdout
    assert results(repo) == sequential  # the cpu lock, cells and reports: the same bytes
    assert not (repo / "studies/cpu/.dispatch").exists() and (repo / "studies/paper/.dispatch").is_dir()
    lock = yaml.safe_load((repo / "studies/paper/dvc.lock").read_text())["stages"]
    assert {"tiny-hi-sgd", "tiny-hi-adam", "tiny-med-sgd", "tiny-med-adam", "report-tiny"} <= set(lock)
    assert "../cpu/out/tiny/hi-sgd.json" in {d["path"] for d in lock["report-tiny"]["deps"]}
    for cell in ("hi-sgd", "med-adam"):
        result = json.loads((repo / f"studies/paper/out/tiny/{cell}.json").read_text())
        assert result["scale"] == "paper" and (result["spec"]["epochs"], result["spec"]["width"]) == (2, 8)
    assert "cpu scale test / train" in (repo / "reports/paper/tiny.md").read_text()
    status = dispatch_cmd(repo, "tiny", "--scale", "paper", "--status").stdout
    assert "tiny: 4 done, 0 running, 0 failed, 0 pending" in status, status
    changed = json.loads(sh(repo / "studies/paper", "dvc", "status", "--json").stdout or "{}")
    assert not {"prepare-mnist", "report-tiny", *(f"tiny-{c}" for c in ("hi-sgd", "hi-adam", "med-sgd", "med-adam"))
                } & set(changed), changed  # tiny at paper scale is up to date


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_kill_cancels_the_workers_and_keeps_nothing_partial(tmp_path, sig):
    """`kill`, Ctrl-C (SIGINT), or the terminal or ssh session closing (SIGHUP) cancels."""
    repo = study_repo(tmp_path)
    proc = dispatch_bg(repo, "tiny", "--jobs", "2")
    records = repo / "studies/cpu/.dispatch/records.json"
    pids = []
    deadline = time.time() + 120
    while len(pids) < 2 and time.time() < deadline:
        time.sleep(0.2)
        running = json.loads(records.read_text()) if records.exists() else {}
        pids = [r["pid"] for r in running.values() if r.get("pid")]
    assert len(pids) == 2, "the workers did not start"
    scratch = repo / "studies/cpu/.dispatch/scratch"
    while not (scratch.exists() and any(scratch.iterdir())) and time.time() < deadline:
        time.sleep(0.2)  # until a worker has its clone
    assert any(scratch.iterdir()), "no worker made its clone"
    proc.send_signal(sig)  # (the dispatch was started as from a terminal: SIGINT and SIGHUP not ignored)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; running tasks cancelled" in err
    for pid in pids:  # each worker's whole process group (its dvc, the stage) is gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not list((repo / "studies/cpu/out").rglob("*.json"))  # nothing partial
    assert not any(s.startswith("tiny-") for s in yaml.safe_load((repo / "studies/cpu/dvc.lock").read_text())["stages"])
    assert json.loads(records.read_text()) == {}
    assert not list(scratch.iterdir())  # the cancelled workers removed their clones
    assert "tiny: 0 done, 0 running, 0 failed, 4 pending" in dispatch_cmd(repo, "tiny", "--status").stdout


def test_through_a_dvc_remote_without_the_home_workspace(tmp_path, sequential):
    """Workers clone from a separate git remote and trade every cached file through a DVC remote."""
    repo = study_repo(tmp_path / "home")
    bare = tmp_path / "origin.git"
    sh(tmp_path, "git", "clone", "-q", "--bare", str(repo), str(bare))
    remote = tmp_path / "dvc-remote"
    dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2", "--remote", str(remote), "--git-url", str(bare),
                 "--scratch", str(tmp_path / "node-scratch"))
    assert any((remote / "files/md5").rglob("*")), "nothing went through the remote"
    report_runs_no_cell(repo)
    assert results(repo) == sequential


def written(stderr: str) -> Path:
    """The tasks archive a dispatch with the archive executor names (relative to the repository root)."""
    return Path(next(l for l in stderr.splitlines() if "written to" in l).split("written to ")[1].split(":")[0])


def fail_one(results: Path, stage: str) -> None:
    """Rewrite a results archive as if `stage` had failed on the other machine."""
    with tarfile.open(results) as tar:
        members = {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}
    meta = json.loads(members["results.json"][1])
    meta["results"][stage] = {"stage": stage, "error": "RuntimeError: the node went away"}
    members["results.json"] = (members["results.json"][0], json.dumps(meta).encode())
    with tarfile.open(results, "w:gz") as tar:
        for info, payload in members.values():
            info.size = len(payload) if payload is not None else info.size
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def test_an_archive_run_on_a_bare_machine_gives_the_bytes_of_a_sequential_run(tmp_path, sequential,
                                                                              bare_python):  # noqa: F811
    """The archive executor: the tasks go out as one file, run on a machine that shares nothing with home (here
    a fresh environment that sees only the lent GPU machine's image packages, with the bundle installed by
    `pip --no-index`, in a copy of the project's files without git or DVC cache), and come back as one file.
    Three trips: the trunk and the cells that need none (one of which fails there); the spawn cells, once their
    trunk is home; the failed cell, sent again. Then the lock and outputs are a sequential run's."""
    repo = study_repo(tmp_path / "home")
    folder = repo / "studies/cpu/.dispatch/archive"
    first = dispatch_cmd(repo, "tiny", "tinyspawn", "--executor", "archive")
    assert "5 task(s) written" in first.stderr and "5 task(s) wait" in first.stderr, first.stderr
    assert "tiny: 0 done, 0 running, 4 in archive, 0 failed, 0 pending" in first.stderr
    assert not (repo / "studies/cpu/out").exists()
    refused = dispatch_cmd(repo, "tiny", "--executor", "archive", "--remote", str(tmp_path), check=False)
    assert refused.returncode == 2 and "--remote has no use with --executor archive" in refused.stderr
    bare = tmp_path / "bare"
    for name in sh(repo, "git", "ls-files").stdout.splitlines():
        (bare / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, bare / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bare_python.parent}:/usr/bin:/bin"  # its own python and dvc, the system's git
    (folder / "inbox").mkdir()
    (folder / "inbox/damaged.tar.gz").write_bytes(b"not an archive")
    refused = dispatch_cmd(repo, "tiny", "--executor", "archive", check=False)
    assert refused.returncode == 2 and "damaged.tar.gz is not a results archive" in refused.stderr.splitlines()[-1]
    (folder / "inbox/damaged.tar.gz").unlink()
    tasks, back = repo / written(first.stderr), None
    for trip, count in ((1, 5), (2, 2), (3, 1)):
        shutil.copy(tasks, bare / tasks.name)
        run = subprocess.run([str(bare_python), "-m", "lmc.dispatch", "--run-archive", tasks.name,
                              "results.tar.gz"], cwd=bare, env=env, capture_output=True, text=True)
        assert run.returncode == 0 and f"{count} of {count} task(s) done" in run.stderr, run.stderr[-3000:]
        assert not (bare / "results.tar.gz.work").exists()  # its work folder goes once every task is done
        if trip == 1:
            fail_one(bare / "results.tar.gz", "tiny-hi-sgd")
        shutil.move(bare / "results.tar.gz", folder / f"inbox/trip{trip}.tar.gz")
        back = dispatch_cmd(repo, "tiny", "tinyspawn", "--executor", "archive")
        if trip == 1:  # the others are home; the failed cell waits for the next dispatch, as with any executor
            assert (folder / "inbox/taken/trip1.tar.gz").exists()  # a results archive is used once
            assert "tiny: 3 done, 0 running, 1 failed, 0 pending" in back.stderr, back.stderr
            assert "the node went away" in back.stderr and "2 task(s) written" in back.stderr
        if trip == 2:  # the failed cell goes out again; the spawn cells wait for it (home takes the plan's order)
            assert "1 task(s) written" in back.stderr and (folder / "inbox/trip2.tar.gz").exists(), back.stderr
        if trip < 3:
            tasks = repo / written(back.stderr)
    assert {p.name for p in (folder / "inbox/taken").iterdir()} == {"trip1.tar.gz", "trip2.tar.gz", "trip3.tar.gz"}
    assert "up to date" in back.stdout, back.stderr
    report_runs_no_cell(repo)
    assert results(repo) == sequential


def test_slurm_array_job_gives_the_bytes_of_a_sequential_run(tmp_path, sequential, slurm_cluster):  # noqa: F811
    repo = study_repo(tmp_path)
    out = dispatch_cmd(repo, "tiny", "tinyspawn", "--executor", "slurm", "--jobs", "4", "--partition",
                       slurm_cluster.partition, "--cpus-per-task", "1", "--time", "0:10:00")
    assert "sending 5 task(s)" in out.stderr and "sending 2 task(s)" in out.stderr
    logs = list((repo / "studies/cpu/.dispatch/slurm").rglob("*_log.out"))
    assert len(logs) == 7  # one log per task: the trunk and the six cells
    report_runs_no_cell(repo)
    assert results(repo) == sequential


def test_uncommitted_inputs_and_unknown_studies_are_refused_in_one_line(tmp_path):
    repo = study_repo(tmp_path)
    proc = dispatch_cmd(repo, "table9", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: studies: no study 'table9'")
    (repo / "lmc/spec.py").write_text((repo / "lmc/spec.py").read_text() + "\n# edited\n")
    proc = dispatch_cmd(repo, "tiny", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: dispatch: lmc/spec.py (and 0 more) differ from the last commit; workers run the commit, so "
        "commit your changes first, then dispatch"]
    assert not (repo / "studies/cpu/out").exists()


# Every form `sbatch --time` accepts (its man page), read as sbatch reads it: minutes, rounded up.
SBATCH_TIMES = {"90": 90, "10:30": 11, "10:00": 10, "4:00:00": 240, "0:10:01": 11, "1-12": 2160, "1-00:30": 1470,
                "2-03:04:05": 2 * 1440 + 185, "0-0:0:1": 1}


@pytest.mark.parametrize("limit,minutes", SBATCH_TIMES.items())
def test_slurm_time_limits_are_read_as_sbatch_reads_them(limit, minutes):
    assert common.minutes(limit) == minutes


@pytest.mark.parametrize("limit", ["four hours", "1:2:3:4", "1-2:3:4:5", "-5", "0", "UNLIMITED", "1-"])
def test_a_time_limit_sbatch_would_refuse_or_that_is_unbounded_is_one_line(limit):
    with pytest.raises(common.DispatchError, match="not a finite SLURM time limit"):
        common.minutes(limit)


@pytest.mark.parametrize("options,words", [
    ((-1, 2, "4:00:00", 20, 90), "--gpus-per-task=-1; give at least 0"),
    ((0, 0, "4:00:00", 20, 90), "--cpus-per-task=0; give at least 1"),
    ((0, 2, "4:00:00", -3, 90), "--requeues=-3; give at least 0"),
    ((0, 2, "4:00:00", 20, -90), "--signal-delay=-90; give at least 0"),
    ((0, 2, "1", 20, 90), "--signal-delay=90 s is not shorter than --time=1"),
    ((0, 2, "1:00", 20, 90), "--signal-delay=90 s is not shorter than --time=1:00"),  # 1 minute 0 seconds
])
def test_slurm_options_sbatch_would_refuse_or_that_requeue_at_once_are_one_line(options, words):
    with pytest.raises(common.DispatchError, match=re.escape(words)):
        common.check_options(*options)
    common.check_options(0, 2, "1:31", 0, 90)  # 2 minutes as sbatch rounds it: the delay is under the limit


def test_every_executor_meets_the_contract_home_drives_it_by(tmp_path):
    """common.Executor is the whole of what home may call: each registered executor has each of its methods with
    the same parameters, its `kind` is the name it is registered under, and it has a `remote`."""
    methods = {name: inspect.signature(getattr(common.Executor, name)) for name, value in vars(common.Executor).items()
               if not name.startswith("_") and callable(getattr(common.Executor, name))}
    assert {"submit", "ids", "poll", "cancel", "adopt", "retire", "left", "stop"} <= set(methods)
    built = {"local": local.LocalExecutor(1, tmp_path), "archive": archive.ArchiveExecutor(tmp_path / "a", "cpu")}
    for kind in executors.EXECUTORS:
        cls = executors.executor_class(kind)
        assert cls.kind == kind
        for name, signature in methods.items():
            assert inspect.signature(getattr(cls, name)).parameters.keys() == signature.parameters.keys(), (kind, name)
        assert hasattr(built.get(kind, cls), "remote"), kind


class Elsewhere:
    """An executor home has never heard of, registered as a new module's would be: home learns what became of
    its tasks, and stops them, only through the contract."""
    kind = "elsewhere"
    stopped: list[str] = []

    @classmethod
    def left(cls, scale, records):
        return {stage: record["where"] for stage, record in records.items()}

    @classmethod
    def stop(cls, record):
        cls.stopped.append(record["where"])

    def adopt(self, task, record):
        return record["where"] == common.RUNS


def test_home_tells_what_became_of_a_task_and_stops_it_through_the_executors_contract(monkeypatch):
    monkeypatch.setitem(executors.EXECUTORS, "elsewhere", f"{__name__}:Elsewhere")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a dispatcher's pid that no longer lives
    def record(where, dispatcher=gone.pid, executor="elsewhere"):
        return {"state": "running", "executor": executor, "dispatcher": dispatcher, "where": where}
    records = {"runs": record(common.RUNS), "unsent": record(common.UNSENT), "ended": record(common.ENDED),
               "unknown": record(common.UNKNOWN), "owned": record(common.ENDED, dispatcher=os.getpid()),
               "unheard-of": record(common.RUNS, executor="carrier-pigeon"),
               "done": {**record(common.RUNS), "state": "failed"}}
    assert home.standings("cpu", records) == {
        "runs": "unowned", "unsent": "pending", "ended": "failed", "unknown": "failed",
        "owned": "running",  # its dispatcher lives: it takes the task home, or records its failure
        "unheard-of": "failed"}
    task = common.Task("tiny-hi-sgd", "cpu", "0" * 40, "git", "remote", {}, "scratch")
    Elsewhere.stopped.clear()
    assert home.adopt(Elsewhere(), task, records["runs"])  # its own kind, and still running: adopted
    assert not home.adopt(Elsewhere(), task, records["ended"]) and Elsewhere.stopped == [common.ENDED]
    local_executor = types.SimpleNamespace(kind="local", adopt=lambda task, record: True)
    assert not home.adopt(local_executor, task, records["runs"])  # another kind's task is stopped by that kind
    assert Elsewhere.stopped == [common.ENDED, common.RUNS]


def test_damaged_records_and_a_worker_call_without_its_files_are_one_line(tmp_path, monkeypatch):
    from lmc.dispatch import home
    monkeypatch.chdir(tmp_path)
    records = common.state_dir("cpu") / "records.json"
    records.parent.mkdir(parents=True)
    records.write_text('{"tiny-hi": {"state": ')
    with pytest.raises(common.DispatchError, match=r"records.json is damaged; move it aside and run again"):
        home.load_records("cpu")
    proc = subprocess.run([sys.executable, "-m", "lmc.dispatch", "--worker"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "error: dispatch: usage: python -m lmc.dispatch --worker TASK.json RESULT.json"


def test_cells_below_a_trunk_that_reruns_count_as_pending(monkeypatch):
    """--status and --dry-run count what a dispatch runs: a trunk that is stale takes its cells with it, though
    `dvc status` names only the trunk (their own inputs have not changed yet)."""
    defs = {"trunk-s": {"outs": ["trunk/s"]}, "s-k0": {"deps": ["data/x.beton"], "outs": [{"out/s/k0.json": {"cache": False}}]},
            "s-k3": {"deps": ["trunk/s", "data/x.beton"], "outs": [{"out/s/k3.json": {"cache": False}}]},
            "s-k9": {"deps": ["out/s/k3.json"], "outs": ["out/s/k9.json"]}}
    monkeypatch.setattr(plan, "stale", lambda scale, stages: [s for s in stages if s == "trunk-s"])
    assert plan.pending("cpu", list(defs), defs) == {"trunk-s", "s-k3", "s-k9"}


def test_new_cells_are_planned_and_recorded_in_dvc_yaml_order_whatever_the_hash_seed(tmp_path):
    """The real studies with table2's cells forgotten (no lock entries, no outputs: a first run). DVC's planner
    orders them by a set's hash order; the dispatcher plans in studies/cpu/dvc.yaml's order under any seed,
    and the lock it leaves is in that order too."""
    repo = copy_repo(tmp_path, {"download": False})
    sh(repo, "git", "rm", "-rq", "studies/cpu/out/table2")
    lock = yaml.safe_load((repo / "studies/cpu/dvc.lock").read_text())
    lock["stages"] = {k: v for k, v in lock["stages"].items() if not k.startswith("table2-")}
    (repo / "studies/cpu/dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    commit(repo, "forget table2")
    in_yaml = [s for s in yaml.safe_load((repo / "studies/cpu/dvc.yaml").read_text())["stages"]
               if s.startswith("table2-")]
    probe = "from lmc.dispatch import plan; print(' '.join(plan.planned('cpu', ['report-table2'])))"
    for seed in ("1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed,
                                  "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}).stdout
        assert [s for s in out.split() if s.startswith("table2-")] == in_yaml, seed


def test_the_lock_is_put_in_dvc_yaml_order_in_dvcs_own_format(tmp_path, monkeypatch):
    from lmc import studies_dvc
    repo = copy_repo(tmp_path)
    monkeypatch.chdir(repo)
    lock_file = repo / "studies/cpu/dvc.lock"
    canonical = lock_file.read_bytes()
    studies_dvc.sort_lock("cpu")
    assert lock_file.read_bytes() == canonical  # the committed lock is already in that order
    lock = yaml.safe_load(canonical)
    names = list(lock["stages"])
    lock["stages"] = {k: lock["stages"][k] for k in names[len(names) // 2:] + names[:len(names) // 2]}
    lock_file.write_text(yaml.safe_dump(lock, sort_keys=False))  # appended out of order, and not DVC's layout
    studies_dvc.sort_lock("cpu")
    assert lock_file.read_bytes() == canonical


def test_a_failing_home_stage_stops_only_what_reads_it(tmp_path, sequential):
    """tiny's report fails (its figure's paper accuracy is a bare number, not [percent, label]: found only when
    the report plots); tinyspawn, another study, is still dispatched to the end, its trunk, cells and report
    recorded as in a sequential run."""
    repo = study_repo(tmp_path)
    config = yaml.safe_load((repo / "studies/studies.yaml").read_text())
    config["studies"]["tiny"]["figure"]["accuracy"] = {"hi": 5}
    (repo / "studies/studies.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    commit(repo, "a mistake in tiny's figure")
    proc = dispatch_cmd(repo, "tiny", "tinyspawn", "--jobs", "2", check=False)
    assert proc.returncode == 2 and "report-tiny" in proc.stderr.splitlines()[-1], proc.stderr
    lock = yaml.safe_load((repo / "studies/cpu/dvc.lock").read_text())["stages"]
    assert "report-tiny" not in lock and {"trunk-tinyspawn", "tinyspawn-k0", "tinyspawn-k3", "report-tinyspawn"} <= set(lock)
    for name, payload in sequential.items():
        if "tinyspawn" in name:
            assert (repo / name).read_bytes() == payload, name


def test_a_slurm_task_out_of_time_is_requeued_with_the_same_task(tmp_path, slurm_cluster):  # noqa: F811
    """submitit calls `checkpoint` when SLURM signals the time limit or a preemption: the same task is sent again
    (its cell then takes up its saved progress, lmc/resume.py), up to --requeues times."""
    task = common.Task("tiny-hi-sgd", "cpu", "0" * 40, "git", "remote", {}, str(tmp_path))
    again = slurm.Requeueable().checkpoint(task)
    assert isinstance(again.function, slurm.Requeueable) and again.args == (task,)
    executor = slurm.SlurmExecutor(1, tmp_path, None, 0, 1, "1-12", requeues=7)
    assert executor.executor._executor.max_num_timeout == 7
    assert executor.executor.parameters["time"] == 2160  # 1 day and 12 hours


def test_a_dispatcher_killed_outright_is_followed_by_one_that_adopts_its_workers(tmp_path, sequential):
    """SIGKILL (the OOM killer, a lost login node) leaves a dispatcher no chance to cancel: its workers run on.
    While it lived, a second dispatch at its scale was refused; once it is gone, --status says which workers
    run unowned, and the next dispatch adopts them instead of sending them twice, and ends as a sequential run."""
    repo = study_repo(tmp_path)
    first = dispatch_bg(repo, "tiny", "--jobs", "2")
    running = started_workers(repo, 2)
    twin = dispatch_cmd(repo, "tiny", "--jobs", "2", check=False)
    assert twin.returncode == 2 and f"another dispatch (pid {first.pid}) is running at cpu scale" in twin.stderr
    first.kill()
    first.communicate(timeout=60)
    status = dispatch_cmd(repo, "tiny", "--status").stdout
    # the two it had started run on (or finished, their results not home); the two it held back never ran
    assert "tiny: 0 done, 2 running, 0 failed, 2 pending" in status, status
    assert status.count("its dispatcher is gone: the next dispatch adopts it") == 2, status
    err = dispatch_cmd(repo, "tiny", "--jobs", "2").stderr
    adopting = next(l for l in err.splitlines() if "adopting" in l)
    sending = next(l for l in err.splitlines() if "sending" in l)
    assert "adopting 2 task(s)" in adopting and "sending 2 task(s)" in sending, err
    assert all(s in adopting and s not in sending for s in running), err  # each ran once
    report_runs_no_cell(repo, ["tiny"])
    assert of_tiny(results(repo)) == of_tiny(sequential)


def slow_study(epochs: int = 300) -> dict:
    """One cell (slow-hi) that trains for a while: 300 epochs of 10 steps, about 30 s on 2 cores."""
    config = copy.deepcopy(STUDIES)
    config["studies"] = {"slow": {"title": "slow", "finding": "none", "figure": {"x": "lr", "y": "barrier"},
                                  "base": {"model": "mlp", "dataset": "mnist", "epochs": epochs, "pairs": 1},
                                  "axes": {"lr": {"hi": {"lr": 0.05}}}}}
    return config


def test_status_shows_the_epoch_of_a_running_cell_and_an_adopted_cell_finishes(tmp_path):
    repo = study_repo(tmp_path, slow_study())
    first = dispatch_bg(repo, "slow")
    started_workers(repo, 1)
    deadline, seen = time.time() + 120, None
    while seen is None and time.time() < deadline:
        status = dispatch_cmd(repo, "slow", "--status").stdout
        seen = next((l for l in status.splitlines() if l.startswith("  running slow-hi: epoch ")), None)
    assert seen is not None, status
    epoch, epochs = map(int, seen.split("epoch ")[1].split("/"))
    assert 1 <= epoch < epochs == 300
    first.kill()
    first.communicate(timeout=60)
    status = dispatch_cmd(repo, "slow", "--status").stdout
    assert "slow: 0 done, 1 running, 0 failed, 0 pending" in status
    assert "its dispatcher is gone: the next dispatch adopts it" in status, status
    err = dispatch_cmd(repo, "slow").stderr
    assert "adopting 1 task(s)" in err and "sending" not in err, err
    assert json.loads((repo / "studies/cpu/out/slow/hi.json").read_text())["status"] == "ok"


def test_a_slurm_dispatcher_killed_outright_is_followed_by_one_that_adopts_its_array_tasks(tmp_path, sequential,
                                                                                          slurm_cluster):  # noqa: F811
    repo = study_repo(tmp_path)
    args = ("tiny", "--executor", "slurm", "--jobs", "4", "--partition", slurm_cluster.partition,
            "--cpus-per-task", "1", "--time", "0:10:00")
    first = dispatch_bg(repo, *args)
    records = repo / "studies/cpu/.dispatch/records.json"
    deadline = time.time() + 120
    while time.time() < deadline and sum(bool(r.get("job")) for r in (
            json.loads(records.read_text()) if records.exists() else {}).values()) < 4:
        time.sleep(0.1)
    first.kill()
    first.communicate(timeout=60)
    status = dispatch_cmd(repo, "tiny", "--status").stdout
    assert "tiny: 0 done, 4 running, 0 failed, 0 pending" in status, status
    assert status.count("its dispatcher is gone: the next dispatch adopts it") == 4, status
    err = dispatch_cmd(repo, *args).stderr
    assert "adopting 4 task(s)" in err and "sending" not in err, err
    assert len(list((repo / "studies/cpu/.dispatch/slurm").rglob("*_log.out"))) == 4  # each task ran once
    report_runs_no_cell(repo, ["tiny"])
    assert of_tiny(results(repo)) == of_tiny(sequential)


def poll_until_done(executor, timeout=60.0) -> tuple[list, float]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        done = executor.poll()
        if done:
            return done, time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError("no task ended")


def test_a_local_result_that_shows_late_is_waited_for_and_one_that_never_shows_fails(tmp_path, monkeypatch):
    """A worker that ended well but whose result is not visible yet (a network file system) is not a failure
    until the grace period (LMC_RESULT_GRACE_S) is over."""
    folder = tmp_path / "local"
    folder.mkdir()
    for stage, grace, late in (("shows-late", "30", 2.0), ("never-shows", "1", None)):
        monkeypatch.setenv("LMC_RESULT_GRACE_S", grace)
        executor = local.LocalExecutor(1, tmp_path)  # reads the grace period when it is made
        task = common.Task(stage, "cpu", "0" * 40, "git", "remote", {}, str(tmp_path))
        executor.running[0] = (task, subprocess.Popen([sys.executable, "-c", "pass"]))  # ends at once, well
        if late is not None:
            threading.Timer(late, (folder / f"{stage}.result.json").write_text, ['{"stage": "shows-late"}']).start()
        done, waited = poll_until_done(executor)
        assert done == [(stage, folder / f"{stage}.log", {"stage": stage} if late else None)]
        assert waited >= (late or 1.0) - 0.5


def test_a_slurm_result_that_shows_late_is_waited_for(tmp_path, monkeypatch, slurm_cluster):  # noqa: F811
    """On NFS the result pickle a compute node wrote can stay invisible at home after its task left the queue."""
    monkeypatch.setenv("LMC_RESULT_GRACE_S", "60")
    executor = slurm.SlurmExecutor(1, tmp_path, slurm_cluster.partition, 0, 1, "0:05:00")
    job = executor.executor.submit(dict, stage="late")  # a real array-less job: returns {"stage": "late"}
    task = common.Task("late", "cpu", "0" * 40, "git", "remote", {}, str(tmp_path))
    deadline = time.time() + 120
    while not job.paths.result_pickle.exists() and time.time() < deadline:
        time.sleep(0.2)
    while job.job_id in (common.squeue() or {job.job_id}) and time.time() < deadline:
        time.sleep(0.2)
    hidden = job.paths.result_pickle.with_name("hidden.pkl")
    job.paths.result_pickle.rename(hidden)  # gone from the queue, its result not visible yet
    executor.jobs.append((task, job))
    threading.Timer(3.0, hidden.rename, [job.paths.result_pickle]).start()
    done, waited = poll_until_done(executor)
    assert done == [("late", Path(job.paths.stdout), {"stage": "late"})] and waited >= 2.5


@pytest.mark.parametrize("grace", ["2min", "-1", "nan", "inf"])
def test_a_grace_period_that_is_no_number_of_seconds_stops_the_executor_before_any_work(tmp_path, monkeypatch,
                                                                                       grace):
    monkeypatch.setenv("LMC_RESULT_GRACE_S", grace)
    with pytest.raises(common.DispatchError, match=f"LMC_RESULT_GRACE_S='{grace}' is not a number of seconds"):
        local.LocalExecutor(1, tmp_path)


def test_a_slurm_task_cancelled_mid_cell_is_failed_and_the_next_dispatch_sends_only_it(tmp_path, sequential,
                                                                                      slurm_cluster):  # noqa: F811
    repo = study_repo(tmp_path)
    args = ("tiny", "--executor", "slurm", "--jobs", "4", "--partition", slurm_cluster.partition,
            "--cpus-per-task", "1", "--time", "0:10:00")
    first = dispatch_bg(repo, *args, env={"LMC_RESULT_GRACE_S": "5"})
    records = repo / "studies/cpu/.dispatch/records.json"
    deadline, victim = time.time() + 120, None
    while victim is None and time.time() < deadline:
        time.sleep(0.1)
        running = json.loads(records.read_text()) if records.exists() else {}
        victim = next((s for s, r in running.items() if r.get("job") in (common.squeue() or ())), None)
    assert victim is not None, "no task reached the queue"
    subprocess.run(["scancel", json.loads(records.read_text())[victim]["job"]], check=True)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 2 and "1 task(s) failed" in err and victim in err, err
    assert victim not in yaml.safe_load((repo / "studies/cpu/dvc.lock").read_text())["stages"]
    out = dispatch_cmd(repo, *args).stderr
    assert f"sending 1 task(s) ({victim})" in out, out
    report_runs_no_cell(repo, ["tiny"])
    assert of_tiny(results(repo)) == of_tiny(sequential)


def test_a_slurm_task_preempted_or_out_of_time_is_requeued_and_its_cell_resumes_to_the_same_bytes(
        tmp_path, slurm_cluster):  # noqa: F811
    """SLURM tells a task that it is out of time (`--signal-delay` seconds before `--time`) or preempted with the
    same signal (USR2, submitit's); sent here by hand mid-cell, at a known epoch. The task requeues itself, and
    its cell continues from its last saved epoch to the bytes of an uninterrupted run."""
    (tmp_path / "dispatched").mkdir()
    (tmp_path / "sequential").mkdir()
    repo, reference = study_repo(tmp_path / "dispatched", slow_study()), study_repo(tmp_path / "sequential", slow_study())
    first = dispatch_bg(repo, "slow", "--executor", "slurm", "--jobs", "1", "--partition", slurm_cluster.partition,
                        "--cpus-per-task", "1", "--time", "0:10:00", "--signal-delay", "30",
                        env={"LMC_RESUME_EVERY_S": "0"})
    records = repo / "studies/cpu/.dispatch/records.json"
    def epoch(record: dict) -> int:
        done = read_progress(record["progress"]) if record.get("job") else None  # "epoch e/E"
        return int(done.split()[1].split("/")[0]) if done else 0

    deadline, record = time.time() + 300, {}
    while time.time() < deadline and epoch(record) < 5:
        time.sleep(0.2)
        record = json.loads(records.read_text()).get("slow-hi", {}) if records.exists() else {}
    assert record.get("job"), "the task did not start training"
    subprocess.run(["scancel", "--signal=USR2", record["job"]], check=True)  # what SLURM sends before --time
    sh(reference / "studies/cpu", "dvc", "repro", "slow-hi")  # meanwhile: the same cell, uninterrupted
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    log = "".join(p.read_text() for p in (repo / "studies/cpu/.dispatch/slurm").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in log and "DUE TO JOB REQUEUE" in log, log[-3000:]  # requeued by SLURM,
    assert "continuing at step" in log, log[-3000:]  # not started over (SLURM holds a requeued job ~2 min)
    for path in ("studies/cpu/out/slow/hi.json",):
        assert (repo / path).read_bytes() == (reference / path).read_bytes()
    lock = [yaml.safe_load((r / "studies/cpu/dvc.lock").read_text())["stages"]["slow-hi"] for r in (repo, reference)]
    assert lock[0] == lock[1]
