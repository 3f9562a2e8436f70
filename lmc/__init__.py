"""Linear mode connectivity of twin networks: shared logic behind the DVC stages (see README)."""
import os

# Pin the CPU code paths before torch or MKL load: kernels chosen per CPU (AVX-512 vs AVX2) change
# floating-point results, which would make dvc.lock differ between machines. Users may override.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("MKL_CBWR", "AVX2")
# cuBLAS needs a fixed workspace for deterministic results (see lmc/device.py); read when CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
