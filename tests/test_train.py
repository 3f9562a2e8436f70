import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from lmc import data, models
from lmc.spec import Spec
from lmc.train import clip_per_model, lr_at, make_optimizer, train_twins


def twin_loaders(betons, spec):
    return [data.twin_loader(betons["train"], spec.batch_size, s) for s in (spec.order_seed_a, spec.order_seed_b)]


def train(betons, spec, **kw):
    return train_twins(spec, models.init_model(spec), twin_loaders(betons, spec),
                       [spec.aug_seed_a, spec.aug_seed_b], **kw)


def train_alone(betons, spec, order_seed):
    """The reference: one ordinary nn.Module, one optimizer, its own loader."""
    model = models.init_model(spec)
    opt = make_optimizer(spec, list(model.parameters()))
    loader, step = data.twin_loader(betons["train"], spec.batch_size, order_seed), 0
    for _ in range(spec.epochs):
        for images, labels, _ in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(spec, step, len(loader))
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.normalize(images, spec.dataset)), labels.long()).backward()
            if spec.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            step += 1
    return model


@pytest.mark.parametrize("options", [
    {"optimizer": "sgd", "lr": 0.1, "warmup_epochs": 1},
    {"optimizer": "adam", "lr": 0.005, "warmup_epochs": 1},
    {"epochs": 1, "weight_decay": 1e-3, "grad_clip": 0.5, "schedule": "cosine"},
])
def test_lockstep_twins_equal_twins_trained_alone(betons, tiny_spec, options):
    spec = dataclasses.replace(tiny_spec, **options)
    result = train(betons, spec)
    for i, seed in enumerate((spec.order_seed_a, spec.order_seed_b)):
        for name, w in train_alone(betons, spec, seed).state_dict().items():
            torch.testing.assert_close(result.state[name][i].detach(), w, atol=2e-5, rtol=1e-4)


def test_twins_start_identical_and_end_different(betons, tiny_spec):
    spec = dataclasses.replace(tiny_spec, epochs=1)
    init = models.init_model(spec)
    seen = []
    result = train_twins(spec, init, twin_loaders(betons, spec), on_epoch=seen.append)
    assert result.status == "ok" and len(seen) == 1 and len(result.history) == 1
    w = result.state["layers.0.weight"]
    assert not torch.equal(w[0], w[1])
    zero = train_twins(dataclasses.replace(spec, lr=1e-30), init, twin_loaders(betons, spec))
    for name, t in init.state_dict().items():  # with a vanishing step both twins stay at Θ0
        torch.testing.assert_close(zero.state[name][0], t)
        torch.testing.assert_close(zero.state[name][1], t)


def test_training_is_bit_reproducible_across_reruns_and_thread_counts(betons, tiny_spec):
    runs = [train(betons, tiny_spec, threads=t).state for t in (2, 2, 1)]
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), f"{name} differs between reruns"
        assert torch.equal(runs[0][name], runs[2][name]), f"{name} differs between 1 and 2 threads"


def test_augmentation_is_seeded_per_twin(betons, tiny_spec):
    spec = dataclasses.replace(tiny_spec, augment=True, epochs=1)
    runs = [train(betons, spec).state, train(betons, spec).state,
            train(betons, dataclasses.replace(spec, augment=False)).state,
            train(betons, dataclasses.replace(spec, aug_seed_b=7)).state]
    w = [r["layers.0.weight"] for r in runs]
    assert torch.equal(w[0], w[1])  # rerun: same bytes
    assert not torch.equal(w[0], w[2])  # augmentation changes training
    assert torch.equal(w[0][0], w[3][0]) and not torch.equal(w[0][1], w[3][1])  # B's seed moves B only


def test_divergence_is_reported_not_raised(betons, tiny_spec):
    result = train(betons, dataclasses.replace(tiny_spec, lr=1e6, epochs=3))
    assert result.status == "diverged" and result.diverged_epoch is not None
    last = result.history[-1]
    assert last.diverged and last.epoch == result.diverged_epoch and not all(map(math.isfinite, last.loss))


def test_cosine_decays_to_zero_after_warmup():
    spec = Spec(lr=0.1, warmup_epochs=1, epochs=3, schedule="cosine")
    assert lr_at(spec, 9, 10) == pytest.approx(0.1)
    assert lr_at(spec, 10, 10) == pytest.approx(0.1)
    assert lr_at(spec, 20, 10) == pytest.approx(0.05)
    assert lr_at(spec, 30, 10) == pytest.approx(0.0, abs=1e-12)


def test_gradient_clipping_is_per_twin():
    g = [torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.tensor([[0.0], [0.0]])]
    params = [torch.zeros_like(t, requires_grad=True) for t in g]
    for p, t in zip(params, g):
        p.grad = t.clone()
    clip_per_model(params, 1.0)
    torch.testing.assert_close(params[0].grad, torch.tensor([[0.6, 0.8], [0.3, 0.4]]), atol=1e-6, rtol=0)


def test_warmup_is_linear_per_step():
    spec = Spec(lr=0.1, warmup_epochs=2, epochs=5)
    assert lr_at(spec, 0, 10) == pytest.approx(0.005)
    assert lr_at(spec, 9, 10) == pytest.approx(0.05)
    assert lr_at(spec, 19, 10) == lr_at(spec, 100, 10) == pytest.approx(0.1)
    assert lr_at(Spec(lr=0.1), 0, 10) == 0.1


def test_cpu_kernels_are_pinned_before_torch_loads():
    """Importing lmc first pins torch's CPU dispatch and MKL's numerics to AVX2, whatever the machine offers."""
    code = ("import lmc, os, torch; "
            "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")})
    assert proc.stdout.split() == ["AVX2", "AVX2"], proc.stderr
