"""What a cell costs before it runs: its FLOPs (counted on the model itself) against a measured rate.

A cell trains 2·pairs models (forward and backward, counted) and evaluates each pair's path
(every α on both splits, the refined α, the cross-init path). Its time is the larger of FLOPs / rate and
steps × the device's per-step floor (a small model's GPU step is bound by the host, not by arithmetic).
The rates are measurements, not datasheet peaks, per device and training precision; each says where it was
measured. `python -m lmc.cost` writes reports/cost.md: every study's hours at every scale and precision.
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import models
from .io import write_text_atomic
from .spec import DATASETS, PRECISIONS, Spec
from .stage import entry


@dataclass(frozen=True)
class Rate:
    flops: float  # sustained FLOP/s of the stacked twins' training
    step_floor: float  # seconds per optimizer step at least
    where: str


_H100 = "one H100 (reports/benchmarks-cuda.md): the Toeplitz-width MLP cell, 3 pairs at batch 1024, "
_FLOOR = "; floor: the width-512 cell's CUDA graph, 1 pair, 0.48 ms a step"
# The CPU's rate depends on the numerics mode (lmc/numerics.py) and the step (spec.cpu_step): one run of
# benchmarks/throughput.py (reports/benchmarks.md), the cells' usual model (MLP 512, batch 128, 1 pair).
_CPU = "the 2-core development CPU (reports/benchmarks.md, MLP 512, batch 128): "
CPU_RATES = {
    ("portable", "per_model"): Rate(24.2e9, 0.0, _CPU + "the per-model step, portable, 52% of its 46.8 GFLOP/s "
                                                 "matmul rate there"),
    ("portable", "stacked"): Rate(17.6e9, 0.0, _CPU + "the stacked step, portable"),
    ("native", "per_model"): Rate(65.0e9, 0.0, _CPU + "the per-model step, native, 37% of its 176.6 GFLOP/s "
                                               "matmul rate there"),
    ("native", "stacked"): Rate(48.8e9, 0.0, _CPU + "the stacked step, native (the committed cpu-scale studies)"),
}
RATES = {
    ("cuda", "fp32"): Rate(29.0e12, 0.48e-3, _H100 + "0.249 s/epoch, 57% of the 51 TFLOP/s fp32 matmul rate" + _FLOOR),
    ("cuda", "tf32"): Rate(40.2e12, 0.48e-3, _H100 + "0.179 s/epoch (1.39× fp32)" + _FLOOR),
    ("cuda", "bf16"): Rate(53.1e12, 0.48e-3, _H100 + "0.136 s/epoch (1.83× fp32)" + _FLOOR),
}
REPORT = Path("reports/cost.md")
MEASURED = Path("reports/cost-measured.json")  # {stage: seconds} of cells timed on the development CPU


def rate(device: str, precision: str, numerics: str = "portable", cpu_step: str = "per_model") -> tuple[Rate, str]:
    """The measured rate of a device and precision (on the CPU: of a numerics mode and step), and a note where
    that precision was not measured there (its fp32 rate stands in)."""
    if device == "cpu":
        note = "" if precision == "fp32" else f" ({precision} not measured on {device}: fp32's rate)"
        return CPU_RATES[numerics, cpu_step], note
    if (device, precision) in RATES:
        return RATES[device, precision], ""
    return RATES[device, "fp32"], f" ({precision} not measured on {device}: fp32's rate)"


@functools.lru_cache(maxsize=None)
def _flops(arch_items: tuple, backward: bool) -> int:
    arch = dict(arch_items)
    with torch.device("meta"):  # shapes only: a paper-scale model (billions of weights) allocates nothing
        model = models.build(arch)
    h, w, c = arch["in_shape"]
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
        out = model(torch.zeros(1, c, h, w, device="meta"))  # normalized batches are (N, C, H, W)
        if backward:
            out.sum().backward()  # the weights' gradients, and the inputs' of every layer but the first
    return counter.get_total_flops()


def _arch_key(spec: Spec) -> tuple:
    arch = models.arch_from_spec(spec)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arch.items()))


def forward_flops(spec: Spec) -> int:
    """FLOPs of one sample's forward pass through the spec's model (matmuls and convolutions)."""
    return _flops(_arch_key(spec), False)


def train_flops(spec: Spec) -> int:
    """FLOPs of one sample's training step: forward and backward, counted on the model itself."""
    return _flops(_arch_key(spec), True)


def cell_flops(spec: Spec) -> float:
    size = DATASETS[spec.dataset]
    fwd = forward_flops(spec)
    train = train_flops(spec) * size["train"] * spec.epochs * 2 * spec.pairs
    points = spec.alphas + 2 * spec.refine_alphas  # the grid, then the refined α of each split's curve
    evaluate = fwd * (size["train"] + size["test"]) * points * (spec.pairs + (spec.pairs > 1))
    return float(train + evaluate)


def cell_hours(spec: Spec) -> float:
    r, _ = rate(spec.device, spec.precision, spec.numerics, spec.cpu_step)
    steps = spec.epochs * spec.steps_per_epoch
    return max(cell_flops(spec) / r.flops, steps * r.step_floor) / 3600


def basis(device: str, precision: str = "fp32", numerics: str = "portable", cpu_step: str = "per_model") -> str:
    r, note = rate(device, precision, numerics, cpu_step)
    return f"at {r.flops / 1e12:g} TFLOP/s{note} measured on {r.where}"


def report(raw: dict) -> str:
    """reports/cost.md: every study's cells and hours at the paper scale on one H100 per precision, and at the
    cpu scale on the development CPU, checked against the cells timed there (MEASURED)."""
    import dataclasses

    from . import studies

    lines = ["# What the studies cost", "",
             "Estimated by `lmc/cost.py` (FLOPs counted on each cell's model, forward and backward, over measured "
             "rates; `python -m lmc.dispatch <study> --dry-run` prints the same estimate for what it would send). "
             "Regenerate with `python -m lmc.cost`.", "", "## The rates", "",
             "| device | precision | TFLOP/s | step floor (ms) | measured on |", "|---|---|---|---|---|"]
    lines += [f"| cpu ({n}, {c}) | fp32 | {r.flops / 1e12:g} | 0 | {r.where} |" for (n, c), r in CPU_RATES.items()]
    lines += [f"| {d} | {p} | {r.flops / 1e12:g} | {1e3 * r.step_floor:g} | {r.where} |" for (d, p), r in RATES.items()]
    names = list(raw["studies"])
    lines += ["", "## Paper scale, one H100, per training precision", "",
              "The paper's settings (the paper scale: studies/paper), every cell of every study, trunks left "
              "out (a spawn study's trunk is a fraction of one cell).", "",
              "| study | cells | PFLOP (training and evaluation) | fp32 hours | tf32 hours | bf16 hours |", "|---|---|---|---|---|---|"]
    totals = dict.fromkeys(PRECISIONS, 0.0)
    for study in names:
        specs = [studies.resolve(raw, cell, "paper") for cell in studies.cells({**raw, "scale": "paper"}, study)]
        hours = {p: sum(cell_hours(dataclasses.replace(s, device="cuda", precision=p)) for s in specs)
                 for p in PRECISIONS}
        for p in PRECISIONS:
            totals[p] += hours[p]
        pflop = sum(cell_flops(s) for s in specs) / 1e15
        lines.append(f"| {study} | {len(specs)} | {pflop:,.0f} | " + " | ".join(f"{hours[p]:.2f}" for p in PRECISIONS) + " |")
    lines.append("| **all** | | | " + " | ".join(f"**{totals[p]:.1f}**" for p in PRECISIONS) + " |")
    precision_run = Path("reports/precision.json")  # one paper-scale cell timed on an H100 (benchmarks/precision.py)
    if precision_run.exists():
        run = json.loads(precision_run.read_text())
        checks = []
        for p, row in run["rows"].items():
            spec = Spec(**{**run["cell"], "precision": p})
            checks.append(f"{p} {cell_hours(spec) * 3600:.0f} s estimated, {row['seconds']:.0f} s measured")
        lines += ["", f"Checked on one paper-scale cell (Table 2's adam-hi, {precision_run}, training and "
                  "evaluation): " + "; ".join(checks) + "."]
    measured = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    lines += ["", "## cpu scale, the development CPU (2 cores), fp32", "",
              "The committed results' scale, estimated in each cell's own numerics mode and step (all of them "
              "portable, per-model). Measured: the relocks of 2026-11-29 and 2026-11-30 (width), every study's "
              "cells through one `dvc repro` per study, each cell's wall time the gap between its result and the "
              "one before (DVC's own work between stages included; each study's first cell, whose gap holds its "
              f"data and trunk stages, left out) ({MEASURED}).", "",
              "| study | cells | estimated CPU-hours | cells timed | their estimate (s) | their measured time (s) "
              "| measured / estimated |", "|---|---|---|---|---|---|---|"]
    for study in names:
        cells = studies.cells({**raw, "scale": "cpu"}, study)
        specs = {f"{study}-{c.id}": studies.resolve(raw, c, "cpu") for c in cells}
        timed = [s for s in specs if s in measured]
        est = sum(cell_hours(specs[s]) for s in timed) * 3600
        got = sum(measured[s] for s in timed)
        check = f"{est:.0f} | {got:.0f} | {got / est:.2f}" if timed else "| |"
        lines.append(f"| {study} | {len(specs)} | {sum(map(cell_hours, specs.values())):.2f} | {len(timed)} | {check} |")
    return "\n".join(lines) + "\n"


@entry
def main(argv: list[str] | None = None) -> None:
    import argparse

    from . import studies

    argparse.ArgumentParser(prog="python -m lmc.cost", description=f"write {REPORT}: every study's cost at "
                            "every scale and precision").parse_args(argv)
    write_text_atomic(REPORT, report(studies.load()))
    print(f"wrote {REPORT}", file=sys.stderr)


if __name__ == "__main__":
    main()
