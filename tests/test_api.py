import shutil

import pytest
import torch
import yaml

from lmc import api, models, paths
from lmc.spec import Spec


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
