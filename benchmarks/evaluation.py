"""What evaluating a path costs against evaluating its two endpoints, and the memory it holds, per model.

    python benchmarks/evaluation.py        # writes reports/evaluation.md

On mnist5k's 1,000 test images at the default evaluation batch, each model in a fresh process (its peak RSS is
the process's): the two endpoints alone (one stacked pass), the 11-α path, the 8 refined α, and the layerwise
curves (every layer × 11 α). Times are the best of 2 runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.header

OUT = Path("reports/evaluation.md")
CASES = {"mlp 512 (the default)": {"width": 512}, "mlp 6272 (Toeplitz)": {"width": "auto"},
         "cnn": {"model": "cnn"}, "lc_cnn": {"model": "lc_cnn"}, "vit 64": {"model": "vit", "width": 64},
         "vit 192 (fig2 at cpu scale)": {"model": "vit", "width": 192}}


def measure(case: dict) -> dict:
    import torch

    from lmc import connectivity, datasets, layerwise, models
    from lmc.spec import Spec

    spec = Spec(**case)
    a, b = (models.init_model(spec, pair) for pair in (0, 1))
    test = datasets.read_mnist5k()[1]
    images, labels = torch.from_numpy(test.images), torch.from_numpy(test.labels)
    sa, sb = a.state_dict(), b.state_dict()
    grid, fine = connectivity.alpha_grid(11), connectivity.refine_grid(connectivity.alpha_grid(11), [0, 1] + [0] * 9, 4)
    runs = {"endpoints": lambda: connectivity.evaluate_stack(a, models.stack_states([sa, sb]), images, labels, spec.dataset),
            "path": lambda: connectivity.evaluate_path(a, sa, sb, grid, images, labels, spec.dataset),
            "refined": lambda: connectivity.evaluate_path(a, sa, sb, fine, images, labels, spec.dataset),
            "layerwise": lambda: layerwise.layerwise_curves(a, sa, sb, images, labels, spec.dataset, grid)}
    seconds = {}
    for name, run in runs.items():
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        seconds[name] = best
    shape = images.shape[1:]
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # this process's peak RSS
    return {"seconds": seconds, "peak_gib": int(hwm.split()[1]) / 2 ** 20,
            "batch": connectivity.eval_batch_size(a, shape), "per_pass": connectivity.models_per_pass(a, shape),
            "layers": len(layerwise.layer_names(sa)), "bound_gib": connectivity.model_bytes(a, shape) / 2 ** 30}


def main() -> None:
    if len(sys.argv) > 1:  # the child: one case
        print(json.dumps(measure(json.loads(sys.argv[1]))))
        return
    from lmc import connectivity
    from benchmarks.header import header
    from benchmarks.throughput import machine

    lines = ["# Evaluation: a path's cost against its endpoints', and its memory", "",
             f"{header('python benchmarks/evaluation.py')}, one run. Machine: {machine()}. mnist5k's 1,000 test images; "
             f"evaluation budget EVAL_MEMORY = {connectivity.EVAL_MEMORY['cpu'] / 2 ** 30:g} GiB a pass (lmc/connectivity.py); "
             "each model in a fresh process. Times: best of 2.", "",
             "| model | batch | models a pass | one model's bound (GiB) | endpoints (s) | 11-α path (s) | × endpoints "
             "| 8 refined α (s) | × endpoints | layerwise, layers × 11 α (s) | × endpoints | peak RSS (GiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, case in CASES.items():
        out = subprocess.run([sys.executable, __file__, json.dumps(case)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        s = r["seconds"]
        lines.append(f"| {label} | {r['batch']} | {r['per_pass']} | {r['bound_gib']:.2f} | {s['endpoints']:.2f} | "
                     f"{s['path']:.2f} | {s['path'] / s['endpoints']:.1f}× | {s['refined']:.2f} | "
                     f"{s['refined'] / s['endpoints']:.1f}× | {s['layerwise']:.2f} ({r['layers']} layers) | "
                     f"{s['layerwise'] / s['endpoints']:.1f}× | {r['peak_gib']:.2f} |")
        print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
