import numpy as np
import pytest
import torch

from lmc import connectivity, data, models
from lmc.spec import Spec


def pair(width=32):
    return [models.init_model(Spec(width=width, init_seed=s)) for s in (0, 1)]


def test_alpha_grid_has_both_endpoints():
    grid = connectivity.alpha_grid(11)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and len(grid) == 11
    np.testing.assert_allclose(np.diff(grid), 0.1)


def test_interpolated_endpoints_are_exactly_the_models():
    a, b = pair()
    stacked = connectivity.interpolate_states(a.state_dict(), b.state_dict(), connectivity.alpha_grid(5))
    for k, v in a.state_dict().items():
        assert torch.equal(stacked[k][0], v) and torch.equal(stacked[k][-1], b.state_dict()[k])
    mid = connectivity.interpolate(a, b, 0.5)
    torch.testing.assert_close(mid.layers[0].weight, (a.layers[0].weight + b.layers[0].weight) / 2)


def test_buffers_follow_the_documented_rule():
    bn_a, bn_b = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    bn_b.running_mean += 2.0
    stacked = connectivity.interpolate_states(bn_a.state_dict(), bn_b.state_dict(), [0.0, 0.5, 1.0])
    torch.testing.assert_close(stacked["running_mean"][1], torch.ones(3))  # floats: interpolated
    assert stacked["num_batches_tracked"].tolist() == [0, 0, 0]  # equal ints: kept
    bn_b.num_batches_tracked += 1
    with pytest.raises(ValueError, match="num_batches_tracked"):
        connectivity.interpolate_states(bn_a.state_dict(), bn_b.state_dict(), [0.5])


def test_different_architectures_are_refused():
    a, b = pair(32)[0], pair(16)[1]
    with pytest.raises(ValueError, match="shape"):
        connectivity.interpolate_states(a.state_dict(), b.state_dict(), [0.5])


def test_barrier_definition():
    assert connectivity.barrier([0.1, 0.5, 0.3]) == pytest.approx(0.3)
    assert connectivity.barrier([0.1, 0.05, 0.1]) == 0.0  # a dip is not a barrier
    assert connectivity.barrier([0.2, 0.1]) == pytest.approx(0.05)  # endpoints alone: max - mean
    assert connectivity.normalized_barrier(0.1, 0.5, 0.5) == pytest.approx(0.2)


def test_batched_evaluation_matches_each_alpha_alone(betons):
    a, b = pair()
    split = data.read_split(betons["test"])
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    alphas = connectivity.alpha_grid(4)
    err, loss = connectivity.evaluate_stack(a, connectivity.interpolate_states(a.state_dict(), b.state_dict(), alphas),
                                            images, labels, "mnist5k", batch_size=300)
    x = data.normalize(images, "mnist5k")
    for i, alpha in enumerate(alphas):
        logits = connectivity.interpolate(a, b, alpha)(x)
        assert err[i] == pytest.approx((logits.argmax(1) != labels).double().mean().item(), abs=1e-3)
        assert loss[i] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-4)


def test_identical_models_have_zero_barrier(betons):
    a = pair()[0]
    split = data.read_split(betons["test"])
    err, loss = connectivity.evaluate_stack(a, connectivity.interpolate_states(a.state_dict(), a.state_dict(), [0, .5, 1]),
                                            torch.from_numpy(split.images), torch.from_numpy(split.labels), "mnist5k")
    assert connectivity.barrier(err) == 0.0 and connectivity.barrier(loss) == 0.0


@pytest.mark.parametrize("spec", [Spec(width=32), Spec(model="linear", depth=1), Spec(depth=3, width=16, negative_slope=0.1),
                                  Spec(model="cnn", channels=8), Spec(model="lc_cnn", channels=8),
                                  Spec(model="vit", width=32)], ids=lambda s: f"{s.model}-L{s.depth}")
def test_path_evaluation_equals_evaluating_every_interpolated_model(spec):
    """The first-layer shortcut (mix the endpoints' first-layer outputs) gives what whole models give."""
    import dataclasses

    from .conftest import small_split

    a, b = (models.init_model(dataclasses.replace(spec, init_seed=s)) for s in (0, 1))
    split = small_split(n=300)
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    grid = connectivity.alpha_grid(11)
    error, loss = connectivity.evaluate_path(a, a.state_dict(), b.state_dict(), grid, images, labels, "mnist5k",
                                             batch_size=128)
    for i, alpha in enumerate(grid):
        whole = connectivity.interpolate(a, b, float(alpha))
        with torch.no_grad():
            logits = whole(data.normalize(images, "mnist5k"))
        assert error[i] == pytest.approx((logits.argmax(1) != labels).double().mean().item(), abs=1 / 300 + 1e-9)
        assert loss[i] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


def test_refined_grid_sits_around_the_highest_interior_point():
    grid = connectivity.alpha_grid(11)
    errors = [0.0, 0.1, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05]
    fine = connectivity.refine_grid(grid, errors, 4)
    assert fine.tolist() == pytest.approx([0.12, 0.14, 0.16, 0.18, 0.22, 0.24, 0.26, 0.28])  # around α=0.2
    assert not np.isclose(fine[:, None], grid[None, :]).any()
    # the endpoints never count as the peak, even when they are the highest
    assert connectivity.refine_grid([0.0, 0.5, 1.0], [0.9, 0.1, 0.0], 1).tolist() == pytest.approx([0.25, 0.75])
    assert len(connectivity.refine_grid(grid, errors, 0)) == 0


def test_barrier_with_extra_points():
    assert connectivity.barrier([0.1, 0.2, 0.1], extra=[0.4]) == pytest.approx(0.3)
    assert connectivity.barrier([0.1, 0.2, 0.1], extra=[]) == pytest.approx(0.1)


def test_interpolation_stays_on_the_weights_device():
    # The α weights must follow the models' device (a GPU run passes GPU weights); "meta" stands in here.
    state = {"w": torch.zeros(3, device="meta"), "b": torch.zeros(2, device="meta")}
    assert all(t.device.type == "meta" for t in connectivity.interpolate_states(state, state, [0, .5, 1]).values())


def test_path_and_stack_evaluation_count_their_batches_and_give_the_same_bytes():
    from .conftest import Counter, small_split

    a, b = pair()
    split = small_split(n=300)
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    grid = connectivity.alpha_grid(5)
    stacked = connectivity.interpolate_states(a.state_dict(), b.state_dict(), grid)
    for evaluate in (lambda **kw: connectivity.evaluate_path(a, a.state_dict(), b.state_dict(), grid, images, labels,
                                                             "mnist5k", batch_size=128, **kw),
                     lambda **kw: connectivity.evaluate_stack(a, stacked, images, labels, "mnist5k", batch_size=128,
                                                              **kw)):
        counter = Counter()
        counted = evaluate(progress=counter)
        assert counter.n == connectivity.eval_batches(300, 128) == 3
        assert all(x.tobytes() == y.tobytes() for x, y in zip(counted, evaluate()))
