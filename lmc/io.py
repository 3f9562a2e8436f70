"""Atomic file writes: write a temporary sibling, then rename, so a final name is never half-written."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

ADVICE = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota)",
          errno.EACCES: "fix the folder's permissions", errno.EPERM: "fix the folder's permissions",
          errno.EROFS: "write to a writable file system"}


class OutputError(RuntimeError):
    """An output that cannot be written (full disk, missing permission, a file where a folder should be)."""


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; it becomes `path` only if the block finishes.

    Any OSError on the way (ENOSPC, EACCES, ...) becomes an OutputError naming `path`; the temporary file
    is removed, and `path` keeps whatever it held before.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        advice = ADVICE.get(err.errno, "check that the path can be written")
        raise OutputError(f"cannot write {path} ({err.strerror or err}); {advice}, then rerun") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())
