"""The one training loop: K models from the same Θ0, trained in lockstep as one stacked model.

Twin k reads its own loader (its own order seed). The loss is the sum of the twins' mean
cross-entropies, so each twin's gradient is exactly its own; SGD and Adam act element-wise, so
one optimizer over the stacked tensors equals K independent optimizers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import data
from .augment import augment
from .models import stack_states, stacked_forward
from .spec import Spec


@dataclass
class EpochStats:
    epoch: int
    loss: list[float]  # per twin: mean train cross-entropy over the epoch's batches
    acc: list[float]  # per twin: accuracy on the epoch's batches, as seen during training
    diverged: bool = False  # a twin's loss turned non-finite in this epoch (loss: that batch's, acc: NaN)


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]  # stacked parameters, leading axis = twin
    status: str  # "ok" or "diverged"
    history: list[EpochStats] = field(default_factory=list)
    diverged_epoch: int | None = None


def make_optimizer(spec: Spec, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def lr_at(spec: Spec, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from 0 over warmup_epochs (per step), then constant or a cosine decay to 0."""
    warm = spec.warmup_epochs * steps_per_epoch
    if step < warm:
        return spec.lr * (step + 1) / warm
    if spec.schedule == "cosine":
        total = spec.epochs * steps_per_epoch
        return spec.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return spec.lr


def clip_per_model(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale each model's gradient (a slice on the leading axis) to global L2 norm <= max_norm."""
    norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in params]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))


def train_twins(spec: Spec, model: nn.Module, loaders: list, aug_seeds: list[int] | None = None, progress=None,
                on_epoch: Callable[[EpochStats], None] | None = None,
                threads: int | None = None, device: torch.device | None = None) -> TrainResult:
    """Train len(loaders) copies of `model` (each from its weights) in lockstep, on `device` (default CPU).

    Twin k reads loaders[k]; with spec.augment its batches are augmented with aug_seeds[k] (on the CPU,
    before the batch moves to the device). The returned state stays on the device.
    """
    device = device or torch.device("cpu")
    if spec.augment and (aug_seeds is None or len(aug_seeds) != len(loaders)):
        raise ValueError("augment is on: pass one augmentation seed per loader")
    threads = threads or os.cpu_count() or 1
    k = len(loaders)
    state = {n: t.detach().to(device).clone().requires_grad_() for n, t in
             stack_states([model.state_dict()] * k).items()}
    opt = make_optimizer(spec, list(state.values()))
    steps_per_epoch = len(loaders[0])
    result = TrainResult(state=state, status="ok")
    step = 0
    for epoch in range(spec.epochs):
        loss_sum = torch.zeros(k, dtype=torch.float64)
        correct = torch.zeros(k, dtype=torch.long)
        seen = 0
        epoch_batches = [iter(loader) for loader in loaders]
        # FFCV sets torch's thread count to its worker count when an epoch starts: take it back.
        torch.set_num_threads(threads)
        for batches in zip(*epoch_batches, strict=True):
            if spec.augment:
                batches = [(augment(images, index, epoch, seed), labels, index)
                           for (images, labels, index), seed in zip(batches, aug_seeds, strict=True)]
            x = torch.stack([data.normalize(images.to(device), spec.dataset) for images, _, _ in batches])
            y = torch.stack([labels.to(device).long() for _, labels, _ in batches])
            logits = stacked_forward(model, state, x)
            losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            losses = losses.view(k, -1).mean(1)
            if not torch.isfinite(losses).all():
                result.status, result.diverged_epoch = "diverged", epoch
                stats = EpochStats(epoch, losses.detach().cpu().tolist(), [math.nan] * k, diverged=True)
                result.history.append(stats)
                if on_epoch is not None:
                    on_epoch(stats)
                return result
            for group in opt.param_groups:
                group["lr"] = lr_at(spec, step, steps_per_epoch)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if spec.grad_clip:
                clip_per_model(list(state.values()), spec.grad_clip)
            opt.step()
            step += 1
            batch = y.shape[1]
            loss_sum += losses.detach().double().cpu() * batch
            correct += (logits.detach().argmax(-1) == y).sum(1).cpu()
            seen += batch
            if progress is not None:
                progress.update(1)
        # The losses were finite, but the epoch's last step may still have blown the weights up.
        blown = not all(torch.isfinite(t).all() for t in state.values())
        stats = EpochStats(epoch, (loss_sum / seen).tolist(), (correct.double() / seen).tolist(), diverged=blown)
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if blown:
            result.status, result.diverged_epoch = "diverged", epoch
            return result
    return result
