"""The training loop on CUDA: the graphed step equals the eager one, divergence is read once per epoch with the
same outcome as on the CPU, and every precision is deterministic on one GPU.

Skipped without a GPU (run them through `device` when a task is lent one). `LMC_TEST_DEVICE=cpu` runs them on
the CPU, where there is no graph to compare (both runs take the CPU's path, and no graph replays): that checks
the tests themselves, not the GPU's bytes.
"""
import dataclasses
import os

import pytest
import torch

from lmc import models
from lmc.resume import Resume
from lmc.spec import Spec
from lmc.train import train_pairs

DEVICE = os.environ.get("LMC_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _train(spec: Spec, split, **kwargs):
    from lmc.device import select

    select(dataclasses.replace(spec, device=DEVICE))  # as the stages run: the numerics mode; on CUDA
    if DEVICE == "cuda":                              # deterministic algorithms and TF32 off, whatever ran before
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cuda.matmul.allow_tf32
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]
    model = models.build(models.arch_from_spec(spec))
    return train_pairs(spec, model, inits, split, device=torch.device(DEVICE), **kwargs)


def _same(a, b) -> bool:
    return all(torch.equal(a.state[n], b.state[n]) for n in a.state)


# batch 384 leaves a last batch of 160: two graphs; warm-up, cosine decay, clipping and spawning all move
@pytest.mark.parametrize("spec", [
    Spec(width=64, epochs=3, batch_size=384, pairs=2, warmup_epochs=1, schedule="cosine", grad_clip=1.0),
    Spec(optimizer="adam", lr=1e-3, width=64, epochs=3, batch_size=384, pairs=2, spawn_step=4, weight_decay=1e-4),
    Spec(model="cnn", channels=16, epochs=2, batch_size=500, augment=True, optimizer="adam", lr=1e-3),
], ids=["sgd", "adam-spawn", "cnn-augment"])
def test_the_graphed_step_gives_the_eager_steps_bytes(spec, mnist5k, monkeypatch):
    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda graph: replays.append(1) or replay(graph))
    graphed = _train(spec, mnist5k[0], graphs=True)
    graphed_replays, replays[:] = len(replays), []
    eager = _train(spec, mnist5k[0], graphs=False)
    # the graph ran: every step after each shape's warm-up and capture was a replay; the eager run (its spawn
    # trunk included) replayed none
    assert graphed_replays >= (spec.epochs * spec.steps_per_epoch - 4 if DEVICE == "cuda" else 0) and not replays
    assert graphed.status == eager.status == "ok"
    assert [(e.loss, e.acc) for e in graphed.history] == [(e.loss, e.acc) for e in eager.history]
    assert _same(graphed, eager)
    assert graphed.snapshot.step == spec.epochs * spec.steps_per_epoch


def test_divergence_is_read_at_the_epochs_end_with_the_cpus_outcome(mnist5k):
    # a linear net under warm-up: finite through epoch 1, diverged in epoch 2 (on this machine's CPU)
    spec = Spec(model="linear", width=64, epochs=4, batch_size=500, lr=3.0, warmup_epochs=4, device=DEVICE)
    here = _train(spec, mnist5k[0])
    inits = [models.init_model(spec, 0).state_dict()]
    on_cpu = train_pairs(spec, models.build(models.arch_from_spec(spec)), inits, mnist5k[0])
    assert on_cpu.status == here.status == "diverged"
    assert here.diverged_epoch == on_cpu.diverged_epoch > 0
    assert len(here.history) == len(on_cpu.history) and here.history[-1].diverged
    last = here.history[-1]
    assert any(not torch.isfinite(torch.tensor(v)) for v in last.loss)  # the first non-finite batch's losses


@pytest.mark.parametrize("precision", ["tf32", "bf16"] if DEVICE == "cuda" else ["bf16"])
def test_each_precision_is_deterministic_and_differs_from_fp32(precision, mnist5k):
    spec = Spec(width=256, epochs=2, batch_size=500, pairs=2, precision=precision, device=DEVICE)
    first, second = (_train(spec, mnist5k[0]) for _ in range(2))
    assert first.status == "ok" and _same(first, second)
    fp32 = _train(Spec(width=256, epochs=2, batch_size=500, pairs=2, device=DEVICE), mnist5k[0])
    assert not _same(first, fp32)  # the mode took effect
    assert all(t.dtype == torch.float32 for t in first.state.values())  # fp32 master weights
    if DEVICE == "cuda":
        assert not torch.backends.cuda.matmul.allow_tf32  # training's TF32 ends with training


@pytest.mark.parametrize("killed_after", [1, 2])
def test_a_run_killed_after_an_epoch_resumes_on_the_device_to_the_uninterrupted_bytes(killed_after, mnist5k, tmp_path,
                                                                                       capsys):
    """lmc/resume.py on the device: the graphed step, Adam's state and the warm-up schedule taken up from the
    saved file (device-free tensors) give the bytes of the run that was never stopped."""
    spec = Spec(optimizer="adam", lr=1e-3, width=64, epochs=3, batch_size=384, pairs=2, warmup_epochs=1,
                schedule="cosine", augment=True)
    reference = _train(spec, mnist5k[0])
    key = {"stage": "test", "spec": spec.record()}

    class Killed(Exception):
        pass

    first = Resume(tmp_path / "train.pt", key, every_s=0)
    save = first.save

    def save_then_kill(step, state, optimizer, history):
        save(step, state, optimizer, history)
        if len(history) == killed_after:
            raise Killed  # right after the epoch's progress was saved

    first.save = save_then_kill
    with pytest.raises(Killed):
        _train(spec, mnist5k[0], resume=first)
    resumed = _train(spec, mnist5k[0], resume=Resume(tmp_path / "train.pt", key, every_s=0))
    assert f"continuing at step {killed_after * spec.steps_per_epoch}" in capsys.readouterr().err
    assert _same(resumed, reference) and resumed.history == reference.history
