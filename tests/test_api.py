import shutil

import pytest
import torch
import yaml

from lmc import api, models, paths
from lmc.spec import Spec
from .fixtures import Counter, run_stage_stderr, shows_a_bar



@pytest.fixture
def run_dir(tmp_path, betons):
    """A run laid out as the stages leave it: params, betons, Θ0 and two twins."""
    spec = Spec(width=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"width": 16}))
    for split, path in betons.items():
        (tmp_path / paths.BETONS[split]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / paths.BETONS[split])
    arch = models.arch_from_spec(spec)
    models.save_checkpoint(tmp_path / paths.init(0), arch, models.init_model(spec).state_dict())
    for i, side in enumerate("ab"):
        other = models.init_model(Spec(width=16, init_seed=i + 1))
        models.save_checkpoint(tmp_path / paths.twin(0, side), arch, other.state_dict(), status="ok")
    return tmp_path


def test_load_run_and_split(run_dir):
    run = api.load_run(run_dir)
    assert run.status == "ok" and run.dataset == "mnist5k"
    assert torch.equal(run.init.layers[0].weight, models.init_model(Spec(width=16)).layers[0].weight)
    images, labels = api.load_split("test", run_dir)
    assert images.shape == (1000, 28, 28, 1) and images.dtype == torch.uint8 and labels.shape == (1000,)


def test_barriers_of_a_model_with_itself_are_zero_and_with_another_are_consistent(run_dir):
    run = api.load_run(run_dir)
    images, labels = api.load_split("test", run_dir)
    same = api.barriers(run.a, run.a, images, labels, run.dataset, alphas=3)
    assert same["barrier"] == 0 and same["loss_barrier"] == 0 and same["acc_a"] == same["acc_b"]
    other = api.barriers(run.a, run.b, images, labels, run.dataset)
    assert len(other["alpha"]) == 11 and other["barrier"] == max(other["error"]) - (other["error"][0] + other["error"][-1]) / 2
    mid = api.interpolate(run.a, run.b, 0.5)
    torch.testing.assert_close(mid.layers[1].bias, (run.a.layers[1].bias + run.b.layers[1].bias) / 2)


@pytest.mark.parametrize("options", [{}, {"pairs": 3, "refine_alphas": 2},
                                     {"pairs": 2, "alphas": 2, "refine_alphas": 3}])  # 2 α: nothing to refine
def test_experiment_curves_count_curve_batches_and_give_the_same_curves(run_dir, options):
    spec = Spec(width=16, **options)
    run = api.load_run(run_dir)
    splits = {split: api.load_split(split, run_dir) for split in paths.BETONS}
    twins = [(run.a.state_dict(), run.b.state_dict())] * spec.pairs
    counter = Counter()
    counted = api.experiment_curves(spec, run.a, twins, splits, progress=counter)
    assert counter.n == api.curve_batches(spec) == api.curve_batches(spec, {s: len(l) for s, (_, l) in splits.items()})
    assert counted == api.experiment_curves(spec, run.a, twins, splits)  # counting changes nothing


def test_run_experiment_counts_its_steps_then_its_batches(betons):
    spec = Spec(width=16, epochs=1, batch_size=1000, pairs=2, spawn_step=2)  # the trunk trained here is not counted
    counter = Counter()
    result = api.run_experiment(spec, betons["train"], betons["test"], progress=counter)
    assert result["status"] == "ok" and counter.n == api.experiment_work(spec) == 4 - 2 + 3 * (4 + 1)


@pytest.mark.parametrize("stage", ["interpolate", "layerwise"])
def test_evaluation_stages_show_a_bar_on_a_terminal_and_nothing_off_one(run_dir, stage):
    (run_dir / "params.yaml").write_text(yaml.safe_dump({"width": 16, "refine_alphas": 2}))
    out = run_dir / (paths.CURVES if stage == "interpolate" else paths.LAYERWISE)
    status, stderr = run_stage_stderr(run_dir, stage, tty=True)
    assert status == 0 and shows_a_bar(stderr) and f"{stage}: 100%|" in stderr, stderr
    on_terminal = out.read_bytes()
    status, stderr = run_stage_stderr(run_dir, stage, tty=False)
    assert status == 0 and stderr == ""
    assert out.read_bytes() == on_terminal
