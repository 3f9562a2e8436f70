"""One optimizer step of K models trained in lockstep as one stacked model; the loop is lmc/train.py.

The loss is the sum of the models' mean cross-entropies, so each model's gradient is exactly its own; SGD and
Adam act element-wise, so one optimizer over the stacked tensors equals K independent optimizers. `TrainStep`
builds the step for where it runs: per model on the CPU (the default), stacked through vmap (cpu_step:
stacked, and CUDA), and on CUDA replayed as a CUDA graph.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
from typing import Callable, Iterator

import torch
from torch import nn

from . import data
from .augment import augment
from .models import looped_forward, stacked_forward
from .spec import Spec


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


class TrainStep:
    """The K models' parameters, their optimizer, the epoch's tally, and one optimizer step of them all, built
    for `device`: per model on the CPU (cpu_step: per_model, with the fused optimizer) or stacked through vmap
    (cpu_step: stacked, and always on CUDA, where the step is a CUDA graph unless `graphs` is False; off runs
    the same step eagerly, with the same bytes).

    The loop sets the learning rate (`set_lr`) and hands it each step's batches, one per loader; model k
    trains on loaders[k]'s, augmented with aug_seeds[k] where spec.augment.
    """

    def __init__(self, spec: Spec, model: nn.Module, initial: dict[str, torch.Tensor], loaders: list,
                 aug_seeds: list[int] | None, device: torch.device, graphs: bool | None):
        self.spec, self.model, self.aug_seeds, self.device = spec, model, aug_seeds, device
        self.on_gpu = device.type == "cuda"
        per_model = not self.on_gpu and spec.cpu_step == "per_model"
        self.params = StackParams(initial, device, per_model)
        self.state = self.params.state  # stacked, leading axis = model; current after every step
        # On CUDA the learning rate is a device tensor the graph reads (fused kernels take it without a sync).
        self.lr = torch.tensor(spec.lr, device=device) if self.on_gpu else None
        self.opt = make_optimizer(spec, self.params.params, self.lr, fused=per_model)
        self.tally = EpochTally(self.params.k, device)
        # Where every loader reads one split held on the device, a step's input is its (K, B) sample indices
        # and the gather happens inside the step (inside the graph).
        self.shared = (self.on_gpu and not spec.augment and all(isinstance(l, data.MemoryTwinLoader) for l in loaders)
                       and len({(l.images.data_ptr(), l.labels.data_ptr()) for l in loaders}) == 1)
        self.split = loaders[0] if self.shared else None
        self._step = self._run
        if self.on_gpu:
            inputs = self._gathered if self.shared else (lambda x, y: (x, y))
            self._step = (GraphedStep(self._run, inputs) if graphs is not False
                          else (lambda *feed: self._run(*inputs(*feed))))

    def load_optimizer(self, stacked: dict) -> None:
        """Take up a snapshot's optimizer state (stacked layout, a copy: the optimizer updates its buffers) with
        this device's kernels (fused on CUDA) and learning-rate tensor rather than the snapshot's settings."""
        defaults = self.opt.defaults
        kernels = {key: defaults[key] for key in ("fused", "capturable", "foreach") if key in defaults}
        self.opt.load_state_dict(self.params.own_optimizer(stacked))
        for group in self.opt.param_groups:
            group.update(kernels, **({"lr": self.lr} if self.on_gpu else {}))

    def optimizer_state(self) -> dict:
        """The optimizer's state_dict in the stacked layout, its own copy (the live one holds the buffers a
        resumed run would update in place), device-free: a snapshot reads the same on every device."""
        state = self.params.stacked_optimizer(self.opt.state_dict())
        for group in state["param_groups"]:
            group["lr"] = float(group["lr"])
        return state

    def set_lr(self, lr: float) -> None:
        if self.on_gpu:
            self.lr.fill_(lr)
        else:
            for group in self.opt.param_groups:
                group["lr"] = lr

    def batches(self, loader) -> Iterator:
        """What this step takes from `loader` each step: its sample indices where the split is shared, else its
        batches."""
        return loader.index_batches() if self.shared else iter(loader)

    def __call__(self, batches: tuple, epoch: int) -> torch.Tensor | None:
        """One optimizer step on the loaders' batches of this step (one per model). None, or on the CPU the
        losses, without a step, when one is non-finite (CUDA flags it in the tally instead)."""
        feed = ((torch.stack([index for index, _ in batches]),) if self.shared
                else _batch_on(batches, self.spec, self.aug_seeds, epoch, self.device))
        bad = self._step(*feed)
        if bad is None:
            self.tally.seen += feed[-1].shape[1]  # the batch size: (K, B) indices or labels
        return bad

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """One optimizer step of the stack; the losses instead where the CPU stops before a non-finite step. On
        CUDA it makes the host wait for nothing, so that a graph can hold it."""
        logits, losses = stack_losses(self.spec, self.model, self.params, x, y)
        if not self.on_gpu and not torch.isfinite(losses).all():
            return losses
        if self.on_gpu:
            self.tally.flag(losses)
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        if self.spec.grad_clip:
            self.params.clip(self.spec.grad_clip)
        self.opt.step()
        self.tally.add(logits, losses, y)
        return None

    def _gathered(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.split.images[index], self.split.labels[index]  # (K, B, H, W, C), (K, B)
        x = data.normalize(images.flatten(0, 1), self.spec.dataset).contiguous()
        return x.view(*index.shape, *x.shape[1:]), labels.long()


def _batch_on(batches, spec: Spec, aug_seeds, epoch: int, device: torch.device):
    """The loaders' batches (augmented where spec.augment), normalized and stacked on `device`: x (K, B, C, H, W),
    y (K, B)."""
    if spec.augment:
        batches = [(augment(images, index, epoch, seed), labels, index)
                   for (images, labels, index), seed in zip(batches, aug_seeds, strict=True)]
    x = torch.stack([data.normalize(images.to(device), spec.dataset) for images, _, _ in batches])
    y = torch.stack([labels.to(device).long() for _, labels, _ in batches])
    return x, y
