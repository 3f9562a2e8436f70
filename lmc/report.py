"""From interpolation curves to what users read: metrics, a CSV, a markdown summary and a figure."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from scipy import stats

from .connectivity import barrier, normalized_barrier
from .io import write_bytes_atomic

THRESHOLD = 0.02  # "linearly mode-connected" below a 2% error barrier (Frankle et al. 2020)
SPLITS = ("train", "test")
PAIR_KEYS = ("barrier_train", "barrier_test", "normalized_barrier_train", "normalized_barrier_test",
             "loss_barrier_train", "loss_barrier_test", "acc_train_a", "acc_train_b", "acc_test_a", "acc_test_b",
             "barrier_train_refined", "barrier_test_refined", "peak_alpha_train", "peak_alpha_test")
INTERVAL_KEYS = ("barrier_train", "barrier_test", "normalized_barrier_train", "normalized_barrier_test")
METRIC_KEYS = (PAIR_KEYS + ("pairs",) + tuple(f"{k}_{end}" for k in INTERVAL_KEYS for end in ("ci_low", "ci_high"))
               + ("barrier_train_cross_init", "barrier_test_cross_init", "status"))


# What `dvc exp show` puts first (reports/metrics.json's order): the comparison, then the rest in METRIC_KEYS.
SHOWN_FIRST = ("barrier_test", "barrier_train", "acc_test_a", "acc_test_b", "acc_train_a", "acc_train_b", "status")


def shown_first(metrics: dict) -> dict:
    """`metrics` with the SHOWN_FIRST keys first (the study cells keep METRIC_KEYS' order)."""
    return {**{k: metrics[k] for k in SHOWN_FIRST}, **{k: v for k, v in metrics.items() if k not in SHOWN_FIRST}}


def pair_metrics(curves: dict, alphas) -> dict:
    """The barriers and accuracies of one pair's curves (fractions). The *_refined barriers take the refined
    points in too (equal to the grid's barrier when there are none); peak_alpha is where the error peaks."""
    m = {}
    for split in SPLITS:
        err = curves[f"{split}_error"]
        fine = curves.get(f"{split}_refined", {"alpha": [], "error": []})
        m[f"barrier_{split}"] = barrier(err)
        m[f"barrier_{split}_refined"] = barrier(err, fine["error"])
        points = list(zip(list(alphas) + fine["alpha"], err + fine["error"]))
        m[f"peak_alpha_{split}"] = max(points, key=lambda p: p[1])[0]
        m[f"loss_barrier_{split}"] = barrier(curves[f"{split}_loss"])
        m[f"acc_{split}_a"], m[f"acc_{split}_b"] = 1 - err[0], 1 - err[-1]
    for split in SPLITS:
        m[f"normalized_barrier_{split}"] = normalized_barrier(m[f"barrier_{split}"], m["acc_test_a"], m["acc_test_b"])
    return m


def interval95(values) -> tuple[float, float] | tuple[None, None]:
    """Student-t 95% confidence interval of the mean of `values` (None, None for fewer than 2)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None, None
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def metrics_from_curves(curves: dict) -> dict:
    """The flat metrics of one experiment (fractions; None where undefined): each pair metric as the mean over
    the twin pairs, a 95% interval of the barriers' means, and the barrier between two inits' A models."""
    if curves["status"] != "ok":
        return {k: (curves["status"] if k == "status" else None) for k in METRIC_KEYS}
    per_pair = [pair_metrics(c, curves["alpha"]) for c in curves["pairs"]]
    m = {k: float(np.mean([p[k] for p in per_pair])) for k in PAIR_KEYS}
    m["pairs"] = len(per_pair)
    for k in INTERVAL_KEYS:
        m[f"{k}_ci_low"], m[f"{k}_ci_high"] = interval95([p[k] for p in per_pair])
    cross = curves.get("cross_init")
    for split in SPLITS:
        m[f"barrier_{split}_cross_init"] = barrier(cross[f"{split}_error"]) if cross else None
    m["status"] = "ok"
    return {k: (round(m[k], 6) if isinstance(m[k], float) else m[k]) for k in METRIC_KEYS}


def curves_frame(curves: dict) -> pd.DataFrame:
    """One row per α of the grid: alpha, train_error, test_error, train_loss, test_loss, each the mean over
    the twin pairs (NaN where diverged)."""
    cols = ("train_error", "test_error", "train_loss", "test_loss")
    pairs = curves.get("pairs", [{}])
    means = {c: np.mean([p[c] for p in pairs], axis=0) if c in pairs[0] else float("nan") for c in cols}
    return pd.DataFrame({"alpha": curves["alpha"], **means})


def pair_curves_frame(curves: dict) -> pd.DataFrame:
    """Long form for `dvc plots show`, one row per (pair, split, α) of the grid: alpha, pair, split, error,
    loss; one fixed plot definition draws every pair whatever `pairs` is. Empty where diverged."""
    rows = [(a, i, split, e, l) for i, pair in enumerate(curves.get("pairs", [])) for split in SPLITS
            for a, e, l in zip(curves["alpha"], pair[f"{split}_error"], pair[f"{split}_loss"])]
    return pd.DataFrame(rows, columns=["alpha", "pair", "split", "error", "loss"])


def pairs_frame(curves: dict) -> pd.DataFrame:
    """Long form, one row per (pair, split, α) on the grid and the refined points: pair, split, alpha, error,
    refined (bool); empty where diverged."""
    rows = []
    for i, pair in enumerate(curves.get("pairs", [])):
        for split in SPLITS:
            for a, e in zip(curves["alpha"], pair[f"{split}_error"]):
                rows.append((i, split, a, e, False))
            fine = pair.get(f"{split}_refined", {"alpha": [], "error": []})
            rows += [(i, split, a, e, True) for a, e in zip(fine["alpha"], fine["error"])]
    return pd.DataFrame(rows, columns=["pair", "split", "alpha", "error", "refined"])


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def summary_markdown(metrics: dict, title: str) -> str:
    lines = [f"# {title}", ""]
    if metrics["status"] != "ok":
        return "\n".join(lines + [f"**unstable**: training {metrics['status']}; no barrier is defined.", ""])
    connected = metrics["barrier_test"] < THRESHOLD and metrics["barrier_train"] < THRESHOLD
    verdict = "linearly mode-connected" if connected else "NOT linearly mode-connected"
    n = metrics["pairs"]
    over = f", mean of {n} twin pairs" if n > 1 else ""
    lines += [f"Verdict: **{verdict}** (error barriers below {THRESHOLD:.0%} on train and test{over}).", "",
              "| metric | train | test |", "|---|---|---|"]
    rows = [("error barrier (%)", "barrier_{}", 100), ("normalized barrier (%)", "normalized_barrier_{}", 100),
            ("loss barrier", "loss_barrier_{}", 1), ("accuracy A (%)", "acc_{}_a", 100),
            ("accuracy B (%)", "acc_{}_b", 100)]
    for label, key, scale in rows:
        lines.append(f"| {label} | {metrics[key.format('train')] * scale:.2f} | {metrics[key.format('test')] * scale:.2f} |")
    if n > 1:
        ci = [f"{_pct(metrics[f'barrier_{s}_ci_low'])} – {_pct(metrics[f'barrier_{s}_ci_high'])}" for s in SPLITS]
        lines.append(f"| error barrier, 95% interval (%) | {ci[0]} | {ci[1]} |")
    lines += [f"| error barrier with the refined α (%) | {_pct(metrics['barrier_train_refined'])} | "
              f"{_pct(metrics['barrier_test_refined'])} |",
              f"| α of the highest error | {metrics['peak_alpha_train']:.3f} | {metrics['peak_alpha_test']:.3f} |"]
    if metrics["barrier_test_cross_init"] is not None:
        lines.append(f"| error barrier between two inits' A (%) | {_pct(metrics['barrier_train_cross_init'])} | "
                     f"{_pct(metrics['barrier_test_cross_init'])} |")
    return "\n".join(lines + [""])


def save_figure(fig, path) -> None:
    """PNG bytes that depend on the data only (no software/version stamp)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    write_bytes_atomic(path, buf.getvalue())


def error_figure(curves: dict, title: str, path) -> None:
    """Error along the path, one line per twin pair and split; refined α points as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = pairs_frame(curves)
    long["error"] *= 100
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if long.empty:
        ax.text(0.5, 0.5, f"unstable: training {curves['status']}", ha="center", transform=ax.transAxes)
    else:
        grid, fine = long[~long["refined"]], long[long["refined"]]
        sns.lineplot(data=grid, x="alpha", y="error", hue="split", units="pair", estimator=None, marker="o", ax=ax,
                     alpha=0.8 if grid["pair"].nunique() > 1 else 1.0)
        if len(fine):
            sns.scatterplot(data=fine, x="alpha", y="error", hue="split", marker="X", legend=False, ax=ax)
    ax.set(xlabel="α (0 = A, 1 = B)", ylabel="error (%)", title=title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
