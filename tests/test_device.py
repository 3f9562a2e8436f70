import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from lmc import device, models
from lmc.spec import Spec, SpecError
from lmc.train import train_twins

from .test_train import twin_loaders

CUDA = torch.cuda.is_available()


def test_cpu_is_the_default_device():
    assert Spec().device == "cpu" and device.select(Spec()) == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_before_any_work():
    with pytest.raises(SpecError, match=r"^params: device='cuda' but torch sees no CUDA device .*use device: cpu "):
        device.select(Spec(device="cuda"))


def test_importing_lmc_fixes_the_cublas_workspace():
    code = "import lmc, os; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip() == ":4096:8"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_training_is_deterministic(betons, tiny_spec):
    spec = dataclasses.replace(tiny_spec, device="cuda")
    dev = device.select(spec)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    runs = [train_twins(spec, models.init_model(spec), twin_loaders(betons, spec), device=dev) for _ in range(2)]
    for name, tensor in runs[0].state.items():
        assert tensor.device.type == "cuda" and torch.equal(tensor, runs[1].state[name])
