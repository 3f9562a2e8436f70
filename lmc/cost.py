"""What a cell costs before it runs: its FLOPs (counted on the model itself) against a measured rate.

A cell trains 2·pairs models (forward + backward ≈ 3 forwards per sample) and evaluates each pair's path
(every α on both splits, the refined α, the cross-init path). Its time is the larger of FLOPs / rate and
steps × the device's per-step floor (a small model's GPU step is bound by the host, not by arithmetic).
The rates are measurements, not datasheet peaks; each comes with where it was measured.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import models
from .spec import DATASETS, Spec

# device -> (sustained FLOP/s of the stacked twins, seconds per optimizer step at least, where measured)
RATES = {
    "cpu": (76e9, 0.0, "the 2-core development CPU: stacked twins at 40% of its 190 GFLOP/s fp32 matmul rate, "
                       "reports/benchmarks.md"),
    "cuda": (32.7e12, 3.3e-3, "one H100, fp32 without TF32: 0.33 s/epoch for 6 models of width 6272 on 60,000 "
                              "images (10.8 TFLOP), and 3.3 ms per step for small models (host-bound), issue 15"),
}


@functools.lru_cache(maxsize=None)
def _forward_flops(arch_items: tuple) -> int:
    arch = dict(arch_items)
    with torch.device("meta"):  # shapes only: a paper-scale model (billions of weights) allocates nothing
        model = models.build(arch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        h, w, c = arch["in_shape"]
        model(torch.zeros(1, c, h, w, device="meta"))  # normalized batches are (N, C, H, W)
    return counter.get_total_flops()


def forward_flops(spec: Spec) -> int:
    """FLOPs of one sample's forward pass through the spec's model."""
    arch = models.arch_from_spec(spec)
    return _forward_flops(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arch.items())))


def cell_flops(spec: Spec) -> float:
    size = DATASETS[spec.dataset]
    fwd = forward_flops(spec)
    train = 3 * fwd * size["train"] * spec.epochs * 2 * spec.pairs
    points = spec.alphas + 2 * spec.refine_alphas  # the grid, then the refined α of each split's curve
    evaluate = fwd * (size["train"] + size["test"]) * points * (spec.pairs + (spec.pairs > 1))
    return float(train + evaluate)


def cell_hours(spec: Spec) -> float:
    rate, floor, _ = RATES[spec.device]
    steps = spec.epochs * spec.steps_per_epoch
    return max(cell_flops(spec) / rate, steps * floor) / 3600


def basis(device: str) -> str:
    return f"at {RATES[device][0] / 1e12:g} TFLOP/s measured on {RATES[device][2]}"
