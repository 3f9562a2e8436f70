"""From interpolation curves to what users read: metrics, a CSV, a markdown summary and a figure."""
from __future__ import annotations

import io

import pandas as pd

from .connectivity import barrier, normalized_barrier
from .io import write_bytes_atomic

THRESHOLD = 0.02  # "linearly mode-connected" below a 2% error barrier (Frankle et al. 2020)
METRIC_KEYS = ("barrier_train", "barrier_test", "normalized_barrier_train", "normalized_barrier_test",
               "loss_barrier_train", "loss_barrier_test", "acc_train_a", "acc_train_b", "acc_test_a",
               "acc_test_b", "status")


def metrics_from_curves(curves: dict) -> dict:
    """The flat metrics of one twin experiment (fractions; None where a twin diverged)."""
    if curves["status"] != "ok":
        return {k: (curves["status"] if k == "status" else None) for k in METRIC_KEYS}
    m = {}
    for split in ("train", "test"):
        err = curves[f"{split}_error"]
        m[f"barrier_{split}"] = barrier(err)
        m[f"loss_barrier_{split}"] = barrier(curves[f"{split}_loss"])
        m[f"acc_{split}_a"], m[f"acc_{split}_b"] = 1 - err[0], 1 - err[-1]
    for split in ("train", "test"):
        m[f"normalized_barrier_{split}"] = normalized_barrier(m[f"barrier_{split}"], m["acc_test_a"], m["acc_test_b"])
    m["status"] = "ok"
    return {k: (round(m[k], 6) if isinstance(m[k], float) else m[k]) for k in METRIC_KEYS}


def curves_frame(curves: dict) -> pd.DataFrame:
    """One row per α: alpha, train_error, test_error, train_loss, test_loss (NaN where diverged)."""
    cols = ("train_error", "test_error", "train_loss", "test_loss")
    return pd.DataFrame({"alpha": curves["alpha"], **{c: curves.get(c, float("nan")) for c in cols}})


def summary_markdown(metrics: dict, title: str) -> str:
    lines = [f"# {title}", ""]
    if metrics["status"] != "ok":
        return "\n".join(lines + [f"**unstable**: training {metrics['status']}; no barrier is defined.", ""])
    connected = metrics["barrier_test"] < THRESHOLD and metrics["barrier_train"] < THRESHOLD
    verdict = "linearly mode-connected" if connected else "NOT linearly mode-connected"
    lines += [f"Verdict: **{verdict}** (error barriers below {THRESHOLD:.0%} on train and test).", "",
              "| metric | train | test |", "|---|---|---|"]
    rows = [("error barrier (%)", "barrier_{}", 100), ("normalized barrier (%)", "normalized_barrier_{}", 100),
            ("loss barrier", "loss_barrier_{}", 1), ("accuracy A (%)", "acc_{}_a", 100),
            ("accuracy B (%)", "acc_{}_b", 100)]
    for label, key, scale in rows:
        lines.append(f"| {label} | {metrics[key.format('train')] * scale:.2f} | {metrics[key.format('test')] * scale:.2f} |")
    return "\n".join(lines + [""])


def save_figure(fig, path) -> None:
    """PNG bytes that depend on the data only (no software/version stamp)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    write_bytes_atomic(path, buf.getvalue())


def error_figure(frame: pd.DataFrame, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = frame.melt(id_vars="alpha", value_vars=["train_error", "test_error"], var_name="split", value_name="error")
    long["split"] = long["split"].str.replace("_error", "")
    long["error"] *= 100
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.lineplot(data=long, x="alpha", y="error", hue="split", marker="o", ax=ax)
    ax.set(xlabel="α (0 = A, 1 = B)", ylabel="error (%)", title=title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
