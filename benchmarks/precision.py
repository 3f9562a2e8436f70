"""Does the training precision move the barrier? One cell trained at fp32, tf32 and bf16 on one GPU, every other
setting equal; the path is evaluated in fp32 each time (lmc/step.py: precision is training's arithmetic).

    python benchmarks/precision.py --mnist DIR              # writes reports/precision.md and .json

The cell is Table 2's adam-hi at the paper scale (studies/studies.yaml: MLP at the Toeplitz width on full MNIST,
Adam lr 0.005, batch 1024, 200 epochs, 3 pairs): the one setup of Table 2 whose barrier is not near zero, so a
shift would show. Needs full MNIST in torchvision's layout (DIR/MNIST/raw).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.header

from benchmarks.header import header  # noqa: E402
from lmc import api, datasets  # noqa: E402
from lmc.spec import spec_from_dict  # noqa: E402

CELL = {"dataset": "mnist", "model": "mlp", "depth": 2, "width": "auto", "optimizer": "adam", "lr": 0.005,
        "batch_size": 1024, "epochs": 200, "refine_alphas": 4, "pairs": 3, "device": "cuda"}
SHOWN = ("barrier_test", "barrier_train", "barrier_test_ci_low", "barrier_test_ci_high", "barrier_test_refined",
         "barrier_test_cross_init", "acc_test_a", "acc_test_b")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder holding MNIST in torchvision's layout")
    parser.add_argument("--epochs", type=int, default=CELL["epochs"])
    parser.add_argument("--width", default=CELL["width"], help="hidden width (a quick check of the script: small)")
    parser.add_argument("--device", default=CELL["device"], choices=("cpu", "cuda"))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path("reports/precision.md"))
    args = parser.parse_args(argv)
    train, test = datasets.read_mnist(args.mnist)
    rows = {}
    cell = {**CELL, "epochs": args.epochs, "device": args.device,
            "width": args.width if args.width == "auto" else int(args.width)}
    for precision in args.precisions:
        spec = spec_from_dict({**cell, "precision": precision})
        start = time.perf_counter()
        result = api.experiment(spec, train, test)  # its metrics came back to the host: the work is done
        rows[precision] = {"seconds": time.perf_counter() - start, "status": result["status"],
                           **{k: result["metrics"][k] for k in SHOWN}}
        print(precision, json.dumps(rows[precision]), flush=True)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "the CPU"
    lines = ["# Does the training precision move the barrier?", "",
             f"{header('python benchmarks/precision.py --mnist DIR')}, one run on {where} "
             f"(torch {torch.__version__}). Cell: " + ", ".join(f"{k}={v}" for k, v in cell.items()) +
             "; the path is evaluated in fp32 for every precision.", "",
             "| precision | status | test barrier (%) | 95% interval | refined | train barrier (%) | cross-init test (%) "
             "| test acc A / B (%) | wall time (s, training + evaluation) |", "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for precision, r in rows.items():
        lines.append(f"| {precision} | {r['status']} | {pct(r['barrier_test'])} | [{pct(r['barrier_test_ci_low'])}, "
                     f"{pct(r['barrier_test_ci_high'])}] | {pct(r['barrier_test_refined'])} | {pct(r['barrier_train'])} "
                     f"| {pct(r['barrier_test_cross_init'])} | {pct(r['acc_test_a'])} / {pct(r['acc_test_b'])} "
                     f"| {r['seconds']:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"cell": cell, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
