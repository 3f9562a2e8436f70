"""The Python API for notebooks; the stages are built from the same calls.

    from lmc import api
    run = api.load_run()                          # Θ0, A and B of the last `dvc repro`, as nn.Modules
    images, labels = api.load_split("test")       # a prepared split as tensors
    mid = api.interpolate(run.a, run.b, 0.5)      # Θ(0.5) as an nn.Module
    api.barriers(run.a, run.b, images, labels, run.dataset)   # barrier, loss barrier, accuracies, curves
    api.run_experiment(spec, "data/train.beton", "data/test.beton")   # a whole twin experiment in memory
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import align, connectivity, data, models, paths, report, seeds
from .connectivity import interpolate  # noqa: F401  (part of the API)
from .device import select as select_device
from .resume import Resume
from .spec import Spec, load_params
from .train import Snapshot, train_pairs, twin_state


@dataclass(frozen=True)
class Run:
    init: nn.Module
    a: nn.Module
    b: nn.Module
    status: str  # "ok" or "diverged"
    dataset: str


def load_run(root: str | Path = ".", pair: int = 0) -> Run:
    """Θ0, A and B of twin pair `pair` of the last `dvc repro`."""
    root = Path(root)
    spec = load_params(root / "params.yaml")
    arch = models.arch_from_spec(spec)
    init = models.load_checkpoint(root / paths.init(pair), stage="init", arch=arch)
    a, b = (models.load_checkpoint(root / paths.twin(pair, side), stage="train", arch=arch) for side in "ab")
    return Run(init.model, a.model, b.model, a.meta["status"], spec.dataset)


def load_split(split: str = "test", root: str | Path = ".", dataset: str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, H, W, C) and int64 labels of a prepared split ("train" or "test"), checked against
    `dataset` (its image shape and classes) when one is given."""
    s = data.read_split(Path(root) / paths.BETONS[split], dataset)
    return torch.from_numpy(s.images), torch.from_numpy(s.labels)


def split_curves(model: nn.Module, state_a: dict, state_b: dict, images: torch.Tensor, labels: torch.Tensor,
                 dataset: str, alphas: int = 11, refine: int = 0, device: torch.device | None = None,
                 progress=None) -> dict:
    """Error and loss of Θ(α) at `alphas` equidistant points (all α in one batched pass), and with refine > 0
    at 2·refine more points around the error curve's highest interior point ("refined", see refine_grid).
    `progress` (a tqdm, or anything with update(n)) advances by one per evaluation batch."""
    grid = connectivity.alpha_grid(alphas)
    error, loss = connectivity.evaluate_path(model, state_a, state_b, grid, images, labels, dataset, device=device,
                                             progress=progress)
    out = {"alpha": grid.tolist(), "error": error.tolist(), "loss": loss.tolist()}
    fine = connectivity.refine_grid(grid, error, refine)
    if len(fine):
        f_error, f_loss = connectivity.evaluate_path(model, state_a, state_b, fine, images, labels, dataset,
                                                     device=device, progress=progress)
        out["refined"] = {"alpha": fine.tolist(), "error": f_error.tolist(), "loss": f_loss.tolist()}
    return out


def path_curves(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                dataset: str, alphas: int = 11, device: torch.device | None = None, refine: int = 0,
                progress=None) -> dict:
    """`split_curves` between two modules."""
    return split_curves(model_a, model_a.state_dict(), model_b.state_dict(), images, labels, dataset, alphas,
                        refine, device, progress)


def barriers(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             dataset: str, alphas: int = 11) -> dict:
    """Error and loss barriers on one split, the endpoints' accuracies, and the curves behind them."""
    c = path_curves(model_a, model_b, images, labels, dataset, alphas)
    return {"barrier": connectivity.barrier(c["error"]), "loss_barrier": connectivity.barrier(c["loss"]),
            "acc_a": 1 - c["error"][0], "acc_b": 1 - c["error"][-1], **c}


def pair_curves(spec: Spec, model: nn.Module, state_a: dict, state_b: dict, splits: dict,
                device: torch.device | None = None, progress=None) -> dict:
    """The curves between two models on every split ({name: (images, labels)}); with spec.align, B is first
    permuted onto A."""
    if spec.align == "weight_matching":
        state_b = align.align(state_a, state_b, seeds.derive_seed(spec.init_seed, "align"))
    out = {}
    for split, (images, labels) in splits.items():
        c = split_curves(model, state_a, state_b, images, labels, spec.dataset, spec.alphas, spec.refine_alphas,
                         device, progress)
        out[f"{split}_error"], out[f"{split}_loss"] = c["error"], c["loss"]
        if "refined" in c:
            out[f"{split}_refined"] = c["refined"]
    return out


def experiment_curves(spec: Spec, model: nn.Module, twins: list[tuple[dict, dict]], splits: dict,
                      device: torch.device | None = None, progress=None) -> dict:
    """What data/interpolation.json holds: the curves of every twin pair, and with two pairs or more the
    curves between A of pair 0 and A of pair 1 ("cross_init": two different Θ0, where alignment matters).
    `progress` advances by one per evaluation batch, `curve_batches(spec, ...)` in all."""
    curves = {"alpha": connectivity.alpha_grid(spec.alphas).tolist(), "status": "ok",
              "pairs": [pair_curves(spec, model, a, b, splits, device, progress) for a, b in twins]}
    if len(twins) >= 2:
        curves["cross_init"] = pair_curves(spec, model, twins[0][0], twins[1][0], splits, device, progress)
    return curves


def curve_batches(spec: Spec, sizes: dict[str, int] | None = None) -> int:
    """The evaluation batches `experiment_curves` runs for spec.pairs pairs on splits of these sizes
    ({split: images}; default: the spec's dataset's train and test splits): a progress bar's total."""
    sizes = sizes or {split: spec.data[split] for split in paths.BETONS}
    paths_evaluated = spec.pairs + (spec.pairs >= 2)  # every pair, and cross_init
    with torch.device("meta"):  # the architecture alone: how many α one pass holds
        model = models.build(models.arch_from_spec(spec))
    points = [spec.alphas] + ([2 * spec.refine_alphas] if spec.refine_alphas > 0 and spec.alphas >= 3 else [])
    return paths_evaluated * sum(connectivity.eval_work(model, spec.data["shape"], k, n, torch.device(spec.device))
                                 for k in points for n in sizes.values())  # the grid, then the refined α


def experiment_work(spec: Spec, sizes: dict[str, int] | None = None) -> int:
    """The units `run_experiment` advances its `progress` by: training steps after spawn_step, then evaluation
    batches (`curve_batches`). A run that diverges stops short of it."""
    return spec.epochs * spec.steps_per_epoch - spec.spawn_step + curve_batches(spec, sizes)


def run_experiment(spec: Spec, train_path: str | Path, test_path: str | Path, progress=None,
                   trunk: Snapshot | None = None, resume: Resume | None = None) -> dict:
    """Θ0, the twin pairs and the interpolation on both splits, in one process (what the studies' cells run;
    the default pipeline runs the same steps as separate stages). With spawn_step, `trunk` is the trunk's
    snapshot at that step (trained here if None). Returns status, metrics, curves and the per-epoch history;
    the bytes of its JSON are a pure function of the spec, the data (and the trunk). `progress` (a tqdm, or
    anything with update(n)) advances by one per training step, then per evaluation batch: `experiment_work`.
    With `resume`, training takes up an interrupted run's saved progress and saves its own (lmc/resume.py)."""
    # one copy of the train split in memory, shared by every twin and the evaluation
    def read(path):
        return data.read_split(path, spec.dataset)  # its images and labels must be the spec's dataset's
    return experiment(spec, read(train_path), lambda: read(test_path), progress, trunk, resume)


def experiment(spec: Spec, train: data.Split, test, progress=None, trunk: Snapshot | None = None,
               resume: Resume | None = None) -> dict:
    """`run_experiment` on splits in memory; `test` is the test Split, or a function that reads it (only a run
    that did not diverge is evaluated)."""
    device = select_device(spec)
    inits = [models.init_model(spec, i).state_dict() for i in range(spec.pairs)]  # on the CPU: Θ0 is device-free
    model = models.build(models.arch_from_spec(spec))
    result = train_pairs(spec, model, inits, train, trunk=trunk, progress=progress, device=device, resume=resume)
    curves = {"alpha": connectivity.alpha_grid(spec.alphas).tolist(), "status": result.status}
    if result.status == "ok":
        twins = [(twin_state(result, i, "a"), twin_state(result, i, "b")) for i in range(spec.pairs)]
        splits = {split: (torch.from_numpy(s.images), torch.from_numpy(s.labels))
                  for split, s in (("train", train), ("test", test() if callable(test) else test))}
        curves = experiment_curves(spec, model, twins, splits, device, progress)
    history = [{"epoch": h.epoch, "loss": h.loss, "acc": h.acc, "diverged": h.diverged} for h in result.history]
    return {"status": result.status, "diverged_epoch": result.diverged_epoch,
            "metrics": report.metrics_from_curves(curves), "curves": curves, "history": history}
