"""Throughput of the pipeline against the naive way, side by side in ONE run on this machine's CPU.

    python benchmarks/throughput.py          # after `dvc repro prepare`; writes reports/benchmarks.md

Measures (all on the prepared mnist5k, batch size 128, the default SGD settings):
  1. twin training: lockstep twins (vmap, FFCV) vs a naive reference that trains A, then B, as ordinary
     nn.Modules fed by torch's DataLoader (same model, same FLOPs, same epochs): seconds per epoch of both;
  2. achieved training FLOP/s against this machine's fp32 matmul rate measured in the same run;
  3. interpolation over 11 α on train+test vs evaluating the two endpoints alone (and the naive α loop);
  4. the share of a training step spent waiting for the FFCV loader;
  5. K twin pairs in one batched model: seconds per epoch per pair as K grows;
  6. a profile of one pipeline epoch (top operators by self CPU time).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmc import connectivity, data, models, paths
from lmc.api import load_split
from lmc.spec import Spec
from lmc.train import make_optimizer, train_twins

EPOCHS = 3  # the first is warm-up; the mean of the others is reported
THREADS = os.cpu_count()  # what train_twins uses
OUT = Path("reports/benchmarks.md")


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    from importlib.metadata import version

    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}), ffcv {version('ffcv')}, "
            f"numpy {np.__version__}, Python {platform.python_version()}")


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    torch.set_num_threads(THREADS)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_flops(spec: Spec, samples: int) -> float:
    """Exact matmul FLOPs of one epoch of one MLP: forward 2·Σ in·out, weight gradients the same, input
    gradients for every layer but the first."""
    arch = models.arch_from_spec(spec)
    sizes = [int(np.prod(arch["in_shape"]))] + [arch["width"]] * (arch["depth"] - 1) + [arch["classes"]]
    macs = [a * b for a, b in zip(sizes, sizes[1:])]
    return samples * 2 * (2 * sum(macs) + sum(macs[1:]))


class TimedLoader:
    """Wraps a loader and adds up the time spent waiting for its next batch."""

    def __init__(self, loader):
        self.loader, self.wait = loader, 0.0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                self.wait += time.perf_counter() - start
            yield batch


def pipeline_epoch(spec: Spec, pairs: int = 1, timed: bool = False, make_loader=data.twin_loader) -> tuple[float, float]:
    """Seconds per epoch (mean after the first) of `pairs` twin pairs in lockstep, and the loader-wait share."""
    model = models.init_model(spec)
    seeds = [spec.order_seed_a + i for i in range(2 * pairs)]
    loaders = [make_loader(paths.BETONS["train"], spec.batch_size, s) for s in seeds]
    if timed:
        loaders = [TimedLoader(l) for l in loaders]
    ends = [time.perf_counter()]
    train_twins(spec, model, loaders, on_epoch=lambda _: ends.append(time.perf_counter()))
    per_epoch = float(np.mean(np.diff(ends)[1:]))
    wait = sum(l.wait for l in loaders) / (ends[-1] - ends[0]) if timed else float("nan")
    return per_epoch, wait


def naive_epoch(spec: Spec, images: torch.Tensor, labels: torch.Tensor) -> float:
    """A, then B: ordinary modules, torch DataLoader (shuffled, seeded), one optimizer each."""
    torch.set_num_threads(THREADS)  # as many as the pipeline uses (FFCV may have changed the count)
    init = models.init_model(spec)
    total = 0.0
    for seed in (spec.order_seed_a, spec.order_seed_b):
        model = copy.deepcopy(init)
        opt = make_optimizer(spec, list(model.parameters()))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                             batch_size=spec.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        ends = [time.perf_counter()]
        for _ in range(spec.epochs):
            for x, y in loader:
                loss = nn.functional.cross_entropy(model(data.normalize(x, spec.dataset)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            ends.append(time.perf_counter())
        total += float(np.mean(np.diff(ends)[1:]))
    return total


def interpolation_costs(spec: Spec) -> dict[str, float]:
    a, b = (models.init_model(dataclasses.replace(spec, init_seed=s)) for s in (0, 1))
    splits = [load_split(s) for s in ("train", "test")]
    grid = connectivity.alpha_grid(11)

    def endpoints():
        stack = models.stack_states([a.state_dict(), b.state_dict()])
        for images, labels in splits:
            connectivity.evaluate_stack(a, stack, images, labels, spec.dataset)

    def path():
        for images, labels in splits:
            connectivity.evaluate_path(a, a.state_dict(), b.state_dict(), grid, images, labels, spec.dataset)

    def naive():  # one interpolated module at a time
        for alpha in grid:
            m = connectivity.interpolate(a, b, float(alpha))
            with torch.no_grad():
                for images, labels in splits:
                    for start in range(0, len(labels), 1000):
                        m(data.normalize(images[start:start + 1000], spec.dataset))

    return {name: min(_timed(fn) for _ in range(3)) for name, fn in
            (("endpoints", endpoints), ("path", path), ("naive", naive))}


def profile_epoch(spec: Spec) -> str:
    from torch.profiler import ProfilerActivity, profile

    model = models.init_model(dataclasses.replace(spec, epochs=1))
    loaders = [data.twin_loader(paths.BETONS["train"], spec.batch_size, s)
               for s in (spec.order_seed_a, spec.order_seed_b)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_twins(dataclasses.replace(spec, epochs=1), model, loaders)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main() -> None:
    base = Spec(epochs=EPOCHS)
    train = load_split("train")  # (imports FFCV, which sets torch's thread count: matmul_gflops resets it)
    torch.set_num_threads(THREADS)
    lines = ["# Benchmarks: batched twins against the naive way", "",
             f"Command: `python benchmarks/throughput.py` (after `dvc repro prepare`), one run. "
             f"Machine: {machine()}.", ""]
    rate = matmul_gflops()
    lines += [f"fp32 matmul rate (2048×2048 `torch.mm`, best of 10): **{rate:.1f} GFLOP/s**.", ""]

    lines += ["## Twin training, s/epoch of both twins (mean of epochs 2-3, 4,000 images, batch 128)", "",
              "| width | pipeline (lockstep, in-memory batches) | naive (A then B, DataLoader) | speed-up | "
              "pipeline GFLOP/s | of matmul rate | naive GFLOP/s | loader wait (in memory) | "
              "pipeline with FFCV's loader | FFCV loader wait |", "|---|---|---|---|---|---|---|---|---|---|"]
    for width in (512, 2048, "auto"):
        spec = dataclasses.replace(base, width=width)
        ours, wait = pipeline_epoch(spec, timed=True)
        streamed, streamed_wait = pipeline_epoch(spec, timed=True, make_loader=data.ffcv_twin_loader)
        naive = naive_epoch(spec, *train)
        flops = 2 * train_flops(spec, len(train[1])) / 1e9
        label = f"{models.arch_from_spec(spec)['width']}" + (" (Toeplitz)" if width == "auto" else "")
        lines.append(f"| {label} | {ours:.3f} | {naive:.3f} | {naive / ours:.2f}× | {flops / ours:.1f} | "
                     f"{flops / ours / rate:.0%} | {flops / naive:.1f} | {wait:.1%} | {streamed:.3f} | "
                     f"{streamed_wait:.1%} |")
        print(lines[-1], flush=True)

    costs = interpolation_costs(base)
    lines += ["", "## Interpolation: 11 α on train + test (5,000 images), width 512", "",
              "| what | seconds | × endpoints |", "|---|---|---|"]
    for name, label in (("endpoints", "the two endpoints alone (one batched pass)"),
                        ("path", "the 11-point path (`evaluate_path`: first layer at A and B only)"),
                        ("naive", "naive: one interpolated module per α")):
        lines.append(f"| {label} | {costs[name]:.3f} | {costs[name] / costs['endpoints']:.2f} |")
    print("\n".join(lines[-3:]), flush=True)

    lines += ["", "## K twin pairs in one batched model (width 512)", "",
              "| K pairs | s/epoch | s/epoch per pair | pairs per second-epoch vs K=1 |", "|---|---|---|---|"]
    single = None
    for k in (1, 2, 4, 8):
        t, _ = pipeline_epoch(base, pairs=k)
        single = single or t
        lines.append(f"| {k} | {t:.3f} | {t / k:.3f} | {k * single / t:.2f}× |")
        print(lines[-1], flush=True)

    lines += ["", "## Where the time goes: one pipeline epoch at width 512 (torch.profiler, CPU)", "", "```",
              profile_epoch(base), "```", ""]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
