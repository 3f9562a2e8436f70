import torch

from lmc import connectivity, data, layerwise, models
from lmc.spec import Spec

SPEC = Spec(depth=3, width=32)


def test_layer_names_follow_the_state():
    assert layerwise.layer_names(models.init_model(SPEC).state_dict()) == ["layers.0", "layers.1", "layers.2"]
    assert layerwise.layer_names(models.init_model(Spec(model="cnn")).state_dict()) == ["hidden", "head"]


def test_only_the_named_layer_moves_and_alpha_one_is_the_hybrid():
    a, b = (models.init_model(SPEC, pair).state_dict() for pair in (0, 1))
    path = layerwise.layer_path_states(a, b, "layers.1", [0.0, 0.5, 1.0])
    for name, t in path.items():
        if name.startswith("layers.1."):
            assert torch.equal(t[0], a[name]) and torch.equal(t[2], b[name])
            torch.testing.assert_close(t[1], (a[name] + b[name]) / 2)
        else:
            assert all(torch.equal(t[i], a[name]) for i in range(3))


def test_layer_barriers_are_zero_for_a_model_with_itself_and_found_where_b_differs(betons):
    split = data.read_split(betons["test"])
    images, labels = torch.from_numpy(split.images[:400]), torch.from_numpy(split.labels[:400])
    a = models.init_model(SPEC).state_dict()
    model = models.build(models.arch_from_spec(SPEC))
    grid = connectivity.alpha_grid(5)
    same = layerwise.layerwise_curves(model, a, a, images, labels, SPEC.dataset, grid)
    assert all(connectivity.barrier(c["error"]) == 0 for c in same.values())
    # B differs from A in its last layer only: every other layer's path stays at A (a flat curve)
    b = dict(a, **{k: v for k, v in models.init_model(SPEC, 1).state_dict().items() if k.startswith("layers.2.")})
    curves = layerwise.layerwise_curves(model, a, b, images, labels, SPEC.dataset, grid)
    for name in ("layers.0", "layers.1"):
        assert len(set(curves[name]["error"])) == 1
    assert len(set(curves["layers.2"]["error"])) > 1
    metrics = layerwise.layer_metrics({"test": curves})
    assert metrics["layers.0"]["barrier_test"] == 0 and set(metrics["layers.2"]) == {"barrier_test", "hybrid_error_test"}


def test_batched_layer_paths_equal_each_path_alone(betons):
    split = data.read_split(betons["test"])
    images, labels = torch.from_numpy(split.images[:200]), torch.from_numpy(split.labels[:200])
    a, b = (models.init_model(SPEC, pair).state_dict() for pair in (0, 1))
    model = models.build(models.arch_from_spec(SPEC))
    grid = connectivity.alpha_grid(3)
    curves = layerwise.layerwise_curves(model, a, b, images, labels, SPEC.dataset, grid)
    alone, _ = connectivity.evaluate_stack(model, layerwise.layer_path_states(a, b, "layers.1", grid), images, labels,
                                           SPEC.dataset)
    assert curves["layers.1"]["error"] == alone.tolist()


def test_layer_paths_in_passes_count_layerwise_batches_and_give_the_same_curves(betons, monkeypatch):
    from .fixtures import Counter

    split = data.read_split(betons["test"])
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    a, b = (models.init_model(SPEC, pair).state_dict() for pair in (0, 1))
    model = models.build(models.arch_from_spec(SPEC))
    grid, counter = connectivity.alpha_grid(3), Counter()
    whole = layerwise.layerwise_curves(model, a, b, images, labels, SPEC.dataset, grid)  # 9 models: one pass
    # a budget of 4 models: A once, then 3 layers × 2 α (0.5 and 1) in two passes, each holding two layers' points
    monkeypatch.setitem(connectivity.EVAL_MEMORY, "cpu", 4 * connectivity.model_bytes(model, images.shape[1:]))
    counted = layerwise.layerwise_curves(model, a, b, images, labels, SPEC.dataset, grid, progress=counter)
    assert counter.n == layerwise.layerwise_batches(model, grid, images.shape[1:], len(labels)) == 2 * 1
    assert counted == whole
    # every layer's path starts at A, evaluated once: one value for all
    assert len({curve["error"][0] for curve in whole.values()}) == 1