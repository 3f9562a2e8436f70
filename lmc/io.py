"""Atomic writes: write a temporary sibling, then rename, so a final name is never half-written."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

ADVICE = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota)",
          errno.EACCES: "fix the folder's permissions", errno.EPERM: "fix the folder's permissions",
          errno.EROFS: "write to a writable file system"}


class OutputError(RuntimeError):
    """An output that cannot be written (full disk, missing permission, a file where a folder should be)."""


def partial(path: str | Path) -> Path:
    """The temporary sibling a write of `path` goes through: what a SIGKILL in the middle leaves behind."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _output_error(path: Path, err: OSError) -> OutputError:
    advice = ADVICE.get(err.errno, "check that the path can be written")
    return OutputError(f"cannot write {path} ({err.strerror or err}); {advice}, then rerun")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; it becomes `path` only if the block finishes.

    Any OSError on the way (ENOSPC, EACCES, ...) becomes an OutputError naming `path`; the temporary file
    is removed, and `path` keeps whatever it held before.
    """
    path = Path(path)
    tmp = partial(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise _output_error(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield an empty temporary folder next to `path`; it replaces `path` only if the block finishes, so a
    folder of several files (the twins) is there whole or not at all, never some of its files.

    A temporary folder a killed run left is removed first. Between removing an old `path` and the rename a
    kill leaves no `path` (under `dvc repro` there is none: DVC removes a stage's outputs before running it).
    OSErrors become an OutputError naming `path`, as in atomic_path.
    """
    path = Path(path)
    tmp = partial(path)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        os.replace(tmp, path)
    except OSError as err:
        raise _output_error(path, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())
