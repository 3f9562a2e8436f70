"""Resumable training: a stage killed at any moment (SIGKILL, SIGTERM, a SLURM preemption or time limit) continues
from its last saved epoch when it runs again, with the same bytes as an uninterrupted run.

At the end of an epoch, at most every LMC_RESUME_EVERY_S seconds (default 300; 0 = every epoch), training saves
its stacked weights, the optimizer's state (momentum, Adam's moments and step), its step count and the epochs'
history to a file beside the stage's outputs, atomically. Everything else is a function of the step: the
learning rate, each twin's data order and augmentation (seeded by epoch), so nothing more is needed. The file
is keyed by the stage, its spec and a hash of the lmc package: a changed spec or code discards it with one line.
It is never one of DVC's outputs (git-ignored `.resume/` folders), and the stage removes it once its outputs
are written: an in-progress state is never taken for a result.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .io import OutputError, partial, write_text_atomic
from .models import CheckpointError, read_payload, write_payload
from .spec import env_seconds

RESUME_FORMAT = 1
EVERY_ENV = "LMC_RESUME_EVERY_S"
DIR_ENV = "LMC_RESUME_DIR"  # where a study cell keeps its progress, when not under studies/ (dispatch workers)
PACKAGE = Path(__file__).resolve().parent


def every_s_from_env() -> float:
    """LMC_RESUME_EVERY_S: seconds between progress saves (default 300; 0 = every epoch)."""
    return env_seconds(EVERY_ENV, 300, note=" (0: save every epoch)")


def study_dir(default: Path) -> Path:
    """Where study cells keep their progress: LMC_RESUME_DIR (set by the dispatcher's workers to a folder that
    outlives their clones, so that a requeued task takes it up), else `default`."""
    return Path(os.environ.get(DIR_ENV) or default)


def cell_file(folder: Path, scale: str, stage: str) -> Path:
    """A study cell's resume file (stage: `<study>-<cell id>` of the scale's pipeline)."""
    return Path(folder) / f"{scale}-{stage}.pt"


def progress_file(path: Path) -> Path:
    """Beside a resume file: the epochs a running stage has completed, `{"epoch": e, "epochs": E}`, written at
    every epoch's end (what `python -m lmc.dispatch --status` shows)."""
    return Path(path).with_suffix(".progress.json")


def read_progress(path: Path) -> str | None:
    """"epoch e/E" from a resume file's progress file, or None while there is none."""
    try:
        done = json.loads(progress_file(path).read_text())
        return f"epoch {done['epoch']}/{done['epochs']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def code_hash() -> str:
    """sha256 of the lmc package's sources: a resume file saved by other code is not resumed."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class Resume:
    """Where one stage's training keeps its progress, and what that progress must have been trained for."""
    path: Path
    key: dict  # the stage and its spec (Spec.record()); the code hash is added
    every_s: float = field(default_factory=every_s_from_env)
    _last: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.path = Path(self.path)
        self.key = {**self.key, "code": code_hash()}

    def load(self) -> dict | None:
        """The saved progress ({step, state, optimizer, history}), or None: absent, or made for other settings or
        code (then removed, with one line), or unreadable (removed, with one line)."""
        if not self.path.exists():
            return None
        try:
            payload = read_payload(self.path, "resume file", RESUME_FORMAT, "its stage")
        except CheckpointError:
            print(f"resume: {self.path} is damaged or of another format; discarded, starting over", file=sys.stderr)
            self.clear()
            return None
        if payload["key"] != self.key:
            diff = sorted(k for k in set(self.key) | set(payload["key"]) if self.key.get(k) != payload["key"].get(k))
            print(f"resume: {self.path} was saved for other {' and '.join(diff)}; discarded, starting over",
                  file=sys.stderr)
            self.clear()
            return None
        return payload

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save(self, step: int, state: dict, optimizer: dict, history: list[dict]) -> None:
        """The progress after `step` steps: device-free tensors, plain history records (weights-only loading)."""
        write_payload(self.path, {"format": RESUME_FORMAT, "key": self.key, "step": step, "state": state,
                                  "optimizer": optimizer, "history": history})
        self._last = time.monotonic()

    def note(self, epochs_done: int, epochs: int) -> None:
        """The epochs completed, for --status to show: not worth stopping training for (a full disk, say)."""
        with contextlib.suppress(OutputError):
            write_text_atomic(progress_file(self.path), json.dumps({"epoch": epochs_done, "epochs": epochs}))

    def clear(self) -> None:
        """Remove the progress, and what a save a SIGKILL cut short left (load never reads it; a later save
        overwrites it, but a stage that finishes before its next save would leave it for good)."""
        for path in (self.path, progress_file(self.path)):
            path.unlink(missing_ok=True)
            partial(path).unlink(missing_ok=True)
