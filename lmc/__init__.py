"""Linear mode connectivity of twin networks: shared logic behind the DVC stages (see README)."""
import os
import sys

from . import numerics

# Pin the CPU code paths before torch, MKL or oneDNN load (lmc/numerics.py): portable unless LMC_NUMERICS says
# native. A stage whose spec names the other mode restarts itself in it (numerics.require).
try:
    numerics.pin(os.environ.get(numerics.ENV, "portable"))
except numerics.NumericsError as err:  # a misspelt mode: one line, not a traceback through every import
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None
# cuBLAS needs a fixed workspace for deterministic results (see lmc/device.py); read when CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
