"""One training step of K stacked MLPs: vmap (batched matmuls) against a loop over the models (plain matmuls).

    python benchmarks/stacking.py [--device cuda]

Evidence for how lmc.models runs a stack on each device. Prints the median step time of each way, and
whether the two give the same bytes (they need not: batched and plain matmul kernels sum in other orders).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.header

import lmc  # noqa: E402,F401  (pins the CPU kernels and the cuBLAS workspace, as the pipeline runs)
from benchmarks.header import header  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, vmap  # noqa: E402


def step(model, state, x, y, loop: bool):
    params = {n: t.clone().requires_grad_() for n, t in state.items()}
    if loop:
        slices = {n: t.unbind(0) for n, t in params.items()}
        out = torch.stack([functional_call(model, {n: s[i] for n, s in slices.items()}, (x[i],))
                           for i in range(len(x))])
    else:
        out = vmap(lambda p, xx: functional_call(model, p, (xx,)))(params, x)
    loss = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(len(x), -1).mean(1)
    loss.sum().backward()
    return out.detach(), [params[n].grad for n in params]


def median_time(fn, device, reps=20) -> float:
    times = []
    for _ in range(reps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[3:])[reps // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    device = torch.device(parser.parse_args().device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    print(header())
    print(f"{device.type}: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}, batch 128, MLP 784-width-10")
    print("| K models | width | vmap ms/step | loop ms/step | loop/vmap | same bytes |")
    print("|---|---|---|---|---|---|")
    for k in (2, 16):
        for width in (512, 2048, 6272):
            model = nn.Sequential(nn.Linear(784, width), nn.LeakyReLU(), nn.Linear(width, 10)).to(device)
            state = {n: torch.randn(k, *t.shape, device=device) * 0.05 for n, t in model.state_dict().items()}
            x, y = torch.randn(k, 128, 784, device=device), torch.randint(0, 10, (k, 128), device=device)
            runs = [step(model, state, x, y, loop) for loop in (False, True)]
            same = torch.equal(runs[0][0], runs[1][0]) and all(map(torch.equal, runs[0][1], runs[1][1]))
            t_vmap, t_loop = (median_time(lambda: step(model, state, x, y, loop), device) for loop in (False, True))
            print(f"| {k} | {width} | {t_vmap * 1e3:.2f} | {t_loop * 1e3:.2f} | {t_loop / t_vmap:.2f} | {same} |",
                  flush=True)


if __name__ == "__main__":
    main()
