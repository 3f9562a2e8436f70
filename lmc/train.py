"""The one training loop: K models trained in lockstep as one stacked model.

Model k reads its own loader (its own order seed). The loss is the sum of the models' mean
cross-entropies, so each model's gradient is exactly its own; SGD and Adam act element-wise, so
one optimizer over the stacked tensors equals K independent optimizers.

`train_pairs` is the twin experiment on top of it: `pairs` twin pairs in one stack, ordered A0, B0, A1,
B1, …; with spawn_step k, each pair's trunk first trains k steps on its A stream, then A and B branch.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import itertools
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import data, numerics
from .augment import augment
from .models import (CheckpointError, looped_forward, read_payload, stack_states, stacked_forward, unstack_state,
                     write_payload)
from .paths import repro
from .resume import Resume
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


def _eager(optimizer: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`optimizer` without torch.optim's torch.compile hooks: its step (and its bookkeeping methods) import
    torch._dynamo on first use, 1.5-3 s of a process's start-up on this machine, as long as the default
    experiment's whole training. Training here is never compiled; the arithmetic is the same functions'."""
    names = ("zero_grad", "state_dict", "load_state_dict", "add_param_group")
    plain = {name: inspect.unwrap(getattr(optimizer, name)) for name in (*names, "step")}

    def step(self, closure=None):
        with torch.no_grad():  # what the hook did: optimizer steps are not differentiated
            return plain["step"](self, closure)
    return type(optimizer.__name__, (optimizer,), {"step": step, **{name: plain[name] for name in names}})


EAGER = {"sgd": _eager(torch.optim.SGD), "adam": _eager(torch.optim.Adam)}


def make_optimizer(spec: Spec, params: list[torch.Tensor], lr: torch.Tensor | None = None,
                   fused: bool = False) -> torch.optim.Optimizer:
    """SGD or Adam over the parameters. Given a device tensor `lr` (CUDA), the fused kernels: they read the
    learning rate on the device and can be captured in a CUDA graph. `fused` alone: the fused kernels with a
    plain learning rate (the CPU's per-model step: one pass over each tensor instead of several). On the CPU,
    torch.optim's classes without their compile hooks (`_eager`)."""
    kinds = EAGER if lr is None else {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    fused = {"fused": True} if lr is not None or fused else {}
    if spec.optimizer == "sgd":
        return kinds["sgd"](params, lr=spec.lr if lr is None else lr, momentum=spec.momentum,
                            weight_decay=spec.weight_decay, **fused)
    if lr is not None:
        fused["capturable"] = True  # Adam's step count lives on the device too
    return kinds["adam"](params, lr=spec.lr if lr is None else lr, weight_decay=spec.weight_decay, **fused)


def lr_at(spec: Spec, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from 0 over warmup_epochs (per step), then constant or a cosine decay to 0."""
    warm = spec.warmup_epochs * steps_per_epoch
    if step < warm:
        return spec.lr * (step + 1) / warm
    if spec.schedule == "cosine":
        total = spec.epochs * steps_per_epoch
        return spec.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return spec.lr


def clip_per_model(norms: torch.Tensor, grads: list[list[torch.Tensor]], max_norm: float) -> None:
    """Scale model k's gradients (grads[k], any layout), whose global L2 norm is norms[k], in place to a norm of
    at most max_norm."""
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for model, factor in zip(grads, scale):
        for g in model:
            g.mul_(factor)


class StackParams:
    """The K models' parameters as the optimizer trains them.

    `state` holds them stacked (leading axis = model) and is current after every step. Stacked (CUDA, and
    cpu_step: stacked, the earlier CPU step), the optimizer trains those stacked tensors, run as one model
    through vmap. Per model (the CPU's default), it trains one leaf per model and tensor, each a view into its
    stacked tensor, run model by model: plain per-model matmuls are faster there than vmap's batched ones
    (reports/benchmarks.md), and there are no per-step copies. The optimizer's state_dict goes out
    (snapshots, resume files) and comes back in the stacked layout either way, so a snapshot reads the same on
    every device.
    """

    def __init__(self, initial: dict[str, torch.Tensor], device: torch.device, per_model: bool):
        self.state = {n: t.detach().to(device).clone() for n, t in initial.items()}
        self.k = next(iter(self.state.values())).shape[0]
        if not per_model:
            self.models = None
            self.params = [t.requires_grad_() for t in self.state.values()]
        else:
            self.models = [{n: t[m].detach().requires_grad_() for n, t in self.state.items()} for m in range(self.k)]
            self.params = [model[n] for n in self.state for model in self.models]  # tensor-major: j·K + m

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.models is None:
            return stacked_forward(model, self.state, x)
        return looped_forward(model, self.models, x)

    def clip(self, max_norm: float) -> None:
        """Scale each model's gradient to a global L2 norm of at most max_norm. Stacked, the norms are summed
        as the stacked step always summed them (its results keep their bytes); per model, model by model."""
        if self.models is None:
            norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in self.params]).sum(0).sqrt()
            grads = [[p.grad[m] for p in self.params] for m in range(self.k)]
        else:
            grads = [[p.grad for p in model.values()] for model in self.models]
            norms = torch.stack([torch.stack([g.pow(2).sum() for g in model]).sum() for model in grads]).sqrt()
        clip_per_model(norms, grads, max_norm)

    def stacked_optimizer(self, optimizer_state: dict) -> dict:
        """An optimizer state_dict of these params in the stacked layout (its own copy, made once)."""
        if self.models is None:
            return copy.deepcopy(optimizer_state)
        n, per = len(self.state), optimizer_state["state"]
        state = {j: {key: torch.stack([per[j * self.k + m][key] for m in range(self.k)]) if value.dim()
                     else value.clone() for key, value in per[j * self.k].items()}
                 for j in range(n) if j * self.k in per}
        return {"state": state, "param_groups": [{**group, "params": list(range(n))}
                                                 for group in copy.deepcopy(optimizer_state["param_groups"])]}

    def own_optimizer(self, stacked: dict) -> dict:
        """The inverse of stacked_optimizer: a stacked-layout state_dict for these params (its own copy, made
        once)."""
        if self.models is None:
            return copy.deepcopy(stacked)
        state = {j * self.k + m: {key: value[m].clone() if value.dim() else value.clone()
                                  for key, value in tensors.items()}
                 for j, tensors in stacked["state"].items() for m in range(self.k)}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(self.params)))}
                                                 for group in copy.deepcopy(stacked["param_groups"])]}


@contextlib.contextmanager
def precision_mode(spec: Spec, device: torch.device):
    """The training arithmetic of spec.precision: fp32 as is; tf32 lets CUDA matmuls and convolutions use TF32
    (restored afterwards: evaluation is fp32); bf16 runs the forward under autocast, the weights, their
    gradients and the optimizer staying fp32."""
    if spec.precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    if spec.precision == "tf32" and device.type == "cuda":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return
    yield


def stack_losses(spec: Spec, model: nn.Module, params: StackParams, x: torch.Tensor, y: torch.Tensor):
    """Every model's logits (K, B, classes) and mean cross-entropy (K,) on its own batch x[k], y[k]."""
    with precision_mode(spec, x.device):
        logits = params.logits(model, x)
    k = y.shape[0]
    losses = nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    return logits, losses.view(k, -1).mean(1)


class EpochTally:
    """An epoch's loss and accuracy sums, and (where the check is deferred) its first non-finite losses, all
    on the device: adding to them never makes the host wait."""

    def __init__(self, k: int, device: torch.device):
        self.loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        self.correct = torch.zeros(k, dtype=torch.long, device=device)
        self.diverged = torch.zeros((), dtype=torch.bool, device=device)
        self.first_bad = torch.full((k,), math.nan, device=device)  # losses of the first non-finite batch
        self.seen = 0

    def reset(self) -> None:
        for t in (self.loss_sum, self.correct, self.diverged):
            t.zero_()
        self.seen = 0

    def add(self, logits: torch.Tensor, losses: torch.Tensor, y: torch.Tensor) -> None:
        losses = losses.detach()
        self.loss_sum.add_(losses.double() * y.shape[1])
        self.correct.add_((logits.detach().argmax(-1) == y).sum(1))

    def flag(self, losses: torch.Tensor) -> None:
        """Remember whether these losses are non-finite, and the first such losses, without a sync."""
        bad = ~torch.isfinite(losses.detach()).all()
        self.first_bad.copy_(torch.where(bad & ~self.diverged, losses.detach(), self.first_bad))
        self.diverged.logical_or_(bad)


class GraphedStep:
    """One optimizer step of the whole stack (normalization, forward, loss, backward, clipping, update and
    the epoch's tallies) replayed as a CUDA graph: one launch per step, so a small model's step is bound by
    the GPU, not by the host launching its kernels.

    A batch shape is captured at its second occurrence (the first runs eagerly: the warm-up the optimizer's
    state and cuBLAS need), and each shape has its own graph (the last batch of an epoch may be smaller).
    Inputs go in through static buffers: the batch's sample indices where the loaders share one split on the
    device (the gather then happens inside the graph), else the gathered batch itself.
    """

    def __init__(self, run_step: Callable, inputs: Callable):
        self.run_step, self.inputs = run_step, inputs
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor]]] = {}
        self.seen: set[tuple] = set()

    def __call__(self, *feed: torch.Tensor) -> None:
        shape = tuple(tuple(t.shape) for t in feed)
        if shape in self.graphs:
            graph, static = self.graphs[shape]
            for buffer, value in zip(static, feed):
                buffer.copy_(value)
            graph.replay()
            return None
        if shape not in self.seen:  # warm-up: eagerly, on a side stream, as torch's graph docs advise
            self.seen.add(shape)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.run_step(*self.inputs(*feed))
            torch.cuda.current_stream().wait_stream(side)
            return None
        static = [t.clone() for t in feed]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.run_step(*self.inputs(*static))
        self.graphs[shape] = graph, static
        graph.replay()  # capturing ran nothing: this is the step
        return None


def train_twins(spec: Spec, model: nn.Module, loaders: list, aug_seeds: list[int] | None = None, progress=None,
                on_epoch: Callable[[EpochStats], None] | None = None,
                threads: int | None = None, device: torch.device | None = None,
                inits: list[dict] | None = None, start: Snapshot | None = None,
                stop_step: int | None = None, graphs: bool | None = None,
                resume: Resume | None = None) -> TrainResult:
    """Train len(loaders) models of `model`'s architecture in lockstep, on `device` (default CPU).

    Model k starts from inits[k] (default: `model`'s weights), or from `start` (a snapshot, resumed at its
    step with its optimizer state), and reads loaders[k]; with spec.augment its batches are augmented with
    aug_seeds[k] (where the loader keeps the split: on the device for `pair_loaders`' loaders). Training runs to the end of
    spec.epochs, or stops after `stop_step` steps. The returned state stays on the device.

    On the CPU a non-finite loss stops training before its step. On CUDA the host never waits within an
    epoch: a non-finite loss is flagged on the device and read at the epoch's end, with the same status, the
    same diverged epoch and the same recorded losses; the step is a CUDA graph (`graphs`, default on; off
    runs the same step eagerly, with the same bytes).

    With `resume` (lmc/resume.py), progress saved by an earlier, interrupted run of the same stage is taken up
    at its step (its epochs' history replayed through `on_epoch`), and progress is saved at the end of epochs.
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
    threads = threads or numerics.threads()
    k = len(loaders)
    initial = start.state if start is not None else stack_states(inits or [model.state_dict()] * k)
    if next(iter(initial.values())).shape[0] != k:
        raise ValueError(f"{k} loaders for {next(iter(initial.values())).shape[0]} models")
    on_gpu = device.type == "cuda"
    per_model = not on_gpu and spec.cpu_step == "per_model"
    params = StackParams(initial, device, per_model)
    state = params.state
    # On CUDA the learning rate is a device tensor the graph reads (fused kernels take it without a sync).
    lr = torch.tensor(spec.lr, device=device) if on_gpu else None
    opt = make_optimizer(spec, params.params, lr, fused=per_model)
    step = 0
    if start is not None:
        # The snapshot's settings, this device's kernels (fused on CUDA) and learning-rate tensor.
        kernels = {key: opt.defaults[key] for key in ("fused", "capturable", "foreach") if key in opt.defaults}
        opt.load_state_dict(params.own_optimizer(start.optimizer))  # a copy: the optimizer updates its buffers
        for group in opt.param_groups:
            group.update(kernels, **({"lr": lr} if on_gpu else {}))
        step = start.step
    steps_per_epoch = len(loaders[0])
    total = spec.epochs * steps_per_epoch if stop_step is None else stop_step
    if step and not all(hasattr(loader, "epoch") for loader in loaders):
        raise ValueError("resuming mid-run needs loaders whose epoch can be set (data.MemoryTwinLoader)")
    result = TrainResult(state=state, status="ok")
    for record in saved["history"] if saved is not None else []:  # the epochs before the interruption
        result.history.append(EpochStats(**record))
        if on_epoch is not None:
            on_epoch(result.history[-1])
    tally = EpochTally(k, device)

    def run_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """One optimizer step of the stack; the losses instead where the CPU stops before a non-finite step. On
        CUDA it makes the host wait for nothing, so that a graph can hold it."""
        logits, losses = stack_losses(spec, model, params, x, y)
        if not on_gpu and not torch.isfinite(losses).all():
            return losses
        if on_gpu:
            tally.flag(losses)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        if spec.grad_clip:
            params.clip(spec.grad_clip)
        opt.step()
        tally.add(logits, losses, y)
        return None

    # Where every loader reads one split held on the device, a step's input is its (K, B) sample indices.
    shared = (on_gpu and not spec.augment and all(isinstance(l, data.MemoryTwinLoader) for l in loaders)
              and len({(l.images.data_ptr(), l.labels.data_ptr()) for l in loaders}) == 1)

    def gathered(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = loaders[0].images[index], loaders[0].labels[index]  # (K, B, H, W, C), (K, B)
        x = data.normalize(images.flatten(0, 1), spec.dataset).contiguous()
        return x.view(*index.shape, *x.shape[1:]), labels.long()

    step_on = run_step
    if on_gpu:
        inputs = gathered if shared else (lambda x, y: (x, y))
        step_on = GraphedStep(run_step, inputs) if graphs is not False else (lambda *feed: run_step(*inputs(*feed)))
    for epoch in range(step // steps_per_epoch, spec.epochs):
        if step >= total:
            break
        tally.reset()
        for loader in loaders:
            if hasattr(loader, "epoch"):
                loader.epoch = epoch
        skip = step - epoch * steps_per_epoch  # resuming mid-epoch: the batches before `step` were trained on
        epoch_batches = [itertools.islice(loader.index_batches() if shared else iter(loader), skip, skip + total - step)
                         for loader in loaders]
        # FFCV sets torch's thread count to its worker count when an epoch starts: take it back.
        torch.set_num_threads(threads)
        for batches in zip(*epoch_batches, strict=True):
            if on_gpu:
                lr.fill_(lr_at(spec, step, steps_per_epoch))
            else:
                for group in opt.param_groups:
                    group["lr"] = lr_at(spec, step, steps_per_epoch)
            feed = ((torch.stack([index for index, _ in batches]),) if shared
                    else _batch_on(batches, spec, aug_seeds, epoch, device))
            bad = step_on(*feed)
            if bad is not None:
                result.status, result.diverged_epoch = "diverged", epoch
                return _stop(result, EpochStats(epoch, bad.detach().cpu().tolist(), [math.nan] * k, diverged=True),
                             on_epoch)
            tally.seen += feed[-1].shape[1]  # the batch size: (K, B) indices or labels
            step += 1
            if progress is not None:
                progress.update(1)
        if on_gpu and bool(tally.diverged):  # the epoch's one wait for the device
            result.status, result.diverged_epoch = "diverged", epoch
            return _stop(result, EpochStats(epoch, tally.first_bad.cpu().tolist(), [math.nan] * k, diverged=True),
                         on_epoch)
        # The losses were finite, but the epoch's last step may still have blown the weights up.
        blown = not all(torch.isfinite(t).all() for t in state.values())
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
            snap = _snapshot(step, params, opt)
            resume.save(step, _on_cpu(snap.state), _on_cpu(snap.optimizer),
                        [dataclasses.asdict(h) for h in result.history])
    result.snapshot = _snapshot(step, params, opt)
    return result


def _snapshot(step: int, params: StackParams, opt: torch.optim.Optimizer) -> Snapshot:
    """Copies (the optimizer's state_dict holds its live buffers, which a resumed run would update in place)."""
    optimizer_state = params.stacked_optimizer(opt.state_dict())
    for group in optimizer_state["param_groups"]:
        group["lr"] = float(group["lr"])  # a snapshot is device-free and reads the same on every device
    return Snapshot(step, {n: t.detach().clone() for n, t in params.state.items()}, optimizer_state)


def _batch_on(batches, spec: Spec, aug_seeds, epoch: int, device: torch.device):
    """The loaders' batches (augmented where spec.augment), normalized and stacked on `device`: x (K, B, C, H, W),
    y (K, B)."""
    if spec.augment:
        batches = [(augment(images, index, epoch, seed), labels, index)
                   for (images, labels, index), seed in zip(batches, aug_seeds, strict=True)]
    x = torch.stack([data.normalize(images.to(device), spec.dataset) for images, _, _ in batches])
    y = torch.stack([labels.to(device).long() for _, labels, _ in batches])
    return x, y


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
                                device=kwargs.get("device"), graphs=kwargs.get("graphs"))
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
