"""Every stage type on CUDA, through the real pipeline: the default pipeline by `dvc exp run -S device=cuda`
(layerwise, weight matching and the refined α grid included), the spawn trunk and its snapshots, a study
cell and its report. Reruns must give the same bytes; nothing may cross between host and device within an
epoch.

Skipped without a GPU (run them through `device` when a task is lent one). `LMC_TEST_DEVICE=cpu` runs the
same tests on the CPU, which checks the tests themselves on a machine without a GPU (the host-device traffic
test, which has nothing to count there, skips).
"""
import copy
import json
import os
from collections import Counter

import pytest
import torch
import yaml

from lmc import data, models, studies
from lmc.spec import Spec
from lmc.train import load_snapshot, pair_loaders, save_snapshot, train_pairs, train_trunks, train_twins
from .fixtures import TINY, TINY_STUDIES, commit, copy_repo, ran, sh, write_studies


DEVICE = os.environ.get("LMC_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU")]


def ran_on_the_device(record: dict) -> bool:
    """Whether a stage's numeric record (lmc/numerics.py) says it computed on DEVICE, deterministically on CUDA."""
    gpu = record.get("cuda")
    return gpu is None if DEVICE == "cpu" else bool(gpu and gpu["gpu"] and gpu["deterministic"])


def outputs(repo, lock_file) -> dict:
    """Every output a dvc.lock records, with its hash: the bytes a rerun must give again."""
    lock = yaml.safe_load((repo / lock_file).read_text())["stages"]
    return {o["path"]: o["md5"] for stage in lock.values() for o in stage.get("outs", [])}


def test_default_pipeline_on_the_gpu_reruns_to_the_same_bytes(tmp_path):
    repo = copy_repo(tmp_path, {**TINY, "align": "weight_matching", "refine_alphas": 2})
    sh(repo, "dvc", "exp", "run", "-S", f"device={DEVICE}")
    first = outputs(repo, "dvc.lock")
    assert yaml.safe_load((repo / "params.yaml").read_text())["device"] == DEVICE
    assert {"data/interpolation.json", "reports/layerwise.json", "reports/metrics.json"} <= set(first)
    assert "refined" in (repo / "data/interpolation.json").read_text()
    records = json.loads((repo / "reports/numerics.json").read_text())
    assert all(ran_on_the_device(records[stage]) for stage in ("train", "interpolate", "layerwise")), records
    commit(repo, "gpu run")
    sh(repo, "dvc", "repro", "-f")
    assert outputs(repo, "dvc.lock") == first
    sh(repo, "git", "diff", "--exit-code", "dvc.lock", "reports")


def _trunk_spec(device: str = DEVICE) -> Spec:
    return Spec(optimizer="adam", lr=1e-3, width=32, epochs=2, batch_size=500, pairs=2, spawn_step=5,
                device=device)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def test_a_trunk_snapshot_saved_on_the_gpu_resumes_on_the_gpu_and_on_the_cpu(tmp_path, mnist5k):
    spec = _trunk_spec()
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]
    model = models.build(models.arch_from_spec(spec))
    snapshot = train_trunks(spec, model, inits, mnist5k[0], [spec.spawn_step], torch.device(DEVICE))[5]
    assert all(t.device.type == DEVICE for t in _tensors(snapshot.state))
    path = tmp_path / "step5.pt"
    save_snapshot(path, snapshot, {"spec": "test"})
    payload = torch.load(path, weights_only=True)  # no map_location: the file itself must be device-free
    assert all(t.device.type == "cpu" for t in _tensors(payload))
    assert any(t.numel() > 1 for t in _tensors(payload["optimizer"]["state"]))  # Adam's moments travelled too

    loaded = load_snapshot(path, {"spec": "test"}, stage="trunk")
    straight = train_pairs(spec, model, inits, mnist5k[0], device=torch.device(DEVICE))  # trunk trained in-run
    resumed = train_pairs(spec, model, inits, mnist5k[0], trunk=loaded, device=torch.device(DEVICE))
    assert resumed.status == straight.status == "ok"
    for name, tensor in straight.state.items():
        assert tensor.device.type == DEVICE and torch.equal(tensor, resumed.state[name]), name

    on_cpu = [train_pairs(_trunk_spec(device="cpu"), model, inits, mnist5k[0], trunk=load_snapshot(
        path, {"spec": "test"}, stage="trunk"), device=torch.device("cpu")) for _ in range(2)]
    assert on_cpu[0].status == "ok" and on_cpu[0].snapshot.step == spec.epochs * spec.steps_per_epoch
    for name, tensor in on_cpu[0].state.items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, on_cpu[1].state[name]), name


def test_a_training_step_moves_nothing_between_host_and_device(mnist5k):
    """Within an epoch nothing travels between host and device: the split, the batch order, the learning rate
    and the divergence flag stay there; the host reads the epoch's flag, tallies and finiteness at its end."""
    from torch.profiler import ProfilerActivity, profile

    if DEVICE != "cuda":
        pytest.skip("host-device traffic exists only with a GPU")
    spec = Spec(width=64, epochs=3, batch_size=100, pairs=2, optimizer="adam", lr=1e-3, warmup_epochs=1,
                device=DEVICE)
    dev = torch.device(DEVICE)
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]
    model = models.build(models.arch_from_spec(spec))
    split = data.split_tensors(mnist5k[0], dev)
    loaders = [loader for side in "ab" for loader in pair_loaders(spec, split, side)[0]]
    steps = spec.epochs * len(loaders[0])
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        result = train_twins(spec, model, loaders, inits=inits * 2, device=dev)
    assert result.status == "ok"
    copies = Counter(e.name.split(" (")[0] for e in prof.events() if e.name.startswith("Memcpy"))
    n_params = len(result.state)
    per_epoch = {"HtoD": len(loaders), "DtoH": 3 + n_params}  # each loader's order; flag, loss, accuracy, finiteness
    # before the first step: Θ0 and the optimizer's state go up once (at most a copy per tensor)
    assert copies["Memcpy HtoD"] <= per_epoch["HtoD"] * spec.epochs + 4 * n_params, copies
    # once per run: the learning rate read back into the snapshot, and the optimizer's first-step set-up
    assert copies["Memcpy DtoH"] <= per_epoch["DtoH"] * spec.epochs + 2, copies
    assert steps > 2 * (per_epoch["DtoH"] * spec.epochs + 2)  # a copy per step would break the bound above
    assert copies["Memcpy DtoH"] >= spec.epochs  # the profiler saw the per-epoch reads: the count is real


def _gpu_studies() -> dict:
    config = copy.deepcopy(TINY_STUDIES)
    config["scales"]["cpu"]["defaults"].update(device=DEVICE, pairs=2, refine_alphas=2)
    config["studies"]["tiny"]["axes"]["lr"]["med"].update(align="weight_matching")
    del config["studies"]["absent"]
    config["studies"]["tinyspawn"] = {
        "title": "t", "finding": "none", "shared_trunk": True,
        "base": {"model": "mlp", "dataset": "mnist", "optimizer": "adam", "lr": 0.001},
        "axes": {"k": {"k3": {"spawn_step": 3}, "k5": {"spawn_step": 5}}},
        "figure": {"x": "spawn_step", "y": "barrier"}}
    return config


def test_study_cells_trunk_and_reports_on_the_gpu_rerun_to_the_same_bytes(tmp_path):
    repo = copy_repo(tmp_path, {"download": False})
    write_studies(repo, _gpu_studies())
    commit(repo, "gpu studies")
    lock = studies.dvc_file("cpu").with_suffix(".lock")  # the cpu scale's pipeline, its settings on DEVICE
    out = sh(repo, "dvc", "--cd", str(studies.scale_dir("cpu")), "repro", "report-tiny", "report-tinyspawn").stdout
    assert {"tiny-hi", "tiny-med", "trunk-tinyspawn", "tinyspawn-k3", "tinyspawn-k5"} <= set(ran(out))
    first = outputs(repo, lock)
    assert json.loads((repo / studies.cell_output("cpu", "tiny", "hi")).read_text())["spec"]["device"] == DEVICE
    for stage in ("tiny-hi", "trunk-tinyspawn", "tinyspawn-k3"):  # what computed it, not only what it was asked
        assert ran_on_the_device(json.loads((repo / studies.numerics_record("cpu", stage)).read_text())[stage])
    assert (repo / "reports/cpu/tiny.md").exists() and (repo / "reports/cpu/tinyspawn.png").exists()
    commit(repo, "gpu results")
    sh(repo, "dvc", "--cd", str(studies.scale_dir("cpu")), "repro", "-f", "trunk-tinyspawn", "tinyspawn-k3",
       "tinyspawn-k5", "tiny-hi", "tiny-med", "report-tiny", "report-tinyspawn")
    assert outputs(repo, lock) == first
    sh(repo, "git", "diff", "--exit-code", "studies", "reports")
