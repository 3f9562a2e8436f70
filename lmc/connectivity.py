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

from . import data
from .models import stack_states, stacked_forward, stacked_rest


EVAL_BATCH = 1000  # images per evaluation batch


def eval_batches(n: int, batch_size: int = EVAL_BATCH) -> int:
    """How many batches one evaluation of a split of n images takes (the unit `progress` counts)."""
    return -(-n // batch_size)


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
    """The stacked states Θ(α) for every α (leading axis = α)."""
    if state_a.keys() != state_b.keys():
        raise ValueError("the two models have different state keys; they are not the same architecture")
    a = torch.as_tensor(np.asarray(alphas), dtype=torch.float32)
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
    """Error and mean cross-entropy of k models on a whole split; logits_of(x) gives their (k, B, classes).
    The sums stay on the device until the end: the host does not wait for it batch by batch. `progress`
    (a tqdm, or anything with update(n)) is advanced by one per batch."""
    wrong = torch.zeros(k, dtype=torch.long, device=device)
    loss = torch.zeros(k, dtype=torch.float64, device=device)
    for start in range(0, len(labels), batch_size):
        x = data.normalize(images[start:start + batch_size].to(device), dataset)
        y = labels[start:start + batch_size].to(device).long()
        logits = logits_of(x)
        wrong += (logits.argmax(-1) != y).sum(1)
        ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none")
        loss += ce.view(k, -1).double().sum(1)
        if progress is not None:
            progress.update(1)
    n = len(labels)
    return (wrong.double() / n).cpu().numpy(), (loss / n).cpu().numpy()


@torch.no_grad()
def evaluate_stack(model: nn.Module, stacked: dict, images: torch.Tensor, labels: torch.Tensor,
                   dataset: str, batch_size: int = EVAL_BATCH, device: torch.device | None = None,
                   progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Error (1 - accuracy) and mean cross-entropy of every model in the stack on a whole split; `progress`
    advances by one per batch (`eval_batches`)."""
    device = device or torch.device("cpu")
    stacked = {n: t.to(device) for n, t in stacked.items()}
    k = next(iter(stacked.values())).shape[0]
    return _error_and_loss(lambda x: stacked_forward(model, stacked, x, shared_input=True), k, images, labels,
                           dataset, batch_size, device, progress)


@torch.no_grad()
def evaluate_path(model: nn.Module, state_a: dict, state_b: dict, alphas, images: torch.Tensor,
                  labels: torch.Tensor, dataset: str, batch_size: int = EVAL_BATCH,
                  device: torch.device | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Error and mean cross-entropy of Θ(α) for every α, on a whole split; `progress` advances by one per
    batch (`eval_batches`).

    Where the model's first layer is linear in its own parameters (MLP, linear, CNN, LC-CNN), its output at
    Θ(α) is (1-α)·out_A + α·out_B exactly (up to float rounding), so it is computed for A and B only and
    mixed: the path costs about the two endpoints plus the rest of the network per α. Other models (the
    ViT) evaluate every Θ(α) whole.
    """
    device = device or torch.device("cpu")
    stacked = interpolate_states(state_a, state_b, alphas)
    first = getattr(model, "first_layer", None)
    if first is None:
        return evaluate_stack(model, stacked, images, labels, dataset, batch_size, device, progress)
    # The rest of the network needs no first-layer weights per α (missing entries fall back to the module's).
    stacked = {n: t.to(device) for n, t in stacked.items() if not n.startswith(first + ".")}
    ends = {n: t.to(device) for n, t in stack_states([state_a, state_b]).items()}
    weights = torch.as_tensor(np.asarray(alphas), dtype=torch.float32, device=device)  # once, not per batch

    def logits_of(x):
        first_a, first_b = stacked_forward(model, ends, x, shared_input=True, first_only=True)
        w = weights.to(first_a.dtype).view(-1, *([1] * first_a.dim()))
        return stacked_rest(model, stacked, (1 - w) * first_a + w * first_b)
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
