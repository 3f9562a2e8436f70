"""The one place where randomness is derived.

Every random stream is a pure function of (base seed, purpose, counters), through numpy's
SeedSequence. Never `seed + epoch`: with that rule (open_lth, FFCV's RANDOM order) twins with seeds s
and s+1 replay each other's orders one epoch apart. Purposes are hashed with crc32, not Python's
salted `hash()`, so a derived seed is the same in every process.
"""
from __future__ import annotations

import zlib

import numpy as np


def derive_seed(base: int, purpose: str, *counters: int) -> int:
    """A 63-bit seed for `purpose` (a fixed string) at `counters` (epoch, sample index, ...)."""
    key = (zlib.crc32(purpose.encode()), *(int(c) for c in counters))
    state = np.random.SeedSequence(entropy=int(base), spawn_key=key).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def rng(base: int, purpose: str, *counters: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(base, purpose, *counters))


def epoch_order(order_seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of n samples that a twin with `order_seed` sees in `epoch`."""
    return rng(order_seed, "data-order", epoch).permutation(n)


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def sample_uniforms(base: int, purpose: str, epoch: int, indices, draws: int) -> np.ndarray:
    """Uniforms in [0, 1), shape (len(indices), draws), each a pure function of (base, purpose, epoch, index, j).

    A counter-based hash (splitmix64) keyed per epoch: no generator state, so the draws of a sample do
    not depend on which batch or worker handles it, and they change from epoch to epoch.
    """
    key = np.uint64(derive_seed(base, purpose, epoch))
    idx = np.asarray(indices, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = key + (idx[:, None] * np.uint64(draws) + np.arange(draws, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def pair_seed(base: int, purpose: str, pair: int) -> int:
    """The seed of twin pair `pair` for `purpose` ("init", "order-a", ...): pair 0 keeps `base` itself, so a
    one-pair experiment is the paper's twin experiment with the seeds as written in params.yaml; every other
    pair derives its own."""
    return int(base) if pair == 0 else derive_seed(base, f"pair-{purpose}", pair)
