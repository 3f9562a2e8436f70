import numpy as np
import torch

from lmc import seeds
from lmc.augment import MAX_SHIFT, augment


def batch(n=64, h=28, w=28, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, h, w, c), generator=g, dtype=torch.uint8), torch.arange(100, 100 + n)


def test_draws_are_pure_functions_of_seed_epoch_and_index():
    u = seeds.sample_uniforms(7, "augment", 3, [5, 9, 11], 3)
    assert np.array_equal(u[1:2], seeds.sample_uniforms(7, "augment", 3, [9], 3))  # batch composition
    assert np.array_equal(u, seeds.sample_uniforms(7, "augment", 3, [5, 9, 11], 3))  # rerun
    assert not np.array_equal(u, seeds.sample_uniforms(7, "augment", 4, [5, 9, 11], 3))  # next epoch
    assert not np.array_equal(u, seeds.sample_uniforms(8, "augment", 3, [5, 9, 11], 3))  # other twin


def test_uniforms_are_uniform():
    u = seeds.sample_uniforms(1, "augment", 0, np.arange(20000), 3)
    assert 0 <= u.min() and u.max() < 1
    assert np.allclose(u.mean(0), 0.5, atol=0.01) and np.allclose((u < 0.5).mean(0), 0.5, atol=0.015)


def test_augmenting_a_sample_does_not_depend_on_its_batch():
    images, index = batch()
    whole = augment(images, index, epoch=2, aug_seed=43)
    for part in (slice(0, 10), slice(37, 64)):
        assert torch.equal(whole[part], augment(images[part], index[part], epoch=2, aug_seed=43))


def test_flip_and_shift_rates_and_content():
    images, index = batch(n=2000)
    out = augment(images, index, epoch=0, aug_seed=1)
    flipped = np.mean([torch.equal(o, i.flip(1)) for o, i in zip(out, images)])
    unchanged = np.mean([torch.equal(o, i) for o, i in zip(out, images)])
    # unchanged = no shift and no flip: (1/5)^2 · 1/2 = 2%; flipped without shift: also 2%
    assert 0.01 < unchanged < 0.035 and 0.01 < flipped < 0.035
    zeros = (out == 0).flatten(1).float().sum(1)  # vacated border pixels, at most MAX_SHIFT rows and cols
    assert zeros.max() <= 28 * 2 * MAX_SHIFT * 2 and out.dtype == torch.uint8
    assert not torch.equal(out, augment(images, index, epoch=1, aug_seed=1))
