"""Linear mode connectivity of twin networks: shared logic behind the DVC stages (see README)."""
import os

from . import numerics

# Pin the CPU code paths before torch, MKL or oneDNN load (lmc/numerics.py): portable unless LMC_NUMERICS says
# native. A stage whose spec names the other mode restarts itself in it (numerics.require).
numerics.pin(os.environ.get(numerics.ENV, "portable"))
# cuBLAS needs a fixed workspace for deterministic results (see lmc/device.py); read when CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
