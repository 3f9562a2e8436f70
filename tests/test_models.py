import dataclasses

import pytest
import torch

from lmc import models
from lmc.spec import MODELS, Spec


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
    arch = models.arch_from_spec(spec)
    assert models.load_checkpoint(tmp_path / "a.pt", stage="init", arch=arch).arch == arch
    with pytest.raises(models.CheckpointError, match=r"a.pt was built for another architecture than params.yaml's "
                                                     r"\(width 16 not 32\); rerun `dvc repro -f init`"):
        models.load_checkpoint(tmp_path / "a.pt", stage="init", arch=models.arch_from_spec(Spec(width=32)))
    wrong = models.arch_from_spec(Spec(width=8))
    models.save_checkpoint(tmp_path / "wrong.pt", wrong, models.init_model(spec).state_dict())
    with pytest.raises(models.CheckpointError, match=r"wrong.pt does not fit its architecture"):
        models.load_checkpoint(tmp_path / "wrong.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(models.CheckpointError, match="not an lmc checkpoint"):
        models.load_checkpoint(tmp_path / "foreign.pt")


def cifar_arch(name, **kw):
    return {"name": name, "in_shape": [32, 32, 3], "classes": 10, **kw}


@pytest.mark.parametrize("arch,millions", [
    (cifar_arch("cnn", channels=128, negative_slope=0.0), 0.09),
    (cifar_arch("lc_cnn", channels=128, negative_slope=0.0), 0.48),
    (cifar_arch("mlp", depth=2, width=models.toeplitz_width(128, (32, 32, 3)), negative_slope=0.0), 25.26),
    (cifar_arch("vit", width=models.VIT_PAPER_WIDTH), 1.08),  # the paper's text, not Table 3
])
def test_parameter_counts_match_table_3(arch, millions):
    count = sum(p.numel() for p in models.build(arch).parameters())
    assert round(count / 1e6, 2) == millions


def toeplitz(hidden: torch.nn.Module, in_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense matrix (and bias) of a hidden layer, read off by feeding it the basis images."""
    h, w, c = in_shape
    basis = torch.eye(c * h * w).view(-1, c, h, w)
    with torch.no_grad():
        bias = hidden(torch.zeros(1, c, h, w)).flatten()
        return (hidden(basis).flatten(1) - bias).T, bias


@pytest.mark.parametrize("name", ["cnn", "lc_cnn"])
def test_toeplitz_correspondence_with_the_mlp(name):
    in_shape = [12, 8, 3]
    torch.manual_seed(0)
    small = models.build({"name": name, "in_shape": in_shape, "classes": 5, "channels": 6, "negative_slope": 0.1})
    width = models.toeplitz_width(6, in_shape)
    mlp = models.build({"name": "mlp", "in_shape": in_shape, "classes": 5, "depth": 2, "width": width,
                        "negative_slope": 0.1})
    weight, bias = toeplitz(small.hidden, in_shape)
    assert weight.shape == (width, 3 * 12 * 8)
    if name == "cnn":  # weight sharing: each filter's 48 weights fill many rows
        assert torch.unique(weight).numel() <= 6 * 48 + 1
    # locality: an output position sees only its own 4×4 patch of each channel
    assert (weight != 0).sum(1).max() <= 3 * 16
    with torch.no_grad():
        mlp.layers[0].weight.copy_(weight)
        mlp.layers[0].bias.copy_(bias)
        mlp.layers[1].load_state_dict(small.head.state_dict())
    x = torch.randn(7, 3, 12, 8)
    torch.testing.assert_close(mlp(x), small(x), atol=1e-5, rtol=1e-5)


def test_width_auto_is_the_toeplitz_width():
    assert models.arch_from_spec(Spec(width="auto"))["width"] == 128 * 7 * 7
    assert models.arch_from_spec(Spec(model="cnn")) == {"name": "cnn", "in_shape": [28, 28, 1], "classes": 10,
                                                        "channels": 128, "negative_slope": 0.0}


@pytest.mark.parametrize("name", ["linear", "cnn", "lc_cnn", "vit"])
def test_every_model_runs_stacked(name):
    spec = Spec(model=name, width=16, channels=4)
    ms = [models.init_model(dataclasses.replace(spec, init_seed=s)) for s in (0, 1)]
    x = torch.randn(2, 3, 1, 28, 28)
    out = models.stacked_forward(ms[0], models.stack_states([m.state_dict() for m in ms]), x)
    for i, m in enumerate(ms):
        torch.testing.assert_close(out[i], m(x[i]), atol=1e-5, rtol=1e-5)


def test_linear_net_is_linear():
    model = models.init_model(Spec(model="linear", depth=4, width=16))
    x, y = torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)
    zero = model(torch.zeros_like(x))
    torch.testing.assert_close(model(x + y) + zero, model(x) + model(y), atol=1e-5, rtol=1e-4)


def test_vit_width_auto_is_the_paper_size_and_heads_are_8_by_48():
    arch = models.arch_from_spec(Spec(model="vit", width="auto"))
    assert arch == {"name": "vit", "in_shape": [28, 28, 1], "classes": 10, "width": models.VIT_PAPER_WIDTH}
    vit = models.build(arch)
    assert vit.qkv.weight.shape == (3 * 8 * 48, models.VIT_PAPER_WIDTH) and vit.positions.shape[1] == 7 * 7 + 1


def test_vit_attention_equals_torch_multihead_attention():
    """Our batched-matmul attention is torch's nn.MultiheadAttention with the same weights."""
    torch.manual_seed(0)
    vit = models.build({"name": "vit", "in_shape": [8, 8, 3], "classes": 5, "width": 8 * 48})
    mha = torch.nn.MultiheadAttention(8 * 48, 8, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(vit.qkv.weight)
        mha.in_proj_bias.zero_()
        mha.out_proj.load_state_dict(vit.proj.state_dict())
    x = torch.randn(3, 3, 8, 8)
    tokens = {}
    vit.attn_norm.register_forward_hook(lambda m, i, out: tokens.setdefault("normed", out))
    vit.proj.register_forward_hook(lambda m, i, out: tokens.setdefault("attended", out))
    with torch.no_grad():
        vit(x)
        expected, _ = mha(tokens["normed"], tokens["normed"], tokens["normed"])
    torch.testing.assert_close(tokens["attended"], expected, atol=1e-5, rtol=1e-5)


def test_vit_has_no_skip_connection():
    """With the attention output projection zeroed, nothing of the input reaches the classifier."""
    torch.manual_seed(0)
    vit = models.build({"name": "vit", "in_shape": [28, 28, 1], "classes": 10, "width": 32})
    with torch.no_grad():
        vit.proj.weight.zero_()
        vit.proj.bias.zero_()
        out = vit(torch.randn(4, 1, 28, 28))
    torch.testing.assert_close(out, out[:1].expand_as(out))


class Reading:
    """A Spec that notes which of its fields are read."""

    def __init__(self, spec: Spec):
        self.spec, self.read = spec, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self.spec, name)


def test_the_registry_is_the_specs_models_and_each_reads_only_the_fields_it_declares():
    assert sorted(models.REGISTRY) == sorted(MODELS)
    fields = {f.name for f in dataclasses.fields(Spec)}
    for name, model in models.REGISTRY.items():
        assert set(model.spec_fields) <= fields, name
        read = set()
        for width in (16, "auto"):  # `width: auto` reads what the paper's width depends on
            spec = Reading(Spec(model=name, width=width, channels=4))
            args = model.spec_args(spec)
            read |= spec.read - {"data"}  # the dataset's shape: every model's arch has it
            models.build({"name": name, "in_shape": [28, 28, 1], "classes": 10, **args})
        assert read == set(model.spec_fields), name
