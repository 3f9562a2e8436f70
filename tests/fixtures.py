"""Shared test set-up: what more than one test module (or a benchmark) needs. No test imports another test
module; they import this one.

- Datasets written in each real dataset's on-disk format, for the readers to parse as if real (each writer
  returns the (train, test) Splits it wrote, for exact comparison).
- Running things as a user does: shell commands, a stage as DVC runs it, a progress sink.
- Repositories: a fresh copy of this one, committed; tiny studies in place of the real ones.
- Dispatching those studies and reading back what they leave.
"""
from __future__ import annotations

import copy
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from lmc import data, studies
from lmc.data import Split

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# -- datasets in their real formats --------------------------------------------------------------------------------

def random_split(n: int, shape, classes: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64))


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 sizes, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train=40, n_test=20) -> tuple[Split, Split]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = random_split(n_train, (28, 28, 1), 10, 1), random_split(n_test, (28, 28, 1), 10, 2)
    for prefix, s in zip(("train", "t10k"), splits):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", s.images[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", s.labels)
    return splits


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072): each row is the red, then green, then blue plane, row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, n_train=40, n_test=20) -> tuple[Split, Split]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train, test = random_split(n_train, (32, 32, 3), 10, 3), random_split(n_test, (32, 32, 3), 10, 4)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), 1):
        _pickle(base / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                           "labels": train.labels[part].tolist(),
                                           "data": _cifar_rows(train.images[part]),
                                           "filenames": [f"img_{j}.png" for j in part]})
    _pickle(base / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test.labels.tolist(),
                                  "data": _cifar_rows(test.images), "filenames": [f"t_{j}.png" for j in range(n_test)]})
    _pickle(base / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": 8,
                                    "num_vis": 3072})
    return train, test


def write_cifar100(root: Path, n_train=40, n_test=20) -> tuple[Split, Split]:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    train, test = random_split(n_train, (32, 32, 3), 100, 5), random_split(n_test, (32, 32, 3), 100, 6)
    for name, s in (("train", train), ("test", test)):
        _pickle(base / name, {"batch_label": name, "fine_labels": s.labels.tolist(),
                              "coarse_labels": (s.labels // 5).tolist(), "data": _cifar_rows(s.images),
                              "filenames": [f"{name}_{j}.png" for j in range(len(s.labels))]})
    _pickle(base / "meta", {"fine_label_names": [f"fine{c}" for c in range(100)],
                            "coarse_label_names": [f"coarse{c}" for c in range(20)]})
    return train, test


TINY_WNIDS = ["n01443537", "n02094433", "n09999999"]


def write_tinyimagenet(root: Path, per_class=4, n_val=6) -> tuple[Split, Split]:
    """The extracted tiny-imagenet-200 tree; images are JPEGs, so the Splits returned hold what a JPEG
    decoder reads back from the written files (the reference the reader must match exactly)."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(7)
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)  # unlabeled in the real set: never read
    (base / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")  # not sorted on disk
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))

    def save(path: Path, gray: bool) -> np.ndarray:
        pixels = rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)  # a few real images are grayscale
        return np.asarray(Image.open(path).convert("RGB"))

    train_images, train_labels = [], []
    for label, wnid in enumerate(sorted(TINY_WNIDS)):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            train_images.append(save(folder / f"{wnid}_{i}.JPEG", gray=(i == 1)))
            train_labels.append(label)
    val_images, val_labels, lines = [], [], []
    for i in range(n_val):
        label = int(rng.integers(0, len(TINY_WNIDS)))
        val_images.append(save(base / "val" / "images" / f"val_{i}.JPEG", gray=False))
        val_labels.append(label)
        lines.append(f"val_{i}.JPEG\t{sorted(TINY_WNIDS)[label]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(reversed(lines)) + "\n")
    return (Split(np.stack(train_images), np.array(train_labels)),
            Split(np.stack(val_images), np.array(val_labels)))


WRITERS = {"mnist": write_mnist, "cifar10": write_cifar10, "cifar100": write_cifar100,
           "tinyimagenet": write_tinyimagenet}


# -- running things as a user does ----------------------------------------------------------------------------

def sh(cwd, *cmd, check=True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def as_from_a_terminal() -> None:
    """`preexec_fn` for a command the test interrupts as a user would: SIGINT and SIGHUP act as they do on a
    terminal, even where the tests themselves run with them ignored (started with `nohup` or `&`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def run_stage(cwd: Path, stage: str) -> subprocess.CompletedProcess:
    """`python -m stages.<stage>` in `cwd`, as DVC runs it, with a bare environment (HOME outside cwd, so
    that nothing but the stage's own outputs can appear there)."""
    home = cwd.parent / f"{cwd.name}-home"
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)})


def run_stage_stderr(cwd: Path, *args: str, tty: bool) -> tuple[int, str]:
    """`python -m stages.<args>` in `cwd` as `run_stage` runs it, its stderr on a pseudo-terminal (tty=True,
    as in a user's shell) or on a pipe (as under DVC in CI, or redirected to a log); (exit status, stderr)."""
    import fcntl
    import pty
    import termios

    home = cwd.parent / f"{cwd.name}-home"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    command = [sys.executable, "-m", f"stages.{args[0]}", *args[1:]]
    if not tty:
        proc = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        return proc.returncode, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size (tqdm's width)
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)  # the child holds the only copy: reading ends (EIO) when it exits
    out = b""
    try:
        while chunk := os.read(master, 4096):
            out += chunk
    except OSError:
        pass
    finally:
        os.close(master)
    return proc.wait(), out.decode(errors="replace")


def shows_a_bar(stderr: str) -> bool:
    """Whether tqdm drew a progress bar (its "NN%|" and rate) into this output."""
    return "%|" in stderr and "/s" in stderr


class Counter:
    """A progress sink for the library's `progress=`: counts what a tqdm bar would be advanced by."""

    def __init__(self):
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


def small_split(n=64, shape=(28, 28, 1), seed=0):
    rng = np.random.default_rng(seed)
    return data.Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))


# -- repositories ---------------------------------------------------------------------------------------------

TINY = {"width": 16, "epochs": 2, "batch_size": 500}


def copy_repo(dest: Path, params: dict | None = None) -> Path:
    """The working tree's tracked and unignored files, as a fresh git repo with one commit."""
    files = sh(ROOT, "git", "ls-files", "-co", "--exclude-standard", "-z").stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    if params:
        raw = yaml.safe_load((dest / "params.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump({**raw, **params}, sort_keys=False))
    sh(dest, "git", "init", "-q")
    # `dvc exp run` commits too: give the copy an identity of its own, whatever the user's config.
    sh(dest, "git", "config", "user.name", "lmc tests")
    sh(dest, "git", "config", "user.email", "tests@lmc.local")
    commit(dest, "copy")
    return dest


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


TINY_STUDIES = {
    "scales": {"cpu": {"datasets": {"mnist": "mnist5k"}, "defaults": {"epochs": 1, "batch_size": 500, "width": 16}},
               "paper": {"datasets": {"mnist": "mnist5k"}, "defaults": {"epochs": 2, "batch_size": 500, "width": 8}}},
    "studies": {
        "tiny": {"title": "tiny", "finding": "none", "base": {"model": "mlp", "dataset": "mnist"},
                 "axes": {"lr": {"hi": {"lr": 0.1}, "med": {"lr": 0.01}}}, "figure": {"x": "lr", "y": "barrier"},
                 "paper": {"hi": [0.05, 0.0]}},
        "absent": {"title": "absent", "finding": "none", "base": {"dataset": "cifar10"},
                   "axes": {"lr": {"hi": {"lr": 0.1}}}, "figure": {"x": "lr", "y": "barrier"}},
    },
}


def write_studies(repo: Path, config: dict) -> None:
    """`config` in place of the real studies.yaml, and its pipelines generated (studies/<scale>/dvc.yaml). The
    pipeline of a scale that `config` does not define is removed: generated from the real studies, DVC would
    still collect it."""
    (repo / "studies/studies.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for scale in studies.SCALES:
        if scale not in config["scales"]:
            shutil.rmtree(repo / studies.scale_dir(scale), ignore_errors=True)
    sh(repo, sys.executable, "-m", "lmc.studies_dvc")


# -- dispatching the tiny studies -----------------------------------------------------------------------------

# Four cells, one of them a spawn cell reading a trunk (a cached output that must travel too).
STUDIES = copy.deepcopy(TINY_STUDIES)
STUDIES["studies"] = {
    "tiny": {"title": "tiny", "finding": "none", "base": {"model": "mlp", "dataset": "mnist"},
             "axes": {"lr": {"hi": {"lr": 0.1}, "med": {"lr": 0.01}}, "opt": {"sgd": {}, "adam": {"optimizer": "adam"}}},
             "figure": {"x": "lr", "y": "barrier"}},
    "tinyspawn": {"title": "t", "finding": "none", "shared_trunk": True,
                  "base": {"model": "mlp", "dataset": "mnist", "pairs": 2, "epochs": 2},
                  "axes": {"k": {"k0": {"spawn_step": 0}, "k3": {"spawn_step": 3}}},
                  "figure": {"x": "spawn_step", "y": "barrier"}},
}
CELLS = {"tiny-hi-sgd", "tiny-hi-adam", "tiny-med-sgd", "tiny-med-adam"}


def study_repo(path: Path, config: dict = STUDIES) -> Path:
    repo = copy_repo(path, {"download": False})
    (repo / "studies/cpu/dvc.lock").unlink()
    sh(repo, "rm", "-r", "studies/cpu/out")
    write_studies(repo, config)
    commit(repo, "tiny studies")
    return repo


def results(repo: Path) -> dict[str, bytes]:
    """The bytes a study run leaves: the cpu scale's lock and every cell's and report's output."""
    files = [repo / "studies/cpu/dvc.lock", *sorted((repo / "studies/cpu/out").rglob("*.json")),
             *sorted((repo / "reports/cpu").glob("tiny*"))]
    return {str(f.relative_to(repo)): f.read_bytes() for f in files}


def report_runs_no_cell(repo: Path, names=("tiny", "tinyspawn")) -> None:
    """After a dispatch the home `dvc repro` of the reports trains nothing: only the reports (and the
    always-changed source stage) run."""
    reports = [f"report-{n}" for n in names]
    out = sh(repo / "studies/cpu", "dvc", "repro", *reports).stdout
    assert set(ran(out)) <= {"source-mnist", *reports}, ran(out)


def dispatch_cmd(repo, *args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "lmc.dispatch", *args], cwd=repo, capture_output=True, text=True,
                          preexec_fn=as_from_a_terminal,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                               **(env or {})})
    if check and proc.returncode:
        raise AssertionError(f"dispatch {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
