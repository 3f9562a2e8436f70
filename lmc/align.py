"""Permutation alignment by weight matching (Ainsworth et al. 2023, "Git Re-Basin", Algorithm 1).

Permuting a hidden layer's units (its weight rows and bias, and the next layer's weight columns) leaves the
function unchanged. Two models from different inits usually sit in different permutations; weight matching
picks, for each hidden layer, the permutation of B's units that maximizes Σ_l <W_A,l, W_B,l'>, one layer at
a time (a linear assignment) with the others fixed, until a full pass changes nothing. Implemented for the
`mlp` and `linear` models (state keys layers.<l>.weight / .bias).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from . import seeds

MAX_PASSES = 100


def _layers(state: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    if depth < 2 or set(state) != {f"layers.{i}.{p}" for i in range(depth) for p in ("weight", "bias")}:
        raise ValueError("weight matching needs an mlp or linear state with at least one hidden layer")
    return [(state[f"layers.{i}.weight"].double().cpu(), state[f"layers.{i}.bias"].double().cpu())
            for i in range(depth)]


def permute(state: dict, perms: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """`state` with hidden layer l's units reordered by perms[l] (unit j of the result = unit perms[l][j])."""
    out = dict(state)
    for i, perm in enumerate(perms):
        p = torch.as_tensor(perm, dtype=torch.long)
        out[f"layers.{i}.weight"] = out[f"layers.{i}.weight"][p]
        out[f"layers.{i}.bias"] = out[f"layers.{i}.bias"][p]
        out[f"layers.{i + 1}.weight"] = out[f"layers.{i + 1}.weight"][:, p]
    return {k: v.contiguous() for k, v in out.items()}


def weight_matching(state_a: dict, state_b: dict, seed: int = 0) -> list[np.ndarray]:
    """The permutations of B's hidden layers that match B's weights to A's; the order in which layers are
    visited in each pass comes from `seed` (the result can depend on it when the problem has ties)."""
    la, lb = _layers(state_a), _layers(state_b)
    hidden = len(la) - 1
    perms = [np.arange(lb[i][0].shape[0]) for i in range(hidden)]
    for sweep in range(MAX_PASSES):
        changed = False
        for i in seeds.rng(seed, "weight-matching", sweep).permutation(hidden):
            (wa, ba), (wb, bb) = la[i], lb[i]
            w_in = wb if i == 0 else wb[:, torch.as_tensor(perms[i - 1])]  # B's layer i, inputs already matched
            nwa, nwb = la[i + 1][0], lb[i + 1][0]
            nwb = nwb if i + 1 == hidden else nwb[torch.as_tensor(perms[i + 1])]  # next layer, outputs matched
            score = wa @ w_in.T + torch.outer(ba, bb) + nwa.T @ nwb  # score[r, c]: A's unit r vs B's unit c
            _, cols = linear_sum_assignment(score.numpy(), maximize=True)
            gain = score[np.arange(len(cols)), cols].sum() - score[np.arange(len(cols)), perms[i]].sum()
            if gain > 1e-12 * score.abs().sum():
                perms[i], changed = cols, True
        if not changed:
            break
    return perms


def align(state_a: dict, state_b: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """B's weights with its hidden units permuted onto A's (the same function as B)."""
    return permute(state_b, weight_matching(state_a, state_b, seed))
