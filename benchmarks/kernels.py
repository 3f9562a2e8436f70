"""Which matrix-product kernel can the portable mode use: the rates of the candidates at this project's shapes,
and which of them compute the same bytes on other CPUs. Writes reports/kernels.md.

    python benchmarks/kernels.py [--repeats 3] [--emulate EPYC-Rome,Haswell-noTSX]

Rates (fp32 GFLOP/s, the median of --repeats runs, the settings alternating so that a slow spell of the
machine hits each; every setting in its own process, since the kernels are chosen when the libraries load):
- MKL native: torch.mm as the native mode runs it (MKL_CBWR=AVX2, every core);
- MKL COMPATIBLE: torch.mm as the portable mode runs it today (MKL_CBWR=COMPATIBLE, 2 threads);
- fixed kernel: lmc.kernels.mm, one single-threaded call of OpenBLAS's Haswell sgemm;
- fixed kernel, 2 side by side: two such calls at once on two threads (two models of a stack), their
  combined rate.
Agreement (--emulate): lmc.kernels' probe and a probe of ATen's AVX2 element-wise kernels (the ops a training
step runs besides its products), computed here and under QEMU's user-mode emulation of each model.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.header import header  # noqa: E402

# (rows, inner, columns): each model's forward product and the two of its backward, at the MLP's widths and
# the batch sizes of benchmarks/throughput.py, and the ViT's attention at width 648 (65 tokens, 8 heads of 48).
SHAPES = {"MLP 784→512, batch 128": (128, 784, 512), "its weight gradient": (512, 128, 784),
          "MLP 784→2048, batch 1024": (1024, 784, 2048), "its input gradient": (1024, 2048, 784),
          "MLP 784→6272, batch 1024": (1024, 784, 6272), "its weight gradient ": (6272, 1024, 784),
          "MLP 6272→10, batch 1024": (1024, 6272, 10), "ViT qkv, batch 128": (128 * 65, 648, 1152)}
SETTINGS = {"MKL native": {"LMC_NUMERICS": "native"}, "MKL COMPATIBLE": {"LMC_NUMERICS": "portable"},
            "fixed kernel": {"OPENBLAS_CORETYPE": "Haswell"}, "fixed kernel, 2 side by side": {"OPENBLAS_CORETYPE": "Haswell"}}


def rates(setting: str) -> dict[str, float]:
    """In this process (its environment set by main): GFLOP/s of each shape, best of 5 after a warm-up."""
    import concurrent.futures
    import time

    import lmc  # noqa: F401  (pins the numerics mode LMC_NUMERICS names, before torch)
    import torch

    from lmc import kernels, numerics

    if setting.startswith("fixed"):
        kernels.check()
        torch.set_num_threads(1)
    else:
        numerics.configure_torch()
    side = 2 if setting.endswith("side by side") else 1
    pool = concurrent.futures.ThreadPoolExecutor(side)  # the fixed kernel's threads, made once
    out = {}
    for name, (m, k, n) in SHAPES.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        if setting.startswith("fixed"):
            run = lambda: list(pool.map(lambda _: kernels.mm(a, b), range(side)))  # noqa: E731
        else:
            run = lambda: torch.mm(a, b)  # noqa: E731
        run()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out[name] = side * 2 * m * k * n / min(times) / 1e9
    return out


def aten_probe() -> dict[str, str]:
    """Hashes of ATen's AVX2 element-wise kernels on fixed inputs, one thread (this process: ATen at AVX2)."""
    import hashlib

    import torch
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, s, c = torch.randn(64, 65, 648, generator=g), torch.randn(64, 8, 65, 65, generator=g), torch.rand(4096, generator=g)
    ops = {"layer_norm": lambda: torch.nn.functional.layer_norm(x, (648,)), "softmax": lambda: torch.softmax(s, -1),
           "gelu": lambda: torch.nn.functional.gelu(x), "sum": lambda: x.sum(0), "exp": lambda: c.exp(),
           "sqrt": lambda: c.sqrt(), "reciprocal": lambda: c.reciprocal()}
    return {name: hashlib.sha256(op().numpy().tobytes()).hexdigest()[:12] for name, op in ops.items()}


def child(args: list[str], env: dict, prefix: tuple[str, ...] = ()) -> dict:
    proc = subprocess.run([*prefix, sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--rates"]:
        return print(json.dumps(rates(sys.argv[2])))
    if sys.argv[1:2] == ["--agreement"]:
        from lmc import kernels
        return print(json.dumps({"fixed kernel": kernels.probe(), **aten_probe()}))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--emulate", default="", help="comma-separated QEMU CPU models (qemu-x86_64 -cpu help)")
    args = parser.parse_args()
    top = header()
    found: dict[str, dict[str, list[float]]] = {}
    for rep in range(args.repeats):
        for setting, env in SETTINGS.items():
            for name, rate in child(["--rates", setting], env).items():
                found.setdefault(setting, {}).setdefault(name, []).append(rate)
        print(f"repeat {rep + 1} done", file=sys.stderr)
    median = {s: {n: statistics.median(v) for n, v in per.items()} for s, per in found.items()}
    lines = ["# Matrix-product kernels for the portable mode", "", f"{top}; median of {args.repeats} runs.", "",
             "fp32 GFLOP/s per product (`rows × inner × columns`). Fixed kernel: lmc.kernels.mm, one "
             "single-threaded call of OpenBLAS's Haswell sgemm; two side by side: two at once on two threads.", "",
             "| product | " + " | ".join(SETTINGS) + " | fixed, 2 side by side / MKL native |",
             "|---|" + "---|" * (len(SETTINGS) + 1)]
    for name, (m, k, n) in SHAPES.items():
        row = [f"{median[s][name]:.1f}" for s in SETTINGS]
        ratio = median["fixed kernel, 2 side by side"][name] / median["MKL native"][name]
        lines.append(f"| {name.strip()} ({m}×{k}×{n}) | " + " | ".join(row) + f" | {ratio:.2f} |")
    models = [m for m in args.emulate.split(",") if m]
    if models:
        aten = {"ATEN_CPU_CAPABILITY": "avx2", "OPENBLAS_CORETYPE": "Haswell"}
        here = child(["--agreement"], aten)
        there = {m: child(["--agreement"], aten, ("qemu-x86_64", "-cpu", m)) for m in models}
        lines += ["", "## The same bytes under QEMU's emulation of other CPUs", "",
                  "Each probe computed here and under `qemu-x86_64 -cpu MODEL` (one thread; ATen at AVX2). "
                  "Fixed kernel: lmc.kernels.probe (products forward and backward); the others: one ATen AVX2 "
                  "element-wise kernel each. QEMU computes approximate instructions (rcpps, rsqrtps) its own way, "
                  "so agreement under emulation shows a kernel portable only where it uses exact instructions (as "
                  "sgemm does); one that differs there is not portable.", "",
                  "| probe | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for name in here:
            lines.append(f"| {name} | " + " | ".join("same" if there[m][name] == here[name] else "**differs**"
                                                     for m in models) + " |")
    (ROOT / "reports/kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
