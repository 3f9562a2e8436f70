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
    return wrapped
