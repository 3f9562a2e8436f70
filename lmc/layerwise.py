"""Layerwise connectivity: interpolate one layer at a time, the others held at A (Adilova et al. 2023).

For layer l the path is Θ_l(α) = A with layer l's parameters set to (1-α)·A_l + α·B_l, so α=1 is a hybrid:
A with B's layer l. A layer's barrier is the error barrier along its path (max minus the endpoints' mean);
the hybrid's own error is reported beside it, since it says whether B's layer fits A's other layers at all.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import connectivity

def layer_names(state: dict) -> list[str]:
    """The model's layers in state order: parameter names without their last part (layers.0, hidden, …)."""
    names = []
    for key in state:
        name = key.rsplit(".", 1)[0] if "." in key else key
        if name not in names:
            names.append(name)
    return names


def _in_layer(key: str, layer: str) -> bool:
    return key == layer or key.startswith(layer + ".")


def layer_path_states(state_a: dict, state_b: dict, layer: str, alphas) -> dict[str, torch.Tensor]:
    """The stacked states Θ_l(α) for every α: layer `layer` interpolated, every other entry at A."""
    moving = [n for n in state_a if _in_layer(n, layer)]  # only this layer's entries are interpolated
    path = connectivity.interpolate_states({n: state_a[n] for n in moving}, {n: state_b[n] for n in moving}, alphas)
    k = len(alphas)
    return {n: (path[n] if n in path else t.expand(k, *t.shape).clone()) for n, t in state_a.items()}


def layerwise_curves(model: nn.Module, state_a: dict, state_b: dict, images: torch.Tensor, labels: torch.Tensor,
                     dataset: str, alphas, device: torch.device | None = None, progress=None) -> dict[str, dict]:
    """{layer: {"error": [...], "loss": [...]}} along each layer's path. Every layer's path starts at A (α=0), so
    A is evaluated once; the other (layer, α) points go in passes of `connectivity.models_per_pass`, only a
    pass's states ever built. `progress` (a tqdm, or anything with update(n)) advances by one per evaluation
    batch: `layerwise_batches`."""
    names, alphas = layer_names(state_a), np.asarray(alphas)
    at_a = alphas == 0
    points = ([None] if at_a.any() else []) + [(i, j) for i in range(len(names)) for j in np.flatnonzero(~at_a)]
    errors, losses = [], []
    batch = connectivity.eval_batch_size(model, images.shape[1:], device)  # once, for every pass
    per_pass = connectivity.models_per_pass(model, images.shape[1:], batch, device)
    for start in range(0, len(points), per_pass):
        chunk = points[start:start + per_pass]  # A first, then by layer: the stacks below keep that order
        moving = [point for point in chunk if point is not None]
        stacks = [{n: t.unsqueeze(0) for n, t in state_a.items()}] if len(moving) < len(chunk) else []
        stacks += [layer_path_states(state_a, state_b, names[layer], alphas[[j for i, j in moving if i == layer]])
                   for layer in sorted({i for i, _ in moving})]
        stacked = {n: torch.cat([s[n] for s in stacks]) for n in state_a}
        e, l = connectivity.evaluate_stack(model, stacked, images, labels, dataset, batch, device, progress)
        errors.append(e)
        losses.append(l)
    curves = {}
    for values, key in ((np.concatenate(errors), "error"), (np.concatenate(losses), "loss")):
        grid = np.empty((len(names), len(alphas)))
        grid[:, at_a] = values[0] if at_a.any() else 0
        grid[:, ~at_a] = values[int(at_a.any()):].reshape(len(names), -1)
        for i, name in enumerate(names):
            curves.setdefault(name, {})[key] = grid[i].tolist()
    return curves


def layerwise_batches(model: nn.Module, alphas, image_shape, n: int, device: torch.device | None = None) -> int:
    """The evaluation batches `layerwise_curves` runs for `model` on the α grid `alphas` and n images."""
    alphas = np.asarray(alphas)
    points = int((alphas == 0).any()) + len(layer_names(model.state_dict())) * int((alphas != 0).sum())
    return connectivity.eval_work(model, image_shape, points, n, device)


def layer_metrics(curves_by_split: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """{layer: {barrier_<split>, hybrid_error_<split>}} from {split: layerwise_curves(...)}."""
    out = {}
    for split, curves in curves_by_split.items():
        for layer, c in curves.items():
            m = out.setdefault(layer, {})
            m[f"barrier_{split}"] = round(connectivity.barrier(c["error"]), 6)
            m[f"hybrid_error_{split}"] = round(c["error"][-1], 6)
    return out
