"""A real single-node SLURM on this machine, for the tests of whatever sends work to SLURM.

`start_cluster(tmp)` starts its own `munged` (own key, own socket), `slurmctld` and `slurmd`, as root, from a
`slurm.conf` of its own (a unique cluster name, free ports), and returns once `sinfo` shows the node idle;
`Cluster.stop()` cancels the jobs left, stops the daemons by their pid files, waits for them to exit and kills
whatever still runs with this cluster's `SLURM_CONF` (job steps outlive `slurmd`). Nothing in /etc is read or
written besides the slurm binaries themselves, and no system service is needed.

The `slurm_cluster` fixture (session scope) skips, with a one-line reason, when not root or when the binaries
are absent (`make test` installs them: slurm-wlm, munge), and sets `SLURM_CONF` in `os.environ` for the
session, so that `sbatch` & co., and submitit, which calls them, talk to this cluster.

A run that crashed (pytest killed) leaves its daemons running: the next `start_cluster` stops those of any
earlier cluster whose owner process is gone (see `reap_stale`), and leaves running clusters of live sessions
alone.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "scontrol")
RUN_PREFIX = "lmc-slurm-"  # /tmp/lmc-slurm-XXXX: socket, pid files and slurm.conf of one cluster
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def unavailable() -> str | None:
    """Why no cluster can be started here (one line), or None."""
    if os.geteuid() != 0:
        return "a real SLURM needs root (slurmd runs jobs as their user)"
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        return f"slurm binaries absent ({', '.join(missing)}): apt-get install slurm-wlm munge"
    return None


def _which(name: str) -> str:
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _proc_state(pid: int) -> str | None:
    """The process's state letter, None if there is none (a zombie counts as gone: 'Z')."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _wait_gone(pids, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pids, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL and wait again."""
    pids = [p for p in pids if _alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if _wait_gone(pids, timeout):
            return
    raise RuntimeError(f"processes {pids} survive SIGKILL")


def _pids_with_env(var: bytes) -> list[int]:
    """Processes whose initial environment holds `var` (b'SLURM_CONF=/tmp/lmc-slurm-XXXX/slurm.conf'):
    the daemons, the job steps and the jobs of one cluster."""
    found = []
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if var in (d / "environ").read_bytes().split(b"\0"):
                found.append(int(d.name))
        except OSError:
            pass
    return found


def _read_pid(f: Path) -> int | None:
    try:
        return int(f.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclasses.dataclass
class Cluster:
    name: str
    node: str
    partition: str
    run: Path  # /tmp/lmc-slurm-XXXX, world-traversable (munged wants that of its socket's folder)
    tmp: Path  # state, spool, logs
    conf: Path
    env: dict  # os.environ + SLURM_CONF (and no SLURM_* of an enclosing job)
    stopped: bool = False

    @property
    def logs(self) -> dict[str, Path]:
        return {d: self.tmp / "log" / f"{d}.log" for d in DAEMONS}

    def pid_files(self) -> dict[str, Path]:
        return {d: self.run / f"{d}.pid" for d in DAEMONS}

    def cmd(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A slurm client command (`sbatch`, `squeue`...) against this cluster."""
        return subprocess.run([_which(args[0]) or args[0], *args[1:]], env=self.env, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def sbatch(self, *args: str) -> str:
        """`sbatch --parsable ...`: the job id."""
        return self.cmd("sbatch", "--parsable", f"--partition={self.partition}", *args).stdout.strip().split(";")[0]

    def squeue(self, job: str | None = None, all_states: bool = False) -> dict[str, str]:
        """{job id (`123`, `123_4`, `123_[5-9]` for pending array tasks): state (PENDING, RUNNING,
        COMPLETING...)}, of one job or all. `all_states`: `squeue -t all`, which also lists the jobs that ended
        (COMPLETED, FAILED, CANCELLED, TIMEOUT...) for MinJobAge (300 s) after their end: without sacct, the
        only way to learn how a job ended."""
        args = ["squeue", "-h", "-o", "%i %T"] + (["-t", "all"] if all_states else []) + (["-j", job] if job else [])
        try:
            r = self.cmd(*args, check=False)
        except subprocess.TimeoutExpired:
            return {}
        if r.returncode != 0:  # `squeue -j` of a job the controller has forgotten: "Invalid job id specified"
            return {}
        return dict(line.split() for line in r.stdout.splitlines() if line.strip())

    def node_state(self) -> str:
        r = self.cmd("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return r.stdout.strip() if r.returncode == 0 else f"sinfo failed: {r.stderr.strip()}"

    def wait_left_queue(self, job: str, timeout: float = 30, poll: float = 0.1) -> float:
        """Wait until no task of `job` is in squeue's default view (pending, running, completing...);
        returns the seconds waited, raises TimeoutError."""
        t0 = time.monotonic()
        active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                  "STAGE_OUT", "SIGNALING", "STOPPED"}
        while any(s in active for s in self.squeue(job).values()):
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"job {job} still queued after {timeout}s: {self.squeue(job)}")
            time.sleep(poll)
        return time.monotonic() - t0

    def log_tail(self, n: int = 20) -> str:
        out = []
        for d, f in self.logs.items():
            lines = f.read_text(errors="replace").splitlines()[-n:] if f.exists() else ["(no log)"]
            out.append(f"--- {f}\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel every job, stop slurmd, slurmctld, munged (by pid file), wait for them to exit, then kill
        whatever still runs with this SLURM_CONF. Idempotent."""
        if self.stopped:
            return
        ctld = _read_pid(self.run / "slurmctld.pid")
        if ctld is not None and _alive(ctld):
            jobs = self.squeue()
            if jobs:
                self.cmd("scancel", f"--partition={self.partition}", check=False)
                try:
                    self.wait_left_queue(",".join(j.split("_")[0] for j in jobs), timeout=10)
                except TimeoutError:
                    pass
        _stop_run_dir(self.run)
        self.stopped = True


def _stop_run_dir(run: Path) -> None:
    for d in ("slurmd", "slurmctld", "munged"):
        pid = _read_pid(run / f"{d}.pid")
        if pid is not None:
            _kill([pid])
    # what outlives slurmd: job steps (slurmstepd ignores SIGTERM) and the jobs of a crashed run
    _kill(_pids_with_env(b"SLURM_CONF=" + bytes(run / "slurm.conf")), timeout=2)


def reap_stale() -> None:
    """Stop the daemons (and jobs) of earlier clusters whose owning process is gone, and remove their run dirs."""
    for run in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*"):
        try:
            owner, started = (run / "owner").read_text().split()
            if _alive(int(owner)) and _start_time(int(owner)) == started:
                continue  # a live session's cluster
        except (OSError, ValueError):
            if time.time() - run.stat().st_mtime < 60:
                continue  # being created right now
        _stop_run_dir(run)
        shutil.rmtree(run, ignore_errors=True)


def _node_hardware() -> str:
    """What `slurmd -C` finds (CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1
    RealMemory=...), less a tenth of the memory (a node with less than its configured memory is drained)."""
    line = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).stdout.splitlines()[0]
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    fields.pop("NodeName", None)
    fields["RealMemory"] = str(max(1, int(fields.get("RealMemory", "1000")) * 9 // 10))
    return " ".join(f"{k}={v}" for k, v in fields.items())


def start_cluster(tmp: Path, partition: str = "debug", timeout: float = START_TIMEOUT) -> Cluster:
    """Start munged, slurmctld and slurmd; return once the node is idle. `tmp`: state, spool and logs."""
    reap_stale()
    node = socket.gethostname().split(".")[0]  # slurmd -N: the node name, as `hostname -s` says
    name = "lmc" + uuid.uuid4().hex[:10]
    run = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
    run.chmod(0o755)  # munged: "execute permissions for all required" on its socket's folders
    (run / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    tmp = Path(tmp)
    for d in ("state", "spool", "log"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    key = run / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = run / "munge.socket"
    conf = run / "slurm.conf"
    # Addresses are given (127.0.0.1), so nothing depends on how the hostname resolves.
    conf.write_text(f"""\
ClusterName={name}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
KillWait=2
InactiveLimit=0
StateSaveLocation={tmp / 'state'}
SlurmdSpoolDir={tmp / 'spool'}
SlurmctldPidFile={run / 'slurmctld.pid'}
SlurmdPidFile={run / 'slurmd.pid'}
SlurmctldLogFile={tmp / 'log' / 'slurmctld.log'}
SlurmdLogFile={tmp / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} {_node_hardware()} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    env["SLURM_CONF"] = str(conf)
    cluster = Cluster(name=name, node=node, partition=partition, run=run, tmp=tmp, conf=conf, env=env)
    try:
        subprocess.run([_which("munged"), f"--key-file={key}", f"--socket={sock}", f"--pid-file={run / 'munged.pid'}",
                        f"--log-file={cluster.logs['munged']}", f"--seed-file={run / 'munged.seed'}"],
                       env=env, check=True, capture_output=True, text=True, timeout=timeout)
        subprocess.run([_which("slurmctld"), "-f", str(conf)], env=env, check=True, capture_output=True, text=True,
                       timeout=timeout)
        subprocess.run([_which("slurmd"), "-f", str(conf), "-N", node], env=env, check=True, capture_output=True,
                       text=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while (state := cluster.node_state()) != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node} not idle after {timeout}s (sinfo: {state!r})")
            time.sleep(0.1)
    except BaseException as e:
        detail = f"{e}\n{getattr(e, 'stderr', '') or ''}\n{cluster.log_tail()}"
        cluster.stop()
        raise RuntimeError(f"could not start the test SLURM cluster: {detail}") from e
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster (see `Cluster`); SLURM_CONF set in os.environ meanwhile."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    mp = pytest.MonkeyPatch()
    for k in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))]:
        mp.delenv(k)
    mp.setenv("SLURM_CONF", str(cluster.conf))
    try:
        yield cluster
    finally:
        mp.undo()
        cluster.stop()
        shutil.rmtree(cluster.run, ignore_errors=True)
