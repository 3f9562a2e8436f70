"""Throughput of the pipeline against the naive way, side by side in ONE run on one device.

    python benchmarks/throughput.py                  # CPU, after `dvc repro prepare`; writes reports/benchmarks.md
    python benchmarks/throughput.py --device cuda    # one GPU; writes reports/benchmarks-cuda.md

Measures (all on the bundled mnist5k, batch size 128, the default SGD settings):
  1. twin training: lockstep twins (vmap, the split in memory) vs a naive reference that trains A, then B, as ordinary
     nn.Modules fed by torch's DataLoader (same model, same FLOPs, same epochs): seconds per epoch of both;
  2. achieved training FLOP/s against this machine's fp32 matmul rate measured in the same run;
  3. interpolation over 11 α on train+test vs evaluating the two endpoints alone (and the naive α loop);
  4. the share of a training step spent waiting for data: in memory, and (CPU) streamed by FFCV's loader;
  5. K twin pairs in one batched model: seconds per epoch per pair as K grows;
  6. a profile of one pipeline epoch (top operators by self CPU time; on a GPU also by self CUDA time).
On a GPU, also the paper-scale minimal model: MNIST's size (60,000 train images: mnist5k's 4,000 repeated
15 times, since only the subset is bundled; the time does not depend on the pixels) at the Toeplitz width,
with the GPU's utilization sampled through NVML. FFCV is not installed on the GPU machine, so the FFCV
loader columns are measured on the CPU only (the pipeline itself holds the split in memory either way).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmc import connectivity, data, datasets, models, paths
from lmc.spec import Spec
from lmc.train import make_optimizer, train_twins

EPOCHS = 5  # the first is warm-up; the median of the others is reported (this machine's timings vary)
THREADS = os.cpu_count()  # what train_twins uses
OUT = {"cpu": Path("reports/benchmarks.md"), "cuda": Path("reports/benchmarks-cuda.md")}
DEVICE = torch.device("cpu")  # set by main


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    from importlib.metadata import PackageNotFoundError, version

    try:
        ffcv = f"ffcv {version('ffcv')}"
    except PackageNotFoundError:
        ffcv = "no ffcv"
    gpu = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), " if DEVICE.type == "cuda" else "")
    return (f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}), {ffcv}, "
            f"numpy {np.__version__}, Python {platform.python_version()}")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(reps: int = 10) -> float:
    """fp32 matmul rate, as training runs it (on CUDA: TF32 off, see lmc/device.py)."""
    torch.set_num_threads(THREADS)
    n = 8192 if DEVICE.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
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


def memory_loaders(split: data.Split):
    """Loaders over one copy of `split` on the device, as lmc.train.pair_loaders makes them."""
    tensors = data.split_tensors(split, DEVICE)
    return lambda batch_size, seed: data.MemoryTwinLoader(tensors, batch_size, seed)


def ffcv_loaders(batch_size: int, seed: int):
    return data.ffcv_twin_loader(paths.BETONS["train"], batch_size, seed)


def pipeline_epoch(spec: Spec, make_loader, pairs: int = 1, timed: bool = False) -> tuple[float, float]:
    """Seconds per epoch (median after the first) of `pairs` twin pairs in lockstep, and the loader-wait share."""
    model = models.init_model(spec)
    seeds = [spec.order_seed_a + i for i in range(2 * pairs)]
    loaders = [make_loader(spec.batch_size, s) for s in seeds]
    if timed:
        loaders = [TimedLoader(l) for l in loaders]
    ends = [time.perf_counter()]  # on_epoch runs after the epoch's stats came back from the device
    train_twins(spec, model, loaders, on_epoch=lambda _: ends.append(time.perf_counter()), device=DEVICE)
    per_epoch = float(np.median(np.diff(ends)[1:]))
    wait = sum(l.wait for l in loaders) / (ends[-1] - ends[0]) if timed else float("nan")
    return per_epoch, wait


def naive_epoch(spec: Spec, split: data.Split) -> float:
    """A, then B: ordinary modules, torch DataLoader (shuffled, seeded), one optimizer each."""
    torch.set_num_threads(THREADS)  # as many as the pipeline uses (FFCV may have changed the count)
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    init = models.init_model(spec)
    total = 0.0
    for seed in (spec.order_seed_a, spec.order_seed_b):
        model = copy.deepcopy(init).to(DEVICE)
        opt = make_optimizer(spec, list(model.parameters()))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                             batch_size=spec.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        ends = [time.perf_counter()]
        for _ in range(spec.epochs):
            for x, y in loader:
                x, y = x.to(DEVICE), y.to(DEVICE)
                loss = nn.functional.cross_entropy(model(data.normalize(x, spec.dataset)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync()
            ends.append(time.perf_counter())
        total += float(np.median(np.diff(ends)[1:]))
    return total


def interpolation_costs(spec: Spec, splits: list[data.Split]) -> dict[str, float]:
    a, b = (models.init_model(dataclasses.replace(spec, init_seed=s)) for s in (0, 1))
    splits = [(torch.from_numpy(s.images), torch.from_numpy(s.labels)) for s in splits]
    grid = connectivity.alpha_grid(11)

    def endpoints():
        stack = models.stack_states([a.state_dict(), b.state_dict()])
        for images, labels in splits:
            connectivity.evaluate_stack(a, stack, images, labels, spec.dataset, device=DEVICE)

    def path():
        for images, labels in splits:
            connectivity.evaluate_path(a, a.state_dict(), b.state_dict(), grid, images, labels, spec.dataset,
                                       device=DEVICE)

    def naive():  # one interpolated module at a time
        for alpha in grid:
            m = connectivity.interpolate(a, b, float(alpha)).to(DEVICE)
            with torch.no_grad():
                for images, labels in splits:
                    for start in range(0, len(labels), 1000):
                        m(data.normalize(images[start:start + 1000].to(DEVICE), spec.dataset))

    return {name: min(_timed(fn) for _ in range(3)) for name, fn in
            (("endpoints", endpoints), ("path", path), ("naive", naive))}


def profile_epoch(spec: Spec, split: data.Split, steps: int | None = None) -> str:
    """Top operators of one pipeline epoch (or its first `steps` steps) by self time on the device."""
    from torch.profiler import ProfilerActivity, profile

    model = models.init_model(dataclasses.replace(spec, epochs=1))
    make_loader = memory_loaders(split)
    loaders = [make_loader(spec.batch_size, s) for s in (spec.order_seed_a, spec.order_seed_b)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_twins(dataclasses.replace(spec, epochs=1), model, loaders, device=DEVICE, stop_step=steps)
    tables = [prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)]
    if DEVICE.type == "cuda":  # what the host does, then what the GPU does
        tables.append(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12))
    return "\n".join(tables)


class Utilization:
    """The GPU's utilization (NVML, the share of time a kernel ran), sampled every 10 ms in a thread."""

    def __enter__(self):
        self.samples, self.stop = [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception as err:  # no NVML: the utilization reads nan, the timings stand
            print(f"NVML unavailable ({err!r})", file=sys.stderr)
            self.stop.set()

        def sample():
            while not self.stop.wait(0.01):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if self.samples:
            import pynvml

            pynvml.nvmlShutdown()

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) / 100 if self.samples else float("nan")


def paper_scale(spec: Spec, rate: float, lines: list[str]) -> None:
    """The paper's minimal model at MNIST's size on this GPU: pipeline and naive, s/epoch and utilization."""
    train = datasets.read_mnist5k()[0]
    full = data.Split(np.tile(train.images, (15, 1, 1, 1)), np.tile(train.labels, 15))
    spec = dataclasses.replace(spec, dataset="mnist", width="auto")
    with Utilization() as util:
        ours, wait = pipeline_epoch(spec, memory_loaders(full), timed=True)
    with Utilization() as util_8:
        eight, _ = pipeline_epoch(spec, memory_loaders(full), pairs=8)
    naive = naive_epoch(spec, full)
    flops = 2 * train_flops(spec, len(full.labels)) / 1e9
    start = len(lines)
    lines += ["", f"## Paper scale on the GPU: the minimal model (MLP, Toeplitz width "
              f"{models.arch_from_spec(spec)['width']}) on 60,000 images, batch 128, twins", "",
              "| | pipeline, 1 pair | pipeline, 8 pairs | naive (A then B, DataLoader), 1 pair |",
              "|---|---|---|---|",
              f"| s/epoch (median of epochs 2-5) | {ours:.3f} | {eight:.3f} | {naive:.3f} |",
              f"| speed-up over naive, per pair | {naive / ours:.2f}× | {8 * naive / eight:.2f}× | 1.00× |",
              f"| GFLOP/s (of the fp32 matmul rate) | {flops / ours:.0f} ({flops / ours / rate:.0%}) | "
              f"{8 * flops / eight:.0f} ({8 * flops / eight / rate:.0%}) | "
              f"{flops / naive:.0f} ({flops / naive / rate:.0%}) |",
              f"| GPU utilization (NVML, all epochs) | {util.mean:.0%} | {util_8.mean:.0%} | |",
              f"| loader wait | {wait:.1%} | | |",
              "", "Where the time goes: the first 200 steps of a pipeline epoch at this scale "
              "(torch.profiler, by self CPU time, then by self CUDA time):", "", "```", profile_epoch(spec, full, steps=200), "```"]
    print("\n".join(lines[start:start + 10]), flush=True)


def cpu_vs_gpu(lines: list[str]) -> None:
    """Whether the same spec trains to the same bytes on the CPU and this GPU (it need not)."""
    spec = Spec(width=64, epochs=1, batch_size=500)
    split = datasets.read_mnist5k()[0]
    states = {}
    for dev in ("cpu", "cuda"):
        model = models.init_model(spec)
        tensors = data.split_tensors(split, torch.device(dev))
        loaders = [data.MemoryTwinLoader(tensors, spec.batch_size, s) for s in (spec.order_seed_a, spec.order_seed_b)]
        states[dev] = {n: t.detach().cpu() for n, t in
                       train_twins(spec, model, loaders, device=torch.device(dev)).state.items()}
    diff = max(float((states["cpu"][n] - states["cuda"][n]).abs().max()) for n in states["cpu"])
    same = all(torch.equal(states["cpu"][n], states["cuda"][n]) for n in states["cpu"])
    lines += ["", f"CPU against this GPU, same spec (width 64, 1 epoch of 8 steps): weights bit-identical: "
              f"{same}; largest difference {diff:.2e}."]
    print(lines[-1], flush=True)


def main(argv=None) -> None:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, help="where to write the report (default: reports/benchmarks[-cuda].md)")
    args = parser.parse_args(argv)
    base = Spec(epochs=EPOCHS, device=args.device)
    if args.device == "cuda":
        from lmc.device import select

        DEVICE = select(base)  # deterministic algorithms, TF32 off: as the pipeline trains
    out = args.out or OUT[args.device]
    splits = datasets.read_mnist5k()  # the records prepare writes into the .beton files
    train = splits[0]
    on_cpu = DEVICE.type == "cpu"
    command = "python benchmarks/throughput.py" + ("" if on_cpu else " --device cuda")
    lines = ["# Benchmarks: batched twins against the naive way" + ("" if on_cpu else " (GPU)"), "",
             f"Command: `{command}`" + (" (after `dvc repro prepare`)" if on_cpu else "") +
             f", one run. Machine: {machine()}.", ""]
    rate = matmul_gflops()
    size = 2048 if on_cpu else 8192
    lines += [f"fp32 matmul rate ({size}×{size} `torch.mm`{'' if on_cpu else ', TF32 off'}, best of 10): "
              f"**{rate:.1f} GFLOP/s**.", ""]

    lines += ["## Twin training, s/epoch of both twins (median of epochs 2-5, 4,000 images, batch 128)", "",
              "| width | pipeline (lockstep, in-memory batches) | naive (A then B, DataLoader) | speed-up | "
              "pipeline GFLOP/s | of matmul rate | naive GFLOP/s | loader wait (in memory) | "
              "pipeline with FFCV's loader | FFCV loader wait |", "|---|---|---|---|---|---|---|---|---|---|"]
    naive_512 = None
    for width in (512, 2048, "auto"):
        spec = dataclasses.replace(base, width=width)
        ours, wait = pipeline_epoch(spec, memory_loaders(train), timed=True)
        if on_cpu:
            streamed, streamed_wait = pipeline_epoch(spec, ffcv_loaders, timed=True)
            ffcv = f"{streamed:.3f} | {streamed_wait:.1%}"
        else:
            ffcv = "not measured (no FFCV here) | "
        naive = naive_epoch(spec, train)
        naive_512 = naive_512 or naive
        flops = 2 * train_flops(spec, len(train.labels)) / 1e9
        label = f"{models.arch_from_spec(spec)['width']}" + (" (Toeplitz)" if width == "auto" else "")
        lines.append(f"| {label} | {ours:.3f} | {naive:.3f} | {naive / ours:.2f}× | {flops / ours:.1f} | "
                     f"{flops / ours / rate:.0%} | {flops / naive:.1f} | {wait:.1%} | {ffcv} |")
        print(lines[-1], flush=True)

    costs = interpolation_costs(base, list(splits))
    lines += ["", "## Interpolation: 11 α on train + test (5,000 images), width 512", "",
              "| what | seconds | × endpoints |", "|---|---|---|"]
    for name, label in (("endpoints", "the two endpoints alone (one batched pass)"),
                        ("path", "the 11-point path (`evaluate_path`: first layer at A and B only)"),
                        ("naive", "naive: one interpolated module per α")):
        lines.append(f"| {label} | {costs[name]:.3f} | {costs[name] / costs['endpoints']:.2f} |")
    print("\n".join(lines[-3:]), flush=True)

    lines += ["", "## K twin pairs in one batched model (width 512)", "",
              "| K pairs | s/epoch | s/epoch per pair | pairs per second-epoch vs K=1 | "
              "vs K × naive (its width-512 time above) |", "|---|---|---|---|---|"]
    single = None
    for k in (1, 2, 4, 8):
        t, _ = pipeline_epoch(base, memory_loaders(train), pairs=k)
        single = single or t
        lines.append(f"| {k} | {t:.3f} | {t / k:.3f} | {k * single / t:.2f}× | {k * naive_512 / t:.2f}× |")
        print(lines[-1], flush=True)

    if not on_cpu:
        paper_scale(base, rate, lines)
        cpu_vs_gpu(lines)
    where = "CPU" if on_cpu else "by self CPU time, then by self CUDA time"
    lines += ["", f"## Where the time goes: one pipeline epoch at width 512 (torch.profiler, {where})", "", "```",
              profile_epoch(base, train), "```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
