import dataclasses

import pytest

from lmc import cost, studies
from lmc.spec import Spec


def test_training_flops_are_counted_forward_and_backward_on_the_model():
    spec = Spec(dataset="mnist", width=512)  # 784 -> 512 -> 10
    macs = [784 * 512, 512 * 10]
    assert cost.forward_flops(spec) == 2 * sum(macs)
    # weight gradients of both layers, the input gradient of the second only (the images need none)
    assert cost.train_flops(spec) == 2 * (2 * sum(macs) + macs[1])


def test_hours_follow_the_measured_rate_of_the_device_and_precision():
    spec = Spec(dataset="mnist", width="auto", batch_size=1024, epochs=200, pairs=3, device="cuda")
    hours = {p: cost.cell_hours(dataclasses.replace(spec, precision=p)) for p in ("fp32", "tf32", "bf16")}
    assert hours["fp32"] > hours["tf32"] > hours["bf16"] > 0
    rates = {p: cost.RATES["cuda", p] for p in ("fp32", "bf16")}
    assert hours["fp32"] / hours["bf16"] == pytest.approx(rates["bf16"].flops / rates["fp32"].flops)
    small = dataclasses.replace(spec, width=16, pairs=1)  # a tiny model is bound by the per-step floor
    steps = small.epochs * small.steps_per_epoch
    assert cost.cell_hours(small) * 3600 == pytest.approx(steps * rates["fp32"].step_floor)
    # a precision not measured on a device falls back to its fp32 rate, and says so
    assert cost.cell_hours(Spec(precision="bf16")) == cost.cell_hours(Spec())
    assert "not measured" in cost.basis("cpu", "bf16")


def test_the_report_lists_every_study_at_both_scales():
    text = cost.report(studies.load())
    for study in studies.load()["studies"]:
        assert text.count(f"| {study} |") == 2  # the paper-scale row and the cpu-scale row
    assert "fp32 hours | tf32 hours | bf16 hours" in text


def test_the_command_takes_no_arguments_and_help_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv, code in ((["--help"], 0), (["table1"], 2)):
        with pytest.raises(SystemExit) as exit_:
            cost.main(argv)
        assert exit_.value.code == code
    assert "usage: python -m lmc.cost" in capsys.readouterr().out and not (tmp_path / cost.REPORT).exists()
