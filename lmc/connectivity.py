"""Interpolation between two models and the barriers measured along the path.

Θ(α) = (1-α)·Θ_A + α·Θ_B for every floating-point entry of the state dict, parameters *and*
buffers (models here have no buffers; a BatchNorm's running statistics would be interpolated like
weights, which is the documented choice). Integer buffers (counters) must agree at both ends.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import data
from .models import stack_states, stacked_forward, stacked_rest


EVAL_BATCH = 1000  # images per evaluation batch
# What one evaluation pass may hold, per device type: its stacked models' weights and activations on one batch
# (as `model_bytes` bounds them). Passes stack as many models (α, layers) as fit; on the CPU, with the process's
# own ~0.6 GB, a stage stays under 2 GiB (benchmarks/evaluation.py); a GPU has room for more.
EVAL_MEMORY = {"cpu": 2 ** 30, "cuda": 8 * 2 ** 30}


def eval_batches(n: int, batch_size: int = EVAL_BATCH) -> int:
    """How many batches one evaluation of a split of n images takes (the unit `progress` counts)."""
    return -(-n // batch_size)


class _OutputBytes(TorchDispatchMode):
    """Adds up the bytes of every new tensor an operation makes (views share memory and are not counted)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.total += t.numel() * t.element_size()
        return out


def model_bytes(model: nn.Module, image_shape, batch_size: int = EVAL_BATCH) -> int:
    """An upper bound of what one model takes in an evaluation pass on images of `image_shape` (H, W, C): its
    weights, and every tensor that evaluating a stack of two makes per image (counted on the meta device, as
    the stacked pass runs it, the first-layer mix included; none freed, so the real peak is lower), halved."""
    meta = {n: torch.empty_like(t, device="meta").expand(2, *t.shape) for n, t in model.state_dict().items()}
    h, w, c = image_shape
    x = torch.zeros(1, c, h, w, device="meta")
    with torch.no_grad(), _OutputBytes() as counter:
        stacked_forward(model, meta, x, shared_input=True)
        first = getattr(model, "first_layer", None)
        if first is not None:  # evaluate_path's pass: the endpoints' first layer, mixed per α
            ends = stacked_forward(model, meta, x, shared_input=True, first_only=True)
            rest = {n: t for n, t in meta.items() if not n.startswith(first + ".")}
            stacked_rest(model, rest, 0.5 * ends + 0.5 * ends)
    weights = sum(t[0].numel() * t.element_size() for t in meta.values())
    return weights + counter.total * batch_size // 2


def eval_batch_size(model: nn.Module, image_shape, device: torch.device | None = None) -> int:
    """EVAL_BATCH images a batch, halved while one model's pass would not fit the device's EVAL_MEMORY."""
    batch, budget = EVAL_BATCH, _budget(device)
    while batch > 1 and model_bytes(model, image_shape, batch) > budget:
        batch //= 2
    return batch


def models_per_pass(model: nn.Module, image_shape, batch_size: int | None = None,
                    device: torch.device | None = None) -> int:
    """How many models of `model`'s architecture one evaluation pass stacks within the device's EVAL_MEMORY
    (at least one)."""
    batch_size = batch_size or eval_batch_size(model, image_shape, device)
    return max(1, _budget(device) // model_bytes(model, image_shape, batch_size))


def eval_passes(model: nn.Module, image_shape, models: int, batch_size: int | None = None,
                device: torch.device | None = None) -> int:
    """Passes over a split that evaluating `models` stacked models takes."""
    return -(-models // models_per_pass(model, image_shape, batch_size, device))


def eval_work(model: nn.Module, image_shape, models: int, n: int, device: torch.device | None = None) -> int:
    """The batches (the unit `progress` counts) of evaluating `models` stacked models on n images at the
    default batch size: passes × batches per pass."""
    return eval_passes(model, image_shape, models, device=device) * eval_batches(n, eval_batch_size(model, image_shape,
                                                                                                   device))


def _budget(device: torch.device | None) -> int:
    return EVAL_MEMORY[torch.device(device or "cpu").type]


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def alpha_grid(points: int) -> np.ndarray:
    """`points` equidistant α on [0, 1], both endpoints included (11 points: 0, 0.1, …, 1)."""
    return np.linspace(0.0, 1.0, points)


def refine_grid(alphas, values, points: int) -> np.ndarray:
    """`points` α evenly inside each of the two grid intervals next to the highest interior value α[i], i.e.
    inside (α[i-1], α[i]) and (α[i], α[i+1]): 2·points new α, none on the grid. Empty when `points` is 0 or
    the grid has no interior point."""
    alphas, values = np.asarray(alphas, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if points == 0 or len(alphas) < 3:
        return np.empty(0)
    i = 1 + int(np.argmax(values[1:-1]))
    inside = [np.linspace(lo, hi, points + 2)[1:-1] for lo, hi in ((alphas[i - 1], alphas[i]), (alphas[i], alphas[i + 1]))]
    return np.concatenate(inside)


def interpolate_states(state_a: dict, state_b: dict, alphas) -> dict[str, torch.Tensor]:
    """The stacked states Θ(α) for every α (leading axis = α; `alphas`: numbers, or a float32 tensor on the
    states' device)."""
    if state_a.keys() != state_b.keys():
        raise ValueError("the two models have different state keys; they are not the same architecture")
    a = alphas if isinstance(alphas, torch.Tensor) else torch.as_tensor(np.asarray(alphas), dtype=torch.float32)
    out = {}
    for name, wa in state_a.items():
        wb = state_b[name]
        if wa.shape != wb.shape:
            raise ValueError(f"'{name}' has shape {tuple(wa.shape)} in A and {tuple(wb.shape)} in B")
        if wa.is_floating_point():
            w = a.view(-1, *([1] * wa.dim())).to(device=wa.device, dtype=wa.dtype)
            out[name] = (1 - w) * wa + w * wb
        elif torch.equal(wa, wb):
            out[name] = wa.expand(len(a), *wa.shape).clone()
        else:
            raise ValueError(f"integer buffer '{name}' differs between A and B and cannot be interpolated")
    return out


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """One model at Θ(α), as an ordinary module (for notebooks)."""
    state = interpolate_states(model_a.state_dict(), model_b.state_dict(), [alpha])
    out = copy.deepcopy(model_a)
    out.load_state_dict({k: v[0] for k, v in state.items()})
    return out


def _error_and_loss(logits_of, k: int, images: torch.Tensor, labels: torch.Tensor, dataset: str,
                    batch_size: int, device: torch.device, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Error and mean cross-entropy of k models on a whole split; logits_of(x) yields, per pass over the batch x,
    (the slice of the k models it holds, their logits (m, B, classes)). The sums stay on the device until the
    end: the host does not wait for it batch by batch. `progress` (a tqdm, or anything with update(n)) is
    advanced by one per batch and pass."""
    wrong = torch.zeros(k, dtype=torch.long, device=device)
    loss = torch.zeros(k, dtype=torch.float64, device=device)
    for start in range(0, len(labels), batch_size):
        x = data.normalize(images[start:start + batch_size].to(device), dataset)
        y = labels[start:start + batch_size].to(device).long()
        for part, logits in logits_of(x):
            m = part.stop - part.start
            wrong[part] += (logits.argmax(-1) != y).sum(1)
            ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(m), reduction="none")
            loss[part] += ce.view(m, -1).double().sum(1)
            if progress is not None:
                progress.update(1)
    n = len(labels)
    return (wrong.double() / n).cpu().numpy(), (loss / n).cpu().numpy()


@torch.no_grad()
def evaluate_stack(model: nn.Module, stacked: dict, images: torch.Tensor, labels: torch.Tensor,
                   dataset: str, batch_size: int | None = None, device: torch.device | None = None,
                   progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Error (1 - accuracy) and mean cross-entropy of every model in the stack on a whole split, in passes of
    `models_per_pass` models, each over the whole split (batch_size: default `eval_batch_size`); `progress`
    advances by one per batch and pass (`eval_work`)."""
    device = device or torch.device("cpu")
    batch_size = batch_size or eval_batch_size(model, images.shape[1:], device)
    k = next(iter(stacked.values())).shape[0]
    results = []
    for part in _chunks(k, models_per_pass(model, images.shape[1:], batch_size, device)):
        chunk = {n: t[part].to(device) for n, t in stacked.items()}
        whole = slice(0, part.stop - part.start)
        results.append(_error_and_loss(lambda x: [(whole, stacked_forward(model, chunk, x, shared_input=True))],
                                       whole.stop, images, labels, dataset, batch_size, device, progress))
    return tuple(np.concatenate(r) for r in zip(*results))


@torch.no_grad()
def evaluate_path(model: nn.Module, state_a: dict, state_b: dict, alphas, images: torch.Tensor,
                  labels: torch.Tensor, dataset: str, batch_size: int | None = None,
                  device: torch.device | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Error and mean cross-entropy of Θ(α) for every α, on a whole split, the α in passes of `models_per_pass`
    (only a pass's Θ(α) exist at a time; batch_size: default `eval_batch_size`); `progress` advances by one
    per batch and pass (`eval_work`).

    Where the model's first layer is linear in its own parameters (MLP, linear, CNN, LC-CNN), its output at
    Θ(α) is (1-α)·out_A + α·out_B exactly (up to float rounding), so it is computed for A and B only, once a
    batch, and mixed for every pass: the path costs about the two endpoints plus the rest of the network per
    α. Other models (the ViT) evaluate every Θ(α) whole.
    """
    device = device or torch.device("cpu")
    batch_size = batch_size or eval_batch_size(model, images.shape[1:], device)
    alphas = np.asarray(alphas)
    parts = _chunks(len(alphas), models_per_pass(model, images.shape[1:], batch_size, device))
    first = getattr(model, "first_layer", None)
    if first is None:
        results = [evaluate_stack(model, interpolate_states(state_a, state_b, alphas[part]), images, labels,
                                  dataset, batch_size, device, progress) for part in parts]
        return tuple(np.concatenate(r) for r in zip(*results))
    # The rest of the network needs no first-layer weights per α (missing entries fall back to the module's).
    rest_a, rest_b = ({n: t.to(device) for n, t in s.items() if not n.startswith(first + ".")}
                      for s in (state_a, state_b))
    ends = {n: t.to(device) for n, t in stack_states([state_a, state_b]).items()}
    weights = torch.as_tensor(alphas, dtype=torch.float32, device=device)  # once, not per batch

    def logits_of(x):
        first_a, first_b = stacked_forward(model, ends, x, shared_input=True, first_only=True)
        for part in parts:  # a pass's states, interpolated on the device (a small cost next to its forward)
            w = weights[part].to(first_a.dtype).view(-1, *([1] * first_a.dim()))
            yield part, stacked_rest(model, interpolate_states(rest_a, rest_b, weights[part]),
                                     (1 - w) * first_a + w * first_b)
    return _error_and_loss(logits_of, len(alphas), images, labels, dataset, batch_size, device, progress)


def barrier(values, extra=()) -> float:
    """max over the path minus the endpoints' mean (Frankle et al. 2020, eq. 1); for errors or losses.
    `values` run from α=0 to α=1; `extra` are values at more points inside the path (a refined grid)."""
    v = np.asarray(values, dtype=np.float64)
    peak = np.concatenate([v, np.asarray(extra, dtype=np.float64).ravel()]).max()
    return float(peak - (v[0] + v[-1]) / 2)


def normalized_barrier(b: float, test_acc_a: float, test_acc_b: float) -> float:
    """The paper's eq. 2: the barrier over the endpoints' mean test accuracy."""
    return b / ((test_acc_a + test_acc_b) / 2)
