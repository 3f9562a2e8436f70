"""Where training and evaluation run: the CPU, or one CUDA GPU with deterministic algorithms.

CPU results are pinned by the spec's numerics mode (lmc/numerics.py), which `select` makes this process's own
before anything computes. On CUDA, `select` turns on
`torch.use_deterministic_algorithms` (CUBLAS_WORKSPACE_CONFIG is set before torch loads, in
lmc/__init__.py), turns off cuDNN autotuning and TF32, so reruns on one GPU model give the same bytes;
CPU and GPU, or two GPU models, round differently and do not.
"""
from __future__ import annotations

import torch

from . import numerics
from .spec import Spec, SpecError


def select(spec: Spec) -> torch.device:
    numerics.require(spec.numerics)  # a stage pinned to the other mode restarts here, before any work
    if spec.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError("params: device='cuda' but torch sees no CUDA device on this machine; use device: cpu "
                        "(in params.yaml, or in the scale's defaults in studies/studies.yaml)")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch.device("cuda")
