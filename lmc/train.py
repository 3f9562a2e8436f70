"""The one training loop: K models trained in lockstep as one stacked model.

Model k reads its own loader (its own order seed). The loss is the sum of the models' mean
cross-entropies, so each model's gradient is exactly its own; SGD and Adam act element-wise, so
one optimizer over the stacked tensors equals K independent optimizers.

`train_pairs` is the twin experiment on top of it: `pairs` twin pairs in one stack, ordered A0, B0, A1,
B1, …; with spawn_step k, each pair's trunk first trains k steps on its A stream, then A and B branch.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import data
from .augment import augment
from .models import CheckpointError, read_payload, stack_states, stacked_forward, unstack_state, write_payload
from .paths import repro
from .spec import Spec


@dataclass
class EpochStats:
    epoch: int
    loss: list[float]  # per twin: mean train cross-entropy over the epoch's batches
    acc: list[float]  # per twin: accuracy on the epoch's batches, as seen during training
    diverged: bool = False  # a twin's loss turned non-finite in this epoch (loss: that batch's, acc: NaN)


@dataclass
class Snapshot:
    """Models and optimizer after `step` optimizer steps: what training resumes or branches from."""
    step: int
    state: dict[str, torch.Tensor]  # stacked parameters, leading axis = model
    optimizer: dict  # the optimizer's state_dict; its per-model tensors are stacked on the leading axis too

    def branch(self, copies: int) -> Snapshot:
        """Every model repeated `copies` times in a row (model k -> k·copies, …, k·copies + copies - 1)."""
        def rep(t):
            return t.repeat_interleave(copies, 0) if isinstance(t, torch.Tensor) and t.dim() else t
        opt = {"param_groups": self.optimizer["param_groups"],
               "state": {i: {n: rep(v) for n, v in st.items()} for i, st in self.optimizer["state"].items()}}
        return Snapshot(self.step, {n: rep(t) for n, t in self.state.items()}, opt)


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]  # stacked parameters, leading axis = model
    status: str  # "ok" or "diverged"
    history: list[EpochStats] = field(default_factory=list)
    diverged_epoch: int | None = None
    snapshot: Snapshot | None = None  # where training stopped (None if it diverged)


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
                threads: int | None = None, device: torch.device | None = None,
                inits: list[dict] | None = None, start: Snapshot | None = None,
                stop_step: int | None = None) -> TrainResult:
    """Train len(loaders) models of `model`'s architecture in lockstep, on `device` (default CPU).

    Model k starts from inits[k] (default: `model`'s weights), or from `start` (a snapshot, resumed at its
    step with its optimizer state), and reads loaders[k]; with spec.augment its batches are augmented with
    aug_seeds[k] (where the loader keeps the split: on the device for `pair_loaders`' loaders). Training runs to the end of
    spec.epochs, or stops after `stop_step` steps. The returned state stays on the device.

    Per step, the host waits for the device once (the divergence check), and with augmentation once more per
    model (its random draws are made on the CPU, then copied); the epoch's loss and accuracy add up on the
    device.
    """
    device = device or torch.device("cpu")
    if spec.augment and (aug_seeds is None or len(aug_seeds) != len(loaders)):
        raise ValueError("augment is on: pass one augmentation seed per loader")
    threads = threads or os.cpu_count() or 1
    k = len(loaders)
    initial = start.state if start is not None else stack_states(inits or [model.state_dict()] * k)
    if next(iter(initial.values())).shape[0] != k:
        raise ValueError(f"{k} loaders for {next(iter(initial.values())).shape[0]} models")
    state = {n: t.detach().to(device).clone().requires_grad_() for n, t in initial.items()}
    opt = make_optimizer(spec, list(state.values()))
    step = 0
    if start is not None:
        opt.load_state_dict(copy.deepcopy(start.optimizer))  # the optimizer would update the snapshot's buffers
        step = start.step
    steps_per_epoch = len(loaders[0])
    total = spec.epochs * steps_per_epoch if stop_step is None else stop_step
    if step and not all(hasattr(loader, "epoch") for loader in loaders):
        raise ValueError("resuming mid-run needs loaders whose epoch can be set (data.MemoryTwinLoader)")
    result = TrainResult(state=state, status="ok")
    for epoch in range(step // steps_per_epoch, spec.epochs):
        if step >= total:
            break
        loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        correct = torch.zeros(k, dtype=torch.long, device=device)
        seen = 0
        for loader in loaders:
            if hasattr(loader, "epoch"):
                loader.epoch = epoch
        skip = step - epoch * steps_per_epoch  # resuming mid-epoch: the batches before `step` were trained on
        epoch_batches = [itertools.islice(iter(loader), skip, skip + total - step) for loader in loaders]
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
            loss_sum += losses.detach().double() * batch
            correct += (logits.detach().argmax(-1) == y).sum(1)
            seen += batch
            if progress is not None:
                progress.update(1)
        # The losses were finite, but the epoch's last step may still have blown the weights up.
        blown = not all(torch.isfinite(t).all() for t in state.values())
        stats = EpochStats(epoch, (loss_sum / seen).cpu().tolist(), (correct.double() / seen).cpu().tolist(),
                           diverged=blown)
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if blown:
            result.status, result.diverged_epoch = "diverged", epoch
            return result
    # Copies: the optimizer's state_dict holds its live buffers, which a resumed run would update in place.
    result.snapshot = Snapshot(step, {n: t.detach().clone() for n, t in state.items()}, copy.deepcopy(opt.state_dict()))
    return result


def pair_loaders(spec: Spec, split: data.Split | tuple, side: str,
                 device: torch.device | None = None) -> tuple[list, list[int]]:
    """For every pair, the loader and augmentation seed of its twin `side` ("a" or "b"), all reading one copy
    of the split on `device` (pass `data.split_tensors(...)` as `split` to share it with the other side)."""
    pair_seeds = [spec.pair_seeds(i) for i in range(spec.pairs)]
    tensors = data.split_tensors(split, device)
    return ([data.MemoryTwinLoader(tensors, spec.batch_size, s[f"order_{side}"]) for s in pair_seeds],
            [s[f"aug_{side}"] for s in pair_seeds])


def train_trunks(spec: Spec, model: nn.Module, inits: list[dict], split: data.Split, steps: list[int],
                 device: torch.device | None = None, progress=None) -> dict[int, Snapshot]:
    """Every pair's trunk (from inits[i], on pair i's A stream), snapshotted after each of `steps`.

    One run to the largest k serves every k; `progress` advances by one per step, max(steps) in all. A trunk
    that diverges raises FloatingPointError: there is nothing to branch from.
    """
    loaders, aug_seeds = pair_loaders(spec, split, "a", device)
    snapshots, start = {}, None
    for k in sorted(set(steps)):
        result = train_twins(spec, model, loaders, aug_seeds, progress, inits=inits, start=start, stop_step=k,
                             device=device)
        if result.status != "ok":
            raise FloatingPointError(f"the trunk diverged before step {k}")
        snapshots[k] = start = result.snapshot
    return snapshots


def train_pairs(spec: Spec, model: nn.Module, inits: list[dict], split: data.Split,
                trunk: Snapshot | None = None, **kwargs) -> TrainResult:
    """spec.pairs twin pairs, stacked A0, B0, A1, B1, …; pair i starts at inits[i].

    With spawn_step k > 0, both twins of a pair start from its trunk after k steps (`trunk`, or trained here),
    momentum and Adam moments included: A continues on its own stream exactly as if it never branched, B goes
    on with its own order and augmentation from step k on. A trunk trained here that diverges is returned as
    the (diverged) result, each pair's trunk standing for both its twins.
    """
    tensors = data.split_tensors(split, kwargs.get("device"))  # one copy for both sides
    (loaders_a, aug_a), (loaders_b, aug_b) = (pair_loaders(spec, tensors, side) for side in "ab")
    loaders = [loader for pair in zip(loaders_a, loaders_b) for loader in pair]
    aug_seeds = [seed for pair in zip(aug_a, aug_b) for seed in pair]
    if spec.spawn_step and trunk is None:
        trunk_run = train_twins(spec, model, loaders_a, aug_a, inits=inits, stop_step=spec.spawn_step,
                                device=kwargs.get("device"))
        if trunk_run.status != "ok":  # unstable before B branched: both twins of a pair are its trunk
            trunk_run.state = {n: t.repeat_interleave(2, 0) for n, t in trunk_run.state.items()}
            return trunk_run
        trunk = trunk_run.snapshot
    if spec.spawn_step:
        if trunk.step != spec.spawn_step:
            raise ValueError(f"the trunk snapshot is at step {trunk.step}, not spawn_step={spec.spawn_step}")
        return train_twins(spec, model, loaders, aug_seeds, start=trunk.branch(2), **kwargs)
    return train_twins(spec, model, loaders, aug_seeds, inits=[s for s in inits for _ in range(2)], **kwargs)


def twin_state(result: TrainResult, pair: int, side: str) -> dict[str, torch.Tensor]:
    """The weights of twin `side` ("a" or "b") of `pair` in a train_pairs result, on the CPU (as checkpoints)."""
    return {k: v.detach().cpu() for k, v in unstack_state(result.state, 2 * pair + "ab".index(side)).items()}


SNAPSHOT_FORMAT = 1


def _on_cpu(obj):
    """`obj` (a state_dict, nested) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().contiguous()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def save_snapshot(path, snapshot: Snapshot, key: dict) -> None:
    """Write a trunk snapshot atomically; `key` is what it was trained for (checked on load). The file is
    device-free: weights and optimizer state (momentum, Adam's moments) go to the CPU, and training moves
    them to its own device when it resumes (the optimizer's load_state_dict follows its parameters)."""
    write_payload(path, {"format": SNAPSHOT_FORMAT, "key": key, "step": snapshot.step,
                         "state": _on_cpu(snapshot.state), "optimizer": _on_cpu(snapshot.optimizer)})


def load_snapshot(path, key: dict, stage: str) -> Snapshot:
    """The snapshot at `path`, which must have been trained for `key`; else a CheckpointError naming `stage`."""
    payload = read_payload(path, "trunk snapshot", SNAPSHOT_FORMAT, stage)
    if payload["key"] != key:
        diff = sorted(k for k in set(key) | set(payload["key"]) if key.get(k) != payload["key"].get(k))
        raise CheckpointError(f"trunk snapshot {path} was trained for other settings ({', '.join(diff)}); "
                              f"rerun `{repro(stage)}`")
    return Snapshot(payload["step"], payload["state"], payload["optimizer"])
