"""The one training loop: K models trained in lockstep as one stacked model, epoch by epoch.

Model k reads its own loader (its own order seed); one optimizer step of them all is lmc/step.py's
`TrainStep`. `train_pairs` is the twin experiment on top of the loop: `pairs` twin pairs in one stack, ordered
A0, B0, A1, B1, …; with spawn_step k, each pair's trunk first trains k steps on its A stream, then A and B
branch. Snapshots (where training stopped) go to files and come back with save_snapshot / load_snapshot.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import data, numerics
from .models import CheckpointError, read_payload, stack_states, unstack_state, write_payload
from .paths import repro
from .resume import Resume
from .spec import Spec
from .step import TrainStep


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


def lr_at(spec: Spec, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from 0 over warmup_epochs (per step), then constant or a cosine decay to 0."""
    warm = spec.warmup_epochs * steps_per_epoch
    if step < warm:
        return spec.lr * (step + 1) / warm
    if spec.schedule == "cosine":
        total = spec.epochs * steps_per_epoch
        return spec.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return spec.lr


def train_twins(spec: Spec, model: nn.Module, loaders: list, aug_seeds: list[int] | None = None, *,
                inits: list[dict] | None = None, start: Snapshot | None = None, stop_step: int | None = None,
                device: torch.device | None = None, graphs: bool | None = None,
                progress=None, on_epoch: Callable[[EpochStats], None] | None = None,
                resume: Resume | None = None) -> TrainResult:
    """Train len(loaders) models of `model`'s architecture in lockstep; model k reads loaders[k], and with
    spec.augment its batches are augmented with aug_seeds[k] (where the loader keeps the split: on the device
    for `pair_loaders`' loaders).

    Where it starts and stops:
      inits      model k's starting weights (default: `model`'s, for every k)
      start      or a snapshot, resumed at its step with its optimizer state
      stop_step  stop after this many optimizer steps (default: at the end of spec.epochs)
    Where it runs:
      device     default the CPU; the returned state stays on it
      graphs     CUDA only: the step as a CUDA graph (default on; off runs the same step eagerly, same bytes)
    Who watches:
      progress   a tqdm, or anything with update(n): advanced by one per step
      on_epoch   called with each epoch's EpochStats
      resume     (lmc/resume.py) progress saved by an earlier, interrupted run of the same stage is taken up
                 at its step (its epochs' history replayed through on_epoch), and saved at the end of epochs

    On the CPU a non-finite loss stops training before its step. On CUDA the host never waits within an
    epoch: a non-finite loss is flagged on the device and read at the epoch's end, with the same status, the
    same diverged epoch and the same recorded losses.
    """
    device = device or torch.device("cpu")
    saved = resume.load() if resume is not None else None
    if saved is not None:
        if progress is not None:
            progress.update(saved["step"] - (start.step if start is not None else 0))
        start = Snapshot(saved["step"], saved["state"], saved["optimizer"])
        print(f"resume: {resume.path}: continuing at step {start.step} (epoch {len(saved['history']) + 1})",
              file=sys.stderr)
    if spec.augment and (aug_seeds is None or len(aug_seeds) != len(loaders)):
        raise ValueError("augment is on: pass one augmentation seed per loader")
    threads = numerics.threads()
    k = len(loaders)
    initial = start.state if start is not None else stack_states(inits or [model.state_dict()] * k)
    if next(iter(initial.values())).shape[0] != k:
        raise ValueError(f"{k} loaders for {next(iter(initial.values())).shape[0]} models")
    train_step = TrainStep(spec, model, initial, loaders, aug_seeds, device, graphs)
    step = 0
    if start is not None:
        train_step.load_optimizer(start.optimizer)
        step = start.step
    steps_per_epoch = len(loaders[0])
    total = spec.epochs * steps_per_epoch if stop_step is None else stop_step
    if step and not all(hasattr(loader, "epoch") for loader in loaders):
        raise ValueError("resuming mid-run needs loaders whose epoch can be set (data.MemoryTwinLoader)")
    result = TrainResult(state=train_step.state, status="ok")
    for record in saved["history"] if saved is not None else []:  # the epochs before the interruption
        result.history.append(EpochStats(**record))
        if on_epoch is not None:
            on_epoch(result.history[-1])
    tally = train_step.tally
    for epoch in range(step // steps_per_epoch, spec.epochs):
        if step >= total:
            break
        tally.reset()
        for loader in loaders:
            if hasattr(loader, "epoch"):
                loader.epoch = epoch
        skip = step - epoch * steps_per_epoch  # resuming mid-epoch: the batches before `step` were trained on
        epoch_batches = [itertools.islice(train_step.batches(loader), skip, skip + total - step) for loader in loaders]
        # FFCV sets torch's thread count to its worker count when an epoch starts: take it back.
        torch.set_num_threads(threads)
        for batches in zip(*epoch_batches, strict=True):
            train_step.set_lr(lr_at(spec, step, steps_per_epoch))
            bad = train_step(batches, epoch)
            if bad is not None:
                result.status, result.diverged_epoch = "diverged", epoch
                return _stop(result, EpochStats(epoch, bad.detach().cpu().tolist(), [math.nan] * k, diverged=True),
                             on_epoch)
            step += 1
            if progress is not None:
                progress.update(1)
        if train_step.on_gpu and bool(tally.diverged):  # the epoch's one wait for the device
            result.status, result.diverged_epoch = "diverged", epoch
            return _stop(result, EpochStats(epoch, tally.first_bad.cpu().tolist(), [math.nan] * k, diverged=True),
                         on_epoch)
        # The losses were finite, but the epoch's last step may still have blown the weights up.
        blown = not all(torch.isfinite(t).all() for t in train_step.state.values())
        stats = EpochStats(epoch, (tally.loss_sum / tally.seen).cpu().tolist(),
                           (tally.correct.double() / tally.seen).cpu().tolist(), diverged=blown)
        if blown:
            result.status, result.diverged_epoch = "diverged", epoch
            return _stop(result, stats, on_epoch)
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if resume is not None:
            resume.note(epoch + 1, spec.epochs)
        if resume is not None and epoch + 1 < spec.epochs and step < total and resume.due():
            snap = _snapshot(step, train_step)
            resume.save(step, _on_cpu(snap.state), _on_cpu(snap.optimizer),
                        [dataclasses.asdict(h) for h in result.history])
    result.snapshot = _snapshot(step, train_step)
    return result


def _snapshot(step: int, train_step: TrainStep) -> Snapshot:
    """Copies: the weights and the optimizer's state go on training in place."""
    return Snapshot(step, {n: t.detach().clone() for n, t in train_step.state.items()}, train_step.optimizer_state())


def _stop(result: TrainResult, stats: EpochStats, on_epoch) -> TrainResult:
    result.history.append(stats)
    if on_epoch is not None:
        on_epoch(stats)
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
        result = train_twins(spec, model, loaders, aug_seeds, inits=inits, start=start, stop_step=k,
                             device=device, progress=progress)
        if result.status != "ok":
            raise FloatingPointError(f"the trunk diverged before step {k}")
        snapshots[k] = start = result.snapshot
    return snapshots


def train_pairs(spec: Spec, model: nn.Module, inits: list[dict], split: data.Split,
                trunk: Snapshot | None = None, *, device: torch.device | None = None, graphs: bool | None = None,
                progress=None, on_epoch: Callable[[EpochStats], None] | None = None,
                resume: Resume | None = None) -> TrainResult:
    """spec.pairs twin pairs, stacked A0, B0, A1, B1, …; pair i starts at inits[i]. The options after `trunk`
    are train_twins'.

    With spawn_step k > 0, both twins of a pair start from its trunk after k steps (`trunk`, or trained here),
    momentum and Adam moments included: A continues on its own stream exactly as if it never branched, B goes
    on with its own order and augmentation from step k on. A trunk trained here that diverges is returned as
    the (diverged) result, each pair's trunk standing for both its twins. Only the twins' own steps advance
    `progress`, reach `on_epoch` and are saved for `resume`.
    """
    tensors = data.split_tensors(split, device)  # one copy for both sides
    (loaders_a, aug_a), (loaders_b, aug_b) = (pair_loaders(spec, tensors, side) for side in "ab")
    loaders = [loader for pair in zip(loaders_a, loaders_b) for loader in pair]
    aug_seeds = [seed for pair in zip(aug_a, aug_b) for seed in pair]
    if spec.spawn_step and trunk is None:
        trunk_run = train_twins(spec, model, loaders_a, aug_a, inits=inits, stop_step=spec.spawn_step,
                                device=device, graphs=graphs)
        if trunk_run.status != "ok":  # unstable before B branched: both twins of a pair are its trunk
            trunk_run.state = {n: t.repeat_interleave(2, 0) for n, t in trunk_run.state.items()}
            return trunk_run
        trunk = trunk_run.snapshot
    if spec.spawn_step and trunk.step != spec.spawn_step:
        raise ValueError(f"the trunk snapshot is at step {trunk.step}, not spawn_step={spec.spawn_step}")
    start = trunk.branch(2) if spec.spawn_step else None
    twin_inits = None if spec.spawn_step else [s for s in inits for _ in range(2)]
    return train_twins(spec, model, loaders, aug_seeds, inits=twin_inits, start=start, device=device, graphs=graphs,
                       progress=progress, on_epoch=on_epoch, resume=resume)


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
