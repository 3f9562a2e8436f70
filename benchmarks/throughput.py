"""Throughput of the pipeline against the naive way, side by side in ONE run on one device.

    python benchmarks/throughput.py                  # CPU, after `dvc repro prepare`; writes reports/benchmarks.md
    python benchmarks/throughput.py --device cuda    # one GPU; writes reports/benchmarks-cuda.md

On the CPU (the bundled mnist5k, the default SGD settings):
  1. the training step per twin pair, in BOTH numerics modes (each in its own process: the mode is pinned per
     process): the pipeline's per-model step, the earlier stacked (vmap) step and a naive reference that trains A,
     then B, as ordinary nn.Modules fed by torch's DataLoader, for the MLP at widths 512, 2048 and 6272, the 4-layer
     linear network, the CNN and the LC-CNN, at batch 128 and 1024 with 1 and 3 pairs; achieved FLOP/s against the
     fp32 matmul rate measured in the same process;
  then, in this process's mode (batch 128):
  2. the share of a training step spent waiting for data: in memory, and streamed by FFCV's loader;
  3. interpolation over 11 α on train+test vs evaluating the two endpoints alone (and the naive α loop);
  4. K twin pairs in one model: seconds per epoch per pair as K grows;
  5. a profile of one pipeline epoch at widths 512 and 6272 (top operators by self CPU time).
On a GPU (MNIST's size: full MNIST with --mnist, else mnist5k's 4,000 images repeated 15 times, the time not
depending on the pixels): the fp32, tf32 and bf16 matmul rates; the width-512 cell at batch 1024 (host-bound)
as a plain GPU-resident loop, as the eager pipeline step and as its CUDA graph with 1, 3 and 8 pairs; the
Toeplitz-width cell (compute-bound) at each precision; the CNN, LC-CNN and ViT at batch 128, eager against the
graph; a profile; and the figures lmc/cost.py takes, written beside the report as JSON.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import header  # noqa: E402
from lmc import connectivity, cost, data, datasets, models, numerics, paths  # noqa: E402
from lmc.spec import Spec
from lmc.step import make_optimizer, precision_mode
from lmc.train import train_twins

EPOCHS = 5  # the first is warm-up; the median of the others is reported (this machine's timings vary)
THREADS = numerics.threads()  # what train_twins uses in this mode
OUT = {"cpu": Path("reports/benchmarks.md"), "cuda": Path("reports/benchmarks-cuda.md")}
DEVICE = torch.device("cpu")  # set by main


def machine() -> str:
    """The machine as every benchmark names it (benchmarks/header.py), and what these figures also depend on:
    the GPU, torch's build and threads, FFCV and numpy."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ffcv = f"ffcv {version('ffcv')}"
    except PackageNotFoundError:
        ffcv = "no ffcv"
    gpu = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), " if DEVICE.type == "cuda" else "")
    return (f"{gpu}{header.machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}), {ffcv}, numpy {np.__version__}")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(reps: int = 10, precision: str = "fp32") -> float:
    """The matmul rate of a training precision (fp32: TF32 off, as lmc/device.py sets it; tf32; bf16 operands)."""
    torch.set_num_threads(THREADS)
    n = 8192 if DEVICE.type == "cuda" else 2048
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=DEVICE, dtype=dtype), torch.randn(n, n, device=DEVICE, dtype=dtype)
    with precision_mode(Spec(precision=precision, device=DEVICE.type), DEVICE):
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


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


def pipeline_epoch(spec: Spec, make_loader, pairs: int = 1, timed: bool = False,
                   graphs: bool | None = None) -> tuple[float, float]:
    """Seconds per epoch (median after the first) of `pairs` twin pairs in lockstep, and the loader-wait share."""
    model = models.init_model(spec)
    seeds = [spec.order_seed_a + i for i in range(2 * pairs)]
    loaders = [make_loader(spec.batch_size, s) for s in seeds]
    if timed:
        loaders = [TimedLoader(l) for l in loaders]
    ends = [time.perf_counter()]  # on_epoch runs after the epoch's stats came back from the device
    train_twins(spec, model, loaders, on_epoch=lambda _: ends.append(time.perf_counter()), device=DEVICE,
                graphs=graphs)
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


def profile_epoch(spec: Spec, split: data.Split, steps: int | None = None, graphs: bool | None = None,
                  cuda_only: bool = False) -> str:
    """Top operators of one pipeline epoch (or its first `steps` steps) of spec.pairs pairs by self time on the
    device: by self CPU time, and on a GPU by self CUDA time too (`cuda_only`: that table alone)."""
    from torch.profiler import ProfilerActivity, profile

    model = models.init_model(dataclasses.replace(spec, epochs=1))
    make_loader = memory_loaders(split)
    loaders = [make_loader(spec.batch_size, spec.order_seed_a + i) for i in range(2 * spec.pairs)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_twins(dataclasses.replace(spec, epochs=1), model, loaders, device=DEVICE, stop_step=steps,
                    graphs=graphs)
    tables = [] if cuda_only else [prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)]
    if DEVICE.type == "cuda":  # what the host does, then what the GPU does
        tables.append(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12))
    return "\n".join(tables)


def plain_gpu_epoch(spec: Spec, split: data.Split, epochs: int = EPOCHS) -> float:
    """One ordinary nn.Module trained the plain GPU-resident way: the split on the GPU, a seeded permutation per
    epoch, torch.optim's default kernels, no sync within an epoch. Seconds per epoch (median after the first)."""
    images, labels = (t.to(DEVICE) for t in data.split_tensors(split))
    model = models.init_model(spec).to(DEVICE)
    opt = make_optimizer(spec, list(model.parameters()))
    generator = torch.Generator(device=DEVICE).manual_seed(spec.order_seed_a)
    ends = [time.perf_counter()]
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=DEVICE, generator=generator)
        for start in range(0, len(order), spec.batch_size):
            index = order[start:start + spec.batch_size]
            loss = nn.functional.cross_entropy(model(data.normalize(images[index], spec.dataset)), labels[index].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        ends.append(time.perf_counter())
    return float(np.median(np.diff(ends)[1:]))


def model_train_flops(spec: Spec, samples: int) -> float:
    """Training FLOPs of one model over `samples` samples, forward and backward counted (lmc/cost.py)."""
    return cost.train_flops(spec) * samples


def mnist_size(root: Path | None) -> tuple[data.Split, str]:
    """MNIST's train split: the real one from `root` (torchvision's layout), else mnist5k's 4,000 images repeated
    15 times (the time does not depend on the pixels)."""
    if root is not None:
        return datasets.read_mnist(root)[0], f"full MNIST ({root})"
    train = datasets.read_mnist5k()[0]
    return data.Split(np.tile(train.images, (15, 1, 1, 1)), np.tile(train.labels, 15)), "mnist5k ×15"


def gpu_tables(base: Spec, rates: dict[str, float], split: data.Split, source: str, lines: list[str]) -> dict:
    """The GPU's figures of issue 15 (host-bound and compute-bound cells, precisions, other models); returns the
    per-step figures the cost model takes (lmc/cost.py)."""
    n = len(split.labels)
    fp32 = rates["fp32"]

    def row(label, models_, seconds, spec, rate_name="fp32", extra=""):
        flops = models_ * model_train_flops(spec, n) / 1e9
        lines.append(f"| {label} | {models_} | {seconds:.3f} | {seconds / models_ * 1e3:.1f} | "
                     f"{flops / seconds / 1e3:.1f} | {flops / seconds / rates[rate_name]:.0%} |{extra}")
        print(lines[-1], flush=True)

    header = ["| run | models | s/epoch | ms/epoch per model | TFLOP/s | of the matmul rate |"]
    # 1. host-bound: the width-512 minimal model at the paper's batch size
    small = dataclasses.replace(base, dataset="mnist", width=512, batch_size=1024)
    plain = plain_gpu_epoch(small, split)
    lines += ["", f"## A host-bound cell: MLP width 512, batch 1024, {n:,} images ({source}), fp32", "",
              "Per-model speed-up is against the plain GPU-resident loop's one model. "
              "The matmul rate is fp32's.", "", header[0] + " speed-up per model |", "|---|---|---|---|---|---|---|"]
    row("plain GPU-resident loop (one nn.Module, torch.optim)", 1, plain, small, extra=" 1.00× |")
    eager, _ = pipeline_epoch(small, memory_loaders(split), pairs=3, graphs=False)
    row("pipeline, 3 pairs, eager step (no graph)", 6, eager, small, extra=f" {6 * plain / eager:.2f}× |")
    step_floor = None
    for pairs in (1, 3, 8):
        t, _ = pipeline_epoch(small, memory_loaders(split), pairs=pairs)
        step_floor = step_floor or t / small.steps_per_epoch
        row(f"pipeline, {pairs} pair{'s' * (pairs > 1)}, CUDA graph", 2 * pairs, t, small,
            extra=f" {2 * pairs * plain / t:.2f}× |")
    # 2. compute-bound: the Toeplitz width, every precision
    big = dataclasses.replace(small, width="auto")
    lines += ["", f"## A compute-bound cell: MLP at the Toeplitz width {models.arch_from_spec(big)['width']}, batch "
              f"1024, {n:,} images, 3 pairs (6 models), per precision", "",
              "Each precision against its own matmul rate (8192³ `torch.mm`; bf16: bf16 operands).", "",
              "| precision | s/epoch | TFLOP/s | of its matmul rate | of the fp32 rate | speed-up over fp32 |",
              "|---|---|---|---|---|---|"]
    flops = 6 * model_train_flops(big, n) / 1e9
    sustained = {}
    for precision in ("fp32", "tf32", "bf16"):
        t, _ = pipeline_epoch(dataclasses.replace(big, precision=precision), memory_loaders(split), pairs=3)
        sustained[precision] = flops / t * 1e9
        lines.append(f"| {precision} | {t:.3f} | {flops / t / 1e3:.1f} | {flops / t / rates[precision]:.0%} | "
                     f"{flops / t / fp32:.0%} | {sustained[precision] / sustained['fp32']:.2f}× |")
        print(lines[-1], flush=True)
    lines += ["", "Where the time goes in one step of this cell per precision (eager, so that each kernel shows; "
              "20 steps, torch.profiler, top kernels by self CUDA time):"]
    for precision in ("fp32", "tf32", "bf16"):
        lines += ["", f"{precision}:", "", "```", profile_epoch(dataclasses.replace(big, precision=precision, pairs=3),
                                                               split, steps=20, graphs=False, cuda_only=True), "```"]
    plain_big = plain_gpu_epoch(big, split, epochs=3)
    lines += ["", f"The plain GPU-resident loop, one model at this width, fp32: {plain_big:.3f} s/epoch "
              f"({model_train_flops(big, n) / plain_big / 1e12:.1f} TFLOP/s, "
              f"{model_train_flops(big, n) / plain_big / 1e9 / fp32:.0%} of the fp32 rate)."]
    # 3. the other host-bound models at batch 128
    lines += ["", f"## Other models at batch 128 on {n:,} MNIST-shaped images, 3 pairs, fp32: eager step against the "
              "CUDA graph", "", "| model | eager s/epoch | graph s/epoch | speed-up | graph TFLOP/s | of the fp32 rate |",
              "|---|---|---|---|---|---|"]
    for name, extra in (("cnn", {}), ("lc_cnn", {}), ("vit", {"width": "auto"})):
        spec = dataclasses.replace(base, dataset="mnist", model=name, batch_size=128, epochs=2, **extra)
        eager, _ = pipeline_epoch(spec, memory_loaders(split), pairs=3, graphs=False)
        graphed, _ = pipeline_epoch(spec, memory_loaders(split), pairs=3)
        f = 6 * model_train_flops(spec, n) / 1e9
        lines.append(f"| {name} | {eager:.3f} | {graphed:.3f} | {eager / graphed:.2f}× | {f / graphed / 1e3:.2f} | "
                     f"{f / graphed / fp32:.0%} |")
        print(lines[-1], flush=True)
    lines += ["", "Where the time goes in the width-512 cell with its graph (1 pair, first 100 steps; torch.profiler "
              "by self CPU time, then by self CUDA time):", "", "```", profile_epoch(small, split, steps=100), "```"]
    return {"rates": {p: sustained[p] for p in sustained}, "step_floor_s": step_floor,
            "matmul": rates, "device": torch.cuda.get_device_name()}


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
    parser.add_argument("--step-rows", action="store_true", help="(internal) print the CPU step table's rows in "
                        "this process's numerics mode as JSON")
    parser.add_argument("--mnist", type=Path, help="(cuda) a folder holding MNIST in torchvision's layout: the "
                        "GPU tables train on it instead of mnist5k repeated")
    args = parser.parse_args(argv)
    numerics.configure_torch()  # this process's mode (LMC_NUMERICS), as a stage would run in it
    if args.step_rows:
        print(json.dumps(step_rows(datasets.read_mnist5k()[0])))
        return
    base = Spec(epochs=EPOCHS, device=args.device)
    if args.device == "cuda":
        from lmc.device import select

        DEVICE = select(base)  # deterministic algorithms, TF32 off: as the pipeline trains
    out = args.out or OUT[args.device]
    on_cpu = DEVICE.type == "cpu"
    command = "python benchmarks/throughput.py" + ("" if on_cpu else " --device cuda")
    lines = ["# Benchmarks: batched twins against the naive way" + ("" if on_cpu else " (GPU)"), "",
             header.header(command) + (" (after `dvc repro prepare`)" if on_cpu else "") +
             f", one run. Machine: {machine()}.", ""]
    if on_cpu:
        cpu_tables(base, lines)
    else:
        rates = {p: matmul_gflops(precision=p) for p in ("fp32", "tf32", "bf16")}
        lines += ["Matmul rates (8192×8192 `torch.mm`, best of 10): " +
                  ", ".join(f"{p} **{r / 1e3:.1f} TFLOP/s**" for p, r in rates.items()) + ".", ""]
        split, source = mnist_size(args.mnist)
        figures = gpu_tables(base, rates, split, source, lines)
        cpu_vs_gpu(lines)
        json_out = out.with_suffix(".json")
        json_out.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"wrote {json_out}", file=sys.stderr)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)


# The CPU step's cases (issue: widths 512, 2048 and 6272, the linear networks, the CNN and the LC-CNN), each at
# batch 128 and 1024 with 1 and 3 pairs.
STEP_CASES = [("MLP 512", {"width": 512}), ("MLP 2048", {"width": 2048}), ("MLP 6272 (Toeplitz)", {"width": "auto"}),
              ("linear L4 512", {"model": "linear", "depth": 4, "width": 512, "lr": 0.01}), ("CNN 128 ch.", {"model": "cnn"}),
              ("LC-CNN 128 ch.", {"model": "lc_cnn"})]
STEP_EPOCHS = 3  # the first is warm-up; the median of the others is reported


def step_rows(train: data.Split) -> dict:
    """This process's numerics mode: the matmul rate, then per case, batch and pairs the seconds per epoch per
    pair of the per-model step (the default), of the stacked vmap step (1 pair) and of the naive way."""
    rate = matmul_gflops()
    rows = []
    for label, options in STEP_CASES:
        for batch in (128, 1024):
            spec = Spec(epochs=STEP_EPOCHS, batch_size=batch, **options)  # stable settings: none diverges
            naive = naive_epoch(spec, train)  # A then B: one pair
            stacked = pipeline_epoch(dataclasses.replace(spec, cpu_step="stacked"), memory_loaders(train))[0]
            flops = 2 * model_train_flops(spec, len(train.labels)) / 1e9  # one pair's epoch
            for pairs in (1, 3):
                ours = pipeline_epoch(spec, memory_loaders(train), pairs=pairs)[0] / pairs
                rows.append({"case": label, "batch": batch, "pairs": pairs, "ours": ours, "naive": naive,
                             "stacked": stacked if pairs == 1 else None, "gflop": flops})
                print(rows[-1], file=sys.stderr, flush=True)
    return {"mode": os.environ.get("LMC_NUMERICS", "portable"), "rate": rate, "machine": machine(), "rows": rows}


def step_table() -> list[str]:
    """The step table in both numerics modes, each measured in its own process (the mode is pinned per process)."""
    import subprocess

    lines = ["## The CPU training step, per pair, in both numerics modes", "",
             f"Seconds per epoch per twin pair (4,000 images; median of epochs 2-{STEP_EPOCHS}). *ours*: the "
             "pipeline's per-model step (`cpu_step: per_model`, the default); *stacked*: the earlier vmap step "
             "(`cpu_step: stacked`, 1 pair); *naive*: A then B as ordinary modules with torch's DataLoader. "
             "GFLOP/s counts forward and backward (lmc/cost.py); *of rate*: of the 2048×2048 `torch.mm` rate "
             "measured at the start of the same run, in the same mode.", ""]
    for mode in ("portable", "native"):
        out = subprocess.run([sys.executable, __file__, "--step-rows"], env={**os.environ, "LMC_NUMERICS": mode},
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        lines += [f"### numerics: {mode}", "", f"Machine: {result['machine']}. fp32 matmul rate: "
                  f"**{result['rate']:.1f} GFLOP/s**.", "",
                  "| case | batch | pairs | ours | stacked | naive | ours vs naive | ours GFLOP/s | of rate | "
                  "naive GFLOP/s | of rate |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            ours, naive, rate = r["ours"], r["naive"], result["rate"]
            stacked = f"{r['stacked']:.3f}" if r["stacked"] is not None else ""
            lines.append(f"| {r['case']} | {r['batch']} | {r['pairs']} | {ours:.3f} | {stacked} | {naive:.3f} | "
                         f"{naive / ours:.2f}× | {r['gflop'] / ours:.1f} | {r['gflop'] / ours / rate:.0%} | "
                         f"{r['gflop'] / naive:.1f} | {r['gflop'] / naive / rate:.0%} |")
        lines.append("")
    return lines


def cpu_tables(base: Spec, lines: list[str]) -> None:
    splits = datasets.read_mnist5k()  # the records prepare writes into the .beton files
    train = splits[0]
    lines += step_table()
    rate = matmul_gflops()
    lines += [f"The tables below run in this process's mode ({os.environ.get('LMC_NUMERICS', 'portable')}); its "
              f"fp32 matmul rate (2048×2048 `torch.mm`, best of 10): **{rate:.1f} GFLOP/s**.", ""]

    lines += ["## Twin training with the split streamed by FFCV's loader, s/epoch of both twins (median of epochs "
              "2-5, 4,000 images, batch 128)", "",
              "| width | pipeline (in-memory batches) | loader wait (in memory) | pipeline with FFCV's loader | "
              "FFCV loader wait |", "|---|---|---|---|---|"]
    for width in (512, 2048, "auto"):
        spec = dataclasses.replace(base, width=width)
        ours, wait = pipeline_epoch(spec, memory_loaders(train), timed=True)
        streamed, streamed_wait = pipeline_epoch(spec, ffcv_loaders, timed=True)
        label = f"{models.arch_from_spec(spec)['width']}" + (" (Toeplitz)" if width == "auto" else "")
        lines.append(f"| {label} | {ours:.3f} | {wait:.1%} | {streamed:.3f} | {streamed_wait:.1%} |")
        print(lines[-1], flush=True)

    costs = interpolation_costs(base, list(splits))
    lines += ["", "## Interpolation: 11 α on train + test (5,000 images), width 512", "",
              "| what | seconds | × endpoints |", "|---|---|---|"]
    for name, label in (("endpoints", "the two endpoints alone (one batched pass)"),
                        ("path", "the 11-point path (`evaluate_path`: first layer at A and B only)"),
                        ("naive", "naive: one interpolated module per α")):
        lines.append(f"| {label} | {costs[name]:.3f} | {costs[name] / costs['endpoints']:.2f} |")
    print("\n".join(lines[-3:]), flush=True)

    lines += ["", "## K twin pairs in one model (width 512)", "",
              "| K pairs | s/epoch | s/epoch per pair | pairs per second-epoch vs K=1 |", "|---|---|---|---|"]
    single = None
    for k in (1, 2, 4, 8):
        t, _ = pipeline_epoch(base, memory_loaders(train), pairs=k)
        single = single or t
        lines.append(f"| {k} | {t:.3f} | {t / k:.3f} | {k * single / t:.2f}× |")
        print(lines[-1], flush=True)

    for width in (512, "auto"):
        spec = dataclasses.replace(base, width=width)
        lines += ["", f"## Where the time goes: one pipeline epoch at width {models.arch_from_spec(spec)['width']} "
                  "(torch.profiler, CPU, 1 pair)", "", "```", profile_epoch(spec, train), "```"]


if __name__ == "__main__":
    main()
