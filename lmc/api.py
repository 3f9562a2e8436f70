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

from . import connectivity, data, models, paths, report
from .connectivity import interpolate  # noqa: F401  (part of the API)
from .device import select as select_device
from .spec import Spec, load_params
from .train import train_twins


@dataclass(frozen=True)
class Run:
    init: nn.Module
    a: nn.Module
    b: nn.Module
    status: str  # "ok" or "diverged"
    dataset: str


def load_run(root: str | Path = ".") -> Run:
    root = Path(root)
    init = models.load_checkpoint(root / paths.INIT, stage="init")
    a, b = (models.load_checkpoint(root / p, stage="train") for p in paths.TWINS.values())
    return Run(init.model, a.model, b.model, a.meta["status"], load_params(root / "params.yaml").dataset)


def load_split(split: str = "test", root: str | Path = ".") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, H, W, C) and int64 labels of a prepared split ("train" or "test")."""
    s = data.read_split(Path(root) / paths.BETONS[split])
    return torch.from_numpy(s.images), torch.from_numpy(s.labels)


def path_curves(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                dataset: str, alphas: int = 11, device: torch.device | None = None) -> dict:
    """Error and loss of Θ(α) at `alphas` equidistant points, all α in one batched pass."""
    grid = connectivity.alpha_grid(alphas)
    error, loss = connectivity.evaluate_path(model_a, model_a.state_dict(), model_b.state_dict(), grid,
                                             images, labels, dataset, device=device)
    return {"alpha": grid.tolist(), "error": error.tolist(), "loss": loss.tolist()}


def barriers(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             dataset: str, alphas: int = 11) -> dict:
    """Error and loss barriers on one split, the endpoints' accuracies, and the curves behind them."""
    c = path_curves(model_a, model_b, images, labels, dataset, alphas)
    return {"barrier": connectivity.barrier(c["error"]), "loss_barrier": connectivity.barrier(c["loss"]),
            "acc_a": 1 - c["error"][0], "acc_b": 1 - c["error"][-1], **c}


def run_experiment(spec: Spec, train_path: str | Path, test_path: str | Path, progress=None) -> dict:
    """Θ0, twins A and B, and the interpolation on both splits, in one process (what the studies' cells
    run; the default pipeline runs the same steps as separate stages). Returns status, metrics, curves and
    the per-epoch history; the bytes of its JSON are a pure function of the spec and the data."""
    device = select_device(spec)
    init = models.init_model(spec)  # on the CPU, so Θ0 is the same whatever the device
    train = data.read_split(train_path)  # one copy in memory, shared by both twins and the evaluation
    loaders = [data.MemoryTwinLoader(train, spec.batch_size, s) for s in (spec.order_seed_a, spec.order_seed_b)]
    result = train_twins(spec, init, loaders, [spec.aug_seed_a, spec.aug_seed_b], progress=progress, device=device)
    curves = {"alpha": connectivity.alpha_grid(spec.alphas).tolist(), "status": result.status}
    if result.status == "ok":
        twins = []
        for i in range(2):
            twin = models.build(models.arch_from_spec(spec))
            twin.load_state_dict({k: v.detach() for k, v in models.unstack_state(result.state, i).items()})
            twins.append(twin)
        for split, s in (("train", train), ("test", data.read_split(test_path))):
            c = path_curves(*twins, torch.from_numpy(s.images), torch.from_numpy(s.labels), spec.dataset,
                            spec.alphas, device)
            curves[f"{split}_error"], curves[f"{split}_loss"] = c["error"], c["loss"]
    history = [{"epoch": h.epoch, "loss": h.loss, "acc": h.acc, "diverged": h.diverged} for h in result.history]
    return {"status": result.status, "diverged_epoch": result.diverged_epoch,
            "metrics": report.metrics_from_curves(curves), "curves": curves, "history": history}
