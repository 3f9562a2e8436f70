import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from lmc import data, models
from lmc.spec import Spec
from lmc.models import CheckpointError
from lmc.step import clip_per_model, make_optimizer
from lmc.train import load_snapshot, lr_at, save_snapshot, train_pairs, train_trunks, train_twins, twin_state
from .fixtures import Counter



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
    {"optimizer": "adam", "lr": 0.005, "grad_clip": 0.5, "cpu_step": "stacked"},
    {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-3, "cpu_step": "stacked"},
])
def test_lockstep_twins_equal_twins_trained_alone(betons, tiny_spec, options):
    """Either CPU step (per-model, the default; the earlier stacked one) trains each twin as it would alone."""
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


def test_training_is_bit_reproducible_across_reruns(betons, tiny_spec):
    """Same bytes at the same thread count. (The CPU step's per-model matmuls may sum in another order at
    another thread count: the portable mode pins it, tests/test_numerics.py shows any OMP_NUM_THREADS agrees.)"""
    runs = [train(betons, tiny_spec).state for _ in range(2)]
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), f"{name} differs between reruns"


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
    """Model 0's gradients (norm 5 over its two tensors) are scaled to norm 1; model 1's (norm 0.5) are kept."""
    grads = [[torch.tensor([3.0, 0.0]), torch.tensor([4.0])], [torch.tensor([0.3, 0.0]), torch.tensor([0.4])]]
    clip_per_model(torch.tensor([5.0, 0.5]), grads, 1.0)
    torch.testing.assert_close(torch.cat(grads[0]), torch.tensor([0.6, 0.0, 0.8]), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat(grads[1]), torch.tensor([0.3, 0.0, 0.4]), atol=1e-6, rtol=0)


def test_warmup_is_linear_per_step():
    spec = Spec(lr=0.1, warmup_epochs=2, epochs=5)
    assert lr_at(spec, 0, 10) == pytest.approx(0.005)
    assert lr_at(spec, 9, 10) == pytest.approx(0.05)
    assert lr_at(spec, 19, 10) == lr_at(spec, 100, 10) == pytest.approx(0.1)
    assert lr_at(Spec(lr=0.1), 0, 10) == 0.1


def test_native_numerics_keep_the_earlier_avx2_pins():
    """In the native mode, importing lmc first pins torch's CPU dispatch and MKL's branch to AVX2, as the results
    made before the numerics modes (the portable mode: tests/test_numerics.py)."""
    from lmc import numerics
    code = ("import lmc, os, torch; "
            "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])")
    env = {k: v for k, v in numerics.unpinned_environ().items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, numerics.ENV: "native"})
    assert proc.stdout.split() == ["AVX2", "AVX2"], proc.stderr


def pairs_run(betons, spec, **kw):
    split = data.read_split(betons["train"])
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]
    return train_pairs(spec, models.build(models.arch_from_spec(spec)), inits, split, **kw), inits, split


def test_pair_zero_of_several_is_the_one_pair_experiment(betons, tiny_spec):
    one, _, _ = pairs_run(betons, tiny_spec)
    three, inits, _ = pairs_run(betons, dataclasses.replace(tiny_spec, pairs=3))
    for side in "ab":
        a, b = twin_state(one, 0, side), twin_state(three, 0, side)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the other pairs start from their own Θ0 and differ from pair 0
    assert not torch.equal(inits[1]["layers.0.weight"], inits[0]["layers.0.weight"])
    assert not torch.equal(twin_state(three, 1, "a")["layers.0.weight"], twin_state(three, 0, "a")["layers.0.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_spawned_twins_share_the_trunk_and_a_never_notices(betons, tiny_spec, optimizer):
    spec = dataclasses.replace(tiny_spec, epochs=3, pairs=2, optimizer=optimizer,
                               lr=0.1 if optimizer == "sgd" else 0.001)
    base, _, _ = pairs_run(betons, spec)
    spawned, _, _ = pairs_run(betons, dataclasses.replace(spec, spawn_step=11))  # 8 steps/epoch: mid-epoch
    for pair in range(2):
        a0, a11 = twin_state(base, pair, "a"), twin_state(spawned, pair, "a")
        assert all(torch.equal(a0[k], a11[k]) for k in a0), "A must continue exactly as if it never branched"
        b0, b11 = twin_state(base, pair, "b"), twin_state(spawned, pair, "b")
        assert not torch.equal(b0["layers.0.weight"], b11["layers.0.weight"])
    assert spawned.history[0].epoch == 1  # the twins' own steps start in epoch 2


def test_trunk_snapshots_serve_every_k_with_the_same_bytes(betons, tiny_spec, tmp_path):
    spec = dataclasses.replace(tiny_spec, epochs=3, pairs=2)
    split = data.read_split(betons["train"])
    model = models.build(models.arch_from_spec(spec))
    inits = [models.init_model(spec, i).state_dict() for i in range(2)]
    counter = Counter()
    snapshots = train_trunks(spec, model, inits, split, [3, 11], progress=counter)  # one run, stopped twice
    assert counter.n == 11  # a progress bar's total: the largest k
    for k in (3, 11):
        path = tmp_path / f"step{k}.pt"
        save_snapshot(path, snapshots[k], {"k": "v"})
        loaded = load_snapshot(path, {"k": "v"}, stage="trunk")
        reused = train_pairs(dataclasses.replace(spec, spawn_step=k), model, inits, split, trunk=loaded)
        fresh = train_pairs(dataclasses.replace(spec, spawn_step=k), model, inits, split)
        assert all(torch.equal(reused.state[n], fresh.state[n]) for n in fresh.state)
    with pytest.raises(CheckpointError, match=r"other settings \(k\); rerun `dvc repro trunk`"):
        load_snapshot(tmp_path / "step3.pt", {"k": "other"}, stage="trunk")
    (tmp_path / "step11.pt").write_bytes(b"not a snapshot")
    with pytest.raises(CheckpointError, match="damaged"):
        load_snapshot(tmp_path / "step11.pt", {"k": "v"}, stage="trunk")


def test_resuming_from_a_snapshot_equals_training_straight_through(betons, tiny_spec):
    spec = dataclasses.replace(tiny_spec, epochs=3, optimizer="adam", lr=0.001)
    loaders = twin_loaders(betons, spec)
    straight = train_twins(spec, models.init_model(spec), loaders)
    half = train_twins(spec, models.init_model(spec), twin_loaders(betons, spec), stop_step=13)
    resumed = train_twins(spec, models.init_model(spec), twin_loaders(betons, spec), start=half.snapshot)
    assert half.snapshot.step == 13 and resumed.snapshot.step == straight.snapshot.step == 24
    assert all(torch.equal(straight.state[n], resumed.state[n]) for n in straight.state)


def test_a_trunk_that_diverges_makes_the_run_unstable_not_a_crash(betons, tiny_spec):
    spec = dataclasses.replace(tiny_spec, pairs=2, spawn_step=5, lr=1e6)
    result, _, _ = pairs_run(betons, spec)
    assert result.status == "diverged" and result.diverged_epoch == 0
    assert next(iter(result.state.values())).shape[0] == 4  # both twins of each pair: the trunk
    split = data.read_split(betons["train"])
    with pytest.raises(FloatingPointError, match="the trunk diverged before step 5"):
        train_trunks(spec, models.build(models.arch_from_spec(spec)), [models.init_model(spec, i).state_dict()
                     for i in range(2)], split, [5])


def test_cpu_training_never_imports_torch_dynamo(betons, tiny_spec):
    """torch.optim's compile hooks import torch._dynamo (seconds of start-up); the CPU's optimizers leave them out,
    snapshots (state_dict, load_state_dict) included."""
    code = ("import sys, dataclasses; from lmc import data, models; from lmc.spec import Spec; "
            "from lmc.train import train_twins\n"
            f"for opt in ('sgd', 'adam'):\n"
            f"    spec = Spec(width=8, epochs=2, batch_size=500, optimizer=opt)\n"
            f"    loaders = [data.twin_loader({str(betons['train'])!r}, 500, s) for s in (1, 2)]\n"
            f"    first = train_twins(spec, models.init_model(spec), loaders, stop_step=3)\n"
            f"    train_twins(spec, models.init_model(spec), loaders, start=first.snapshot)\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
