"""What every stage's main() shares: loading the params and turning known failures into one line."""
from __future__ import annotations

import functools
import sys

from . import numerics
from .data import DataError
from .io import OutputError
from .models import CheckpointError
from .spec import SpecError

USER_ERRORS = (SpecError, DataError, CheckpointError, OutputError, numerics.NumericsError)


def entry(main):
    """Run `main`; a user error prints one line (no traceback) and exits with status 2. A stage run as the
    program (`python -m stages.<name>`) may restart itself in its spec's numerics mode (lmc/numerics.py); called
    from other code (a test, a notebook) it may not, since the restart would start that whole program again."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        with numerics.restart_allowed(main.__module__ == "__main__"):
            try:
                return main(*args, **kwargs)
            except USER_ERRORS as err:
                print(f"error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
            except (MemoryError, RuntimeError) as err:
                detail = out_of_memory(err)
                if detail is None:
                    raise
                print(f"error: out of memory ({detail}); lower width, depth, pairs or batch_size, or run on a machine "
                      f"with more memory", file=sys.stderr)
                raise SystemExit(2) from None
    return wrapped


def out_of_memory(err: BaseException) -> str | None:
    """The first line of an allocation failure (Python's, torch's CPU allocator's, CUDA's), else None: a stage
    asked for more memory than there is, which its params decide (a width of 10¹² fails in init)."""
    import torch

    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return text
    if "can't allocate memory" in text:  # the CPU allocator raises a plain RuntimeError
        return text.split("DefaultCPUAllocator: ")[-1]
    return None
