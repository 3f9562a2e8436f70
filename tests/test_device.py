import os
import subprocess
import sys

import pytest
import torch

from lmc import api, data, device, layerwise, models
from lmc.augment import augment
from lmc.spec import Spec, SpecError
from lmc.train import train_pairs, twin_state

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


def _cuda_spec(model: str) -> Spec:
    """A short run that touches every op family of `model` on the GPU: Adam, clipping, augmentation, 2 pairs,
    a refined α grid (and weight matching for the mlp)."""
    width = {"mlp": 64, "vit": 32}.get(model, "auto")
    return Spec(model=model, width=width, channels=8, negative_slope=0.1, depth=3 if model == "mlp" else 2,
                optimizer="adam", lr=1e-3, grad_clip=1.0, augment=True, epochs=2, batch_size=500, pairs=2,
                refine_alphas=2, align="weight_matching" if model == "mlp" else "none", device="cuda")


def _cuda_run(spec: Spec, splits) -> tuple[dict, dict, dict]:
    """Trained weights (on the GPU), every interpolation curve, and the layerwise curves of pair 0."""
    dev = device.select(spec)
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]
    model = models.build(models.arch_from_spec(spec))
    result = train_pairs(spec, model, inits, splits[0], device=dev)
    twins = [(twin_state(result, i, "a"), twin_state(result, i, "b")) for i in range(spec.pairs)]
    test = {"test": (torch.from_numpy(splits[1].images), torch.from_numpy(splits[1].labels))}
    curves = api.experiment_curves(spec, model, twins, test, dev)
    layers = layerwise.layerwise_curves(model, *twins[0], *test["test"], spec.dataset, [0.0, 0.5, 1.0], dev)
    return result.state, curves, layers


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["mlp", "cnn", "lc_cnn", "vit"])
def test_cuda_training_and_interpolation_are_deterministic(mnist5k, model):
    # use_deterministic_algorithms raises on any op without a deterministic CUDA kernel, so this also
    # proves that every op these models use has one.
    spec = _cuda_spec(model)
    (state_1, curves_1, layers_1), (state_2, curves_2, layers_2) = (_cuda_run(spec, mnist5k) for _ in range(2))
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32
    for name, tensor in state_1.items():
        assert tensor.device.type == "cuda" and torch.equal(tensor, state_2[name]), name
    assert curves_1 == curves_2 and layers_1 == layers_2
    assert "cross_init" in curves_1 and "test_refined" in curves_1["pairs"][0]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gpu_batches_and_augmentation_equal_the_cpus(mnist5k):
    cpu = data.MemoryTwinLoader(mnist5k[0], 256, order_seed=3)
    gpu = data.MemoryTwinLoader(data.split_tensors(mnist5k[0], torch.device("cuda")), 256, order_seed=3)
    for (images, labels, index), (g_images, g_labels, g_index) in zip(cpu, gpu, strict=True):
        assert g_images.is_cuda and torch.equal(images, g_images.cpu()) and torch.equal(labels, g_labels.cpu())
        assert torch.equal(index, g_index)  # the sample indices stay on the CPU, for the seeded draws
        assert torch.equal(augment(images, index, 1, 5), augment(g_images, g_index, 1, 5).cpu())
