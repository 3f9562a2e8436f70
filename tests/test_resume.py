"""Resumable training (lmc/resume.py): a run interrupted after any epoch and taken up again gives the bytes of
an uninterrupted run; a resume file made for other settings or code, or damaged, is discarded with one line.
The stage killed for real (SIGKILL, SIGINT) and resumed through `dvc repro`: tests/test_interrupt.py."""
import dataclasses

import pytest
import torch

from lmc import models
from lmc.resume import EVERY_ENV, Resume
from lmc.spec import Spec, SpecError
from lmc.train import train_pairs, twin_state

SPECS = {
    "sgd": Spec(width=32, epochs=4, batch_size=500, pairs=2),
    "adam-augment-warmup": Spec(width=32, epochs=4, batch_size=500, optimizer="adam", lr=0.001, augment=True,
                                warmup_epochs=1, schedule="cosine"),
    "spawn-clip": Spec(width=32, epochs=4, batch_size=500, spawn_step=3, grad_clip=1.0),
}


class Killed(Exception):
    pass


def run(spec, split, **kw):
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]
    return train_pairs(spec, models.build(models.arch_from_spec(spec)), inits, split, **kw)


def key(spec):
    return {"stage": "test", "spec": spec.record()}


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("killed_after", [1, 3])
def test_a_resumed_run_gives_the_uninterrupted_bytes(tmp_path, mnist5k, name, killed_after, capsys):
    spec, split = SPECS[name], mnist5k[0]
    reference = run(spec, split)

    def kill(stats):
        if stats.epoch + 1 == killed_after:
            raise Killed  # after the epoch's progress was saved (every_s=0: every epoch)
    path = tmp_path / "train.pt"
    first = Resume(path, key(spec), every_s=0)
    first.save = _saving_then(first.save, kill)
    with pytest.raises(Killed):
        run(spec, split, resume=first)
    assert path.exists()

    seen = []
    resumed = run(spec, split, resume=Resume(path, key(spec), every_s=0), on_epoch=seen.append)
    assert f"continuing at step {killed_after * spec.steps_per_epoch}" in capsys.readouterr().err
    for k in reference.state:
        assert torch.equal(resumed.state[k], reference.state[k]), k
    assert resumed.history == reference.history == seen  # the earlier epochs replayed through on_epoch
    for side in "ab":
        a, b = twin_state(resumed, 0, side), twin_state(reference, 0, side)
        assert all(torch.equal(a[n], b[n]) for n in a)


def _saving_then(save, then):
    """Resume.save, then `then(the last epoch's stats)`: a kill that lands right after a save."""
    def wrapped(step, state, optimizer, history):
        save(step, state, optimizer, history)
        from lmc.train import EpochStats
        then(EpochStats(**history[-1]))
    return wrapped


def test_other_settings_or_code_or_a_damaged_file_start_over_with_one_line(tmp_path, capsys):
    spec = SPECS["sgd"]
    path = tmp_path / "train.pt"
    Resume(path, key(spec), every_s=0).save(3, {"w": torch.zeros(2)}, {"state": {}, "param_groups": []}, [])
    other = Resume(path, key(dataclasses.replace(spec, lr=0.2)))
    assert other.load() is None and not path.exists()
    assert capsys.readouterr().err.strip() == f"resume: {path} was saved for other spec; discarded, starting over"

    stale = Resume(path, key(spec), every_s=0)
    stale.save(3, {"w": torch.zeros(2)}, {"state": {}, "param_groups": []}, [])
    code_changed = Resume(path, key(spec))
    code_changed.key["code"] = "0" * 64  # what the key holds after any edit to the lmc package
    assert code_changed.load() is None and "saved for other code" in capsys.readouterr().err

    path.write_bytes(b"half a file")
    assert Resume(path, key(spec)).load() is None and not path.exists()
    assert "is damaged" in capsys.readouterr().err


def test_progress_is_saved_at_most_every_interval(tmp_path, mnist5k):
    spec, path = SPECS["sgd"], tmp_path / "train.pt"
    resume = Resume(path, key(spec), every_s=3600)
    saves = []
    resume.save = lambda *a: saves.append(a[0])
    run(spec, mnist5k[0], resume=resume)
    assert saves == []  # an hour between saves: none in a run of seconds
    resume = Resume(path, key(spec), every_s=0)
    resume.save = lambda *a: saves.append(a[0])
    run(spec, mnist5k[0], resume=resume)
    assert saves == [spec.steps_per_epoch * e for e in (1, 2, 3)]  # not after the last epoch: the result is


@pytest.mark.parametrize("value", ["5min", "nan", "-1", "inf", ""])
def test_a_save_interval_that_is_no_number_of_seconds_is_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv(EVERY_ENV, value)
    with pytest.raises(SpecError, match=f"{EVERY_ENV}='{value}' is not a number of seconds >= 0"):
        Resume(tmp_path / "train.pt", {"stage": "test"})
    monkeypatch.setenv(EVERY_ENV, "0")
    assert Resume(tmp_path / "train.pt", {"stage": "test"}).every_s == 0
