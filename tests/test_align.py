import numpy as np
import pytest
import torch

from lmc import align, api, data, models
from lmc.spec import Spec

SPEC = Spec(depth=4, width=48)


def random_permutations(state, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.permutation(state[f"layers.{i}.bias"].shape[0]) for i in range(SPEC.depth - 1)]


def test_permuting_hidden_units_keeps_the_function():
    model = models.init_model(SPEC)
    permuted = models.build(models.arch_from_spec(SPEC))
    permuted.load_state_dict(align.permute(model.state_dict(), random_permutations(model.state_dict())))
    x = torch.randn(7, 28, 28, 1)
    torch.testing.assert_close(permuted(x), model(x))
    assert not torch.equal(permuted.layers[0].weight, model.layers[0].weight)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_randomly_permuted_copy_aligns_back_exactly_with_barrier_zero(betons, seed):
    a = models.init_model(SPEC).state_dict()
    b = align.permute(a, random_permutations(a, seed))
    aligned = align.align(a, b, seed=seed)
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    split = data.read_split(betons["test"])
    images, labels = torch.from_numpy(split.images[:300]), torch.from_numpy(split.labels[:300])
    model = models.build(models.arch_from_spec(SPEC))
    curves = api.split_curves(model, a, aligned, images, labels, SPEC.dataset)
    assert max(curves["error"]) - (curves["error"][0] + curves["error"][-1]) / 2 == 0
    assert len(set(curves["error"])) == 1  # every Θ(α) is A itself


def test_weight_matching_raises_the_matching_objective_between_different_inits():
    a, b = (models.init_model(SPEC, pair).state_dict() for pair in (0, 1))

    def objective(s):
        return sum(float((a[k].double() * s[k].double()).sum()) for k in a)
    aligned = align.align(a, b)
    assert objective(aligned) > objective(b)
    # the same function as B: aligned only reorders B's hidden units
    x = torch.randn(5, 28, 28, 1)
    mb, ma = models.build(models.arch_from_spec(SPEC)), models.build(models.arch_from_spec(SPEC))
    mb.load_state_dict(b)
    ma.load_state_dict(aligned)
    torch.testing.assert_close(ma(x), mb(x))


def test_models_without_hidden_units_are_refused():
    logistic = models.init_model(Spec(depth=1)).state_dict()
    with pytest.raises(ValueError, match="at least one hidden layer"):
        align.weight_matching(logistic, logistic)
    cnn = models.init_model(Spec(model="cnn")).state_dict()
    with pytest.raises(ValueError, match="mlp or linear"):
        align.weight_matching(cnn, cnn)
