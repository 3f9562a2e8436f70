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

    from .fixtures import small_split

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
    from .fixtures import Counter, small_split

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


@pytest.mark.parametrize("spec", [Spec(width=32), Spec(model="vit", width=32)], ids=["mlp", "vit"])
def test_a_path_in_passes_gives_the_one_pass_bytes_and_counts_them(spec, monkeypatch):
    """However few models a pass may hold (the memory budget), every α gets the same bytes."""
    import dataclasses

    from .fixtures import Counter, small_split

    a, b = (models.init_model(dataclasses.replace(spec, init_seed=s)) for s in (0, 1))
    split = small_split(n=300)
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    grid = connectivity.alpha_grid(11)
    per_model = connectivity.model_bytes(a, images.shape[1:], 128)
    monkeypatch.setitem(connectivity.EVAL_MEMORY, "cpu", 11 * per_model)  # one pass
    whole = connectivity.evaluate_path(a, a.state_dict(), b.state_dict(), grid, images, labels, "mnist5k", 128)
    monkeypatch.setitem(connectivity.EVAL_MEMORY, "cpu", 3 * per_model)  # now 3 models a pass: 4 passes
    counter = Counter()
    parts = connectivity.evaluate_path(a, a.state_dict(), b.state_dict(), grid, images, labels, "mnist5k", 128,
                                       progress=counter)
    assert counter.n == connectivity.eval_passes(a, images.shape[1:], 11, 128) * 3 == 4 * 3
    assert all(x.tobytes() == y.tobytes() for x, y in zip(whole, parts))


def test_model_bytes_count_the_weights_and_every_activation_of_a_forward():
    """The count holds at least the weights and the activations a forward must make, and not wildly more (that
    it bounds a real pass's memory is measured by the peak RSS of the ViT case below)."""
    model = models.init_model(Spec(width=512))
    counted = connectivity.model_bytes(model, (28, 28, 1), batch_size=100)
    weights = sum(t.numel() * 4 for t in model.state_dict().values())
    # the first layer's output (100 × 512 floats) and its activation at least, the logits too
    assert counted >= weights + 4 * 100 * (512 + 512 + 10)
    assert counted <= weights + 4 * 100 * 4 * (784 + 512 + 512 + 10)  # and not wildly more


def test_the_vit_layerwise_case_stays_under_2_gib():
    """The case that the kernel's OOM killer stopped at 24 GB (issue 15): the layerwise curves of a ViT of width
    64, every layer × α on a 1,000-image split at the default batch, in a fresh process; its peak RSS counts."""
    import subprocess
    import sys

    code = """
import torch
from lmc import connectivity, datasets, layerwise, models
from lmc.spec import Spec
spec = Spec(model="vit", width=64, alphas=3)
a, b = (models.init_model(spec, p) for p in (0, 1))
test = datasets.read_mnist5k()[1]
images, labels = torch.from_numpy(test.images), torch.from_numpy(test.labels)
names = layerwise.layer_names(a.state_dict())
unbounded = len(names) * spec.alphas * connectivity.model_bytes(a, images.shape[1:])
curves = layerwise.layerwise_curves(a, a.state_dict(), b.state_dict(), images, labels, spec.dataset,
                                    connectivity.alpha_grid(spec.alphas))
assert len(curves) == len(names) and all(len(c["error"]) == spec.alphas for c in curves.values())
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))  # this image's peak (ru_maxrss would
print(unbounded, int(hwm.split()[1]) * 1024)                              # carry the forking parent's)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    unbounded, peak = map(int, out.stdout.split())
    assert unbounded > 8 * 2 ** 30  # all points in one pass would have needed this much (an upper bound)
    assert peak < 2 * 2 ** 30, f"peak RSS {peak / 2 ** 30:.2f} GiB"


def test_a_model_too_large_for_the_budget_at_the_default_batch_gets_smaller_batches():
    vit = models.build(models.arch_from_spec(Spec(model="vit", width="auto")))  # the paper's ViT on MNIST
    assert connectivity.model_bytes(vit, (28, 28, 1)) > connectivity.EVAL_MEMORY["cpu"]
    batch = connectivity.eval_batch_size(vit, (28, 28, 1))
    assert batch < connectivity.EVAL_BATCH
    assert connectivity.model_bytes(vit, (28, 28, 1), batch) <= connectivity.EVAL_MEMORY["cpu"]
    assert connectivity.eval_batch_size(models.init_model(Spec()), (28, 28, 1)) == connectivity.EVAL_BATCH
