"""Seeded augmentation: random translation and horizontal flip, drawn per (seed, epoch, sample index).

Stock FFCV transforms draw from numpy's global state inside numba (unseeded, thread-dependent), so
augmentation happens here, in torch, on the uint8 batch, from `seeds.sample_uniforms`.
"""
from __future__ import annotations

import torch

from . import seeds

MAX_SHIFT = 2  # pixels, each direction; vacated pixels are zero


def augment(images: torch.Tensor, indices: torch.Tensor, epoch: int, aug_seed: int) -> torch.Tensor:
    """uint8 (B, H, W, C) -> the same images shifted by up to MAX_SHIFT pixels and flipped with p = 1/2."""
    b, h, w, _ = images.shape
    u = torch.from_numpy(seeds.sample_uniforms(aug_seed, "augment", epoch, indices.cpu().numpy(), 3))
    u = u.to(images.device)
    span = 2 * MAX_SHIFT + 1
    dy = (u[:, 0] * span).long()  # offset of the crop in the padded image: 0 .. 2·MAX_SHIFT
    dx = (u[:, 1] * span).long()
    flip = u[:, 2] < 0.5
    padded = torch.nn.functional.pad(images, (0, 0, MAX_SHIFT, MAX_SHIFT, MAX_SHIFT, MAX_SHIFT))
    rows = dy[:, None] + torch.arange(h, device=images.device)
    cols = dx[:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[torch.arange(b, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
