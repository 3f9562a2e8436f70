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
    """Run `main`; a user error prints one line (no traceback) and exits with status 2. A stage may restart
    itself in its spec's numerics mode (lmc/numerics.py)."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        numerics.allow_restart()
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    return wrapped
