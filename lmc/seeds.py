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
