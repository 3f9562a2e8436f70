import pytest
import torch

from lmc import models
from lmc.spec import Spec


def test_init_is_a_pure_function_of_the_seed():
    a, b, c = (models.init_model(Spec(init_seed=s)) for s in (0, 0, 1))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


@pytest.mark.parametrize("depth,count", [(1, 784 * 10 + 10), (2, 784 * 64 + 64 + 64 * 10 + 10),
                                         (3, 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10)])
def test_mlp_depth_counts_weight_layers(depth, count):
    model = models.init_model(Spec(depth=depth, width=64))
    assert len(model.layers) == depth and sum(p.numel() for p in model.parameters()) == count


def test_leaky_relu_slope_one_is_linear():
    model = models.init_model(Spec(depth=3, width=16, negative_slope=1.0))
    x, y = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    assert torch.allclose(model(x + y) + model(torch.zeros_like(x)), model(x) + model(y), atol=1e-5)


def test_stacked_forward_matches_each_model():
    ms = [models.init_model(Spec(width=32, init_seed=s)) for s in range(3)]
    stacked = models.stack_states([m.state_dict() for m in ms])
    x = torch.randn(3, 5, 1, 28, 28)
    out = models.stacked_forward(ms[0], stacked, x)
    shared = models.stacked_forward(ms[0], stacked, x[0], shared_input=True)
    for i, m in enumerate(ms):
        assert torch.allclose(out[i], m(x[i]), atol=1e-5)
        assert torch.allclose(shared[i], m(x[0]), atol=1e-5)


def test_checkpoint_round_trip_and_bytes(tmp_path):
    spec = Spec(width=16)
    model = models.init_model(spec)
    arch = models.arch_from_spec(spec)
    for name in ("a.pt", "b.pt"):
        models.save_checkpoint(tmp_path / name, arch, model.state_dict(), note="x")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    ckpt = models.load_checkpoint(tmp_path / "a.pt")
    assert ckpt.arch == arch and ckpt.meta == {"note": "x"}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt.model.state_dict().items())


def test_bad_checkpoints_name_the_file_and_the_stage(tmp_path):
    with pytest.raises(models.CheckpointError, match=r"a.pt is missing; run `dvc repro init`"):
        models.load_checkpoint(tmp_path / "a.pt", stage="init")
    spec = Spec(width=16)
    models.save_checkpoint(tmp_path / "a.pt", models.arch_from_spec(spec), models.init_model(spec).state_dict())
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((tmp_path / "a.pt").read_bytes()[:300])
    with pytest.raises(models.CheckpointError, match=r"damaged.pt is damaged .*dvc repro -f train"):
        models.load_checkpoint(damaged)
    wrong = models.arch_from_spec(Spec(width=8))
    models.save_checkpoint(tmp_path / "wrong.pt", wrong, models.init_model(spec).state_dict())
    with pytest.raises(models.CheckpointError, match=r"wrong.pt does not fit its architecture"):
        models.load_checkpoint(tmp_path / "wrong.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(models.CheckpointError, match="not an lmc checkpoint"):
        models.load_checkpoint(tmp_path / "foreign.pt")
