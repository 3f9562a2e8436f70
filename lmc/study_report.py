"""A study's report: its cells' results beside the paper's numbers (markdown, CSV) and a figure; at any scale
but cpu, beside the cpu scale's results too."""
from __future__ import annotations

import json

import pandas as pd
from scipy import stats

from . import studies
from .spec import SpecError
from .report import THRESHOLD, pair_metrics, save_figure

SPLITS = ("test", "train")  # the paper's order: Test / Train


def _results(raw: dict, study: str):
    for cell in studies.cells(raw, study):
        yield cell, json.loads(studies.cell_output(raw["scale"], study, cell.id).read_text())


def _cpu_result(study: str, cell_id: str) -> dict:
    path = studies.cell_output("cpu", study, cell_id)
    if not path.exists():
        raise SpecError(f"studies: {path} is missing, and this report shows the cpu scale beside its own; run "
                        f"`make study STUDY={study}` (cpu scale) or restore it from git")
    return json.loads(path.read_text())


def missing_datasets(raw: dict, study: str) -> list[str]:
    """The paper's datasets of `study` that this scale has no cell for."""
    here = {studies.paper_dataset(raw, c) for c in studies.cells(raw, study)}
    paper = {studies.paper_dataset({**raw, "scale": "paper"}, c) for c in studies.cells({**raw, "scale": "paper"},
                                                                                           study)}
    return sorted(paper - here)


def pair_frame(raw: dict, study: str) -> pd.DataFrame:
    """One row per twin pair of every cell that trained: axis labels, spec, pair index and its metrics."""
    rows = []
    for cell, result in _results(raw, study):
        for i, curves in enumerate(result["curves"].get("pairs", [])):
            rows.append({"cell": cell.id, **cell.labels, **{f"spec_{k}": v for k, v in result["spec"].items()},
                         "pair": i, **pair_metrics(curves, result["curves"]["alpha"])})
    return pd.DataFrame(rows)


def cell_frame(raw: dict, study: str) -> pd.DataFrame:
    """One row per cell: its axis labels, its resolved spec, status, metrics and the paper's numbers."""
    s = raw["studies"][study]
    at_cpu = set(studies.cpu_cells(raw, study))
    rows = []
    for cell, result in _results(raw, study):
        paper = s.get("paper", {}).get(cell.id)
        row = {"cell": cell.id, **cell.labels, **{f"spec_{k}": v for k, v in result["spec"].items()},
               "status": result["status"], **{k: v for k, v in result["metrics"].items() if k != "status"},
               "paper_status": "unstable" if paper == "unstable" else ("ok" if paper else None),
               "paper_acc_test": s.get("paper_accuracy", {}).get(cell.id)}
        for i, split in enumerate(SPLITS):
            row[f"paper_barrier_{split}"] = paper[i] / 100 if isinstance(paper, list) else None
        if raw["scale"] != "cpu":  # the same cell at cpu scale, where it has one
            cpu = _cpu_result(study, cell.id) if cell.id in at_cpu else None
            row["cpu_status"] = cpu["status"] if cpu else None
            for split in SPLITS:
                row[f"cpu_barrier_{split}"] = cpu["metrics"].get(f"barrier_{split}") if cpu else None
            row["cpu_acc_test_a"] = cpu["metrics"].get("acc_test_a") if cpu else None
            row["cpu_acc_test_b"] = cpu["metrics"].get("acc_test_b") if cpu else None
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.2f}"


def _flag(row) -> str:
    """'⚠' where ours and the paper's fall on different sides of the 2% line (either split), or where only
    one of the two diverged; '' where they agree or the paper gives no number."""
    paper = row["paper_status"]
    if paper is None or pd.isna(paper):
        return ""
    if row["status"] != "ok" or paper == "unstable":
        return "⚠" if (row["status"] != "ok") != (paper == "unstable") else ""
    for split in SPLITS:
        if (row[f"barrier_{split}"] >= THRESHOLD) != (row[f"paper_barrier_{split}"] >= THRESHOLD):
            return "⚠"
    return ""


def markdown(raw: dict, study: str, frame: pd.DataFrame) -> str:
    s = raw["studies"][study]
    axes = list(s.get("axes", {}))
    has_paper = frame["paper_status"].notna().any()
    has_acc = frame["paper_acc_test"].notna().any()
    at_cpu = "cpu_status" in frame
    lines = [f"# {s['title']}", "", f"Scale: **{raw['scale']}** (`studies/studies.yaml`). "
             f"Paper's finding: {s['finding']}", "",
             "Barriers in %, test / train (the paper's order). Normalized = barrier / mean test accuracy of A "
             "and B (eq. 2). \"unstable\": a twin's loss turned non-finite (the paper's ∗)."]
    missing = missing_datasets(raw, study)
    if missing:
        mapped = sorted(set(raw["scales"][raw["scale"]].get("datasets", {}).values()))
        lines += ["", f"Not at this scale: the paper's {', '.join(missing)} cells. The {raw['scale']} scale "
                  + (f"trains on {', '.join(mapped)} only (machines without a network cannot download the "
                     f"others)" if mapped else "has no cell on them")
                  + "; they run at paper scale."]
    if at_cpu:
        lines += ["", "Three numbers per cell: the paper's, ours at this scale, and ours at cpu scale (the bundled "
                  f"MNIST subset, short runs: each cell's settings are in `reports/cpu/{study}.csv`), which does "
                  "not predict this scale's (README: every scale side by side)."]
    if has_paper:
        lines.append(f"⚠ marks a cell where ours and the paper's fall on different sides of the "
                     f"{THRESHOLD:.0%} line (either split), or where only one of the two diverged."
                     + ("" if raw["scale"] == "paper" else
                        f" Ours are at {raw['scale']} scale, the paper's at its own: a cell without ⚠ sits on the "
                        f"paper's side of the line here, which does not reproduce the paper's number at its scale."))
    lines.append("")
    pairs = int(frame["pairs"].max()) if frame["pairs"].notna().any() else 1
    if pairs > 1:
        lines += [f"Several twin pairs per cell (up to {pairs}): barriers are means over the pairs, with the "
                  f"Student-t 95% interval of the mean; 'refined' adds α points around each curve's peak.", ""]
    cross = "barrier_test_cross_init" in frame and frame["barrier_test_cross_init"].notna().any()
    if cross:
        lines += ["Cross-init: the barrier between A of pair 0 and A of pair 1, two different initializations "
                  "(no alignment): what LMC from one shared Θ0 is measured against.", ""]
    head = axes + ["barrier test / train", "normalized test / train", "test acc A / B"]
    if pairs > 1:
        head += ["test barrier 95% interval", "refined test / train"]
    if cross:
        head += ["cross-init test / train"]
    if has_paper:
        head += ["paper test / train", ""]
    if at_cpu:
        head += ["cpu scale test / train"]
    if has_acc:
        head += ["paper test acc"] + (["cpu scale test acc A"] if at_cpu else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in frame.iterrows():
        cells = [str(row[a]) for a in axes]
        if row["status"] != "ok":
            cells += ["unstable", "unstable", "–"]
        else:
            cells += [f"{_pct(row['barrier_test'])} / {_pct(row['barrier_train'])}",
                      f"{_pct(row['normalized_barrier_test'])} / {_pct(row['normalized_barrier_train'])}",
                      f"{_pct(row['acc_test_a'])} / {_pct(row['acc_test_b'])}"]
        if pairs > 1:
            cells += ["–", "–"] if row["status"] != "ok" else [
                f"{_pct(row['barrier_test_ci_low'])} – {_pct(row['barrier_test_ci_high'])}",
                f"{_pct(row['barrier_test_refined'])} / {_pct(row['barrier_train_refined'])}"]
        if cross:
            cells.append("–" if row["status"] != "ok" else
                         f"{_pct(row['barrier_test_cross_init'])} / {_pct(row['barrier_train_cross_init'])}")
        if has_paper:
            if row["paper_status"] == "unstable":
                cells.append("unstable")
            elif row["paper_status"] is None or pd.isna(row["paper_status"]):
                cells.append("–")
            else:
                cells.append(f"{_pct(row['paper_barrier_test'])} / {_pct(row['paper_barrier_train'])}")
            cells.append(_flag(row))
        if at_cpu:
            cpu = row["cpu_status"]
            cells.append("–" if cpu is None or pd.isna(cpu) else "unstable" if cpu != "ok" else
                         f"{_pct(row['cpu_barrier_test'])} / {_pct(row['cpu_barrier_train'])}")
        if has_acc:
            acc = row["paper_acc_test"]
            cells.append("–" if acc is None or pd.isna(acc) else f"{acc:.2f}")
            if at_cpu:
                cells.append(_pct(row["cpu_acc_test_a"]) if row["cpu_status"] == "ok" else "–")
        lines.append("| " + " | ".join(cells) + " |")
    ok = frame[frame["status"] == "ok"]
    connected = ((ok["barrier_test"] < THRESHOLD) & (ok["barrier_train"] < THRESHOLD)).sum()
    lines += ["", f"{len(frame)} cells: {connected} linearly connected (both barriers < {THRESHOLD:.0%}), "
              f"{len(ok) - connected} not, {len(frame) - len(ok)} unstable."]
    if has_paper:
        lines.append(f"{(frame.apply(_flag, axis=1) == '⚠').sum()} cells flagged ⚠"
                     + ("." if raw["scale"] == "paper" else f" ({raw['scale']} scale against the paper's scale)."))
    notes = studies.notes_path(raw["scale"], study)
    if notes.exists():  # written by hand against these results (studies/<scale>/notes/<study>.md)
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def figure(raw: dict, study: str, frame: pd.DataFrame, path, pairs: pd.DataFrame | None = None) -> None:
    """The study's `figure: {x, hue, y}` in two panels (test, train); x and hue are axis names or spec keys.
    With `pairs` (pair_frame) of n > 1 pairs in every cell, bars and points are the pairs' mean with the
    Student-t 95% interval (mean ± t(0.975, n-1)·s/√n, the tables' interval); cells with different n get no
    error bars (the table still has each cell's interval). Optional keys of `figure:`: `row` (a spec key: one
    row of panels per value, e.g. per model family, with `row_titles`), `palette: categorical` (hues that have
    no order), `accuracy` (a third panel, the test accuracy of A and B, with the paper's number for a hue as
    a horizontal line: `{<hue value>: [percent, label]}`), `cross_init` and `xscale`. In a line plot at any
    scale but cpu, the cpu scale's value of each cell is drawn beside, dotted: the scale is its own dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig_spec = raw["studies"][study]["figure"]
    col = lambda name: name if name in frame.columns else f"spec_{name}"  # noqa: E731
    x, hue = col(fig_spec["x"]), (col(fig_spec["hue"]) if "hue" in fig_spec else None)
    if pd.api.types.is_numeric_dtype(frame.get(f"spec_{fig_spec['x']}", pd.Series(dtype=object))):
        x = f"spec_{fig_spec['x']}"  # an axis named like a spec key (width: w128, …): plot along the values
    n = pairs.groupby("cell").size() if pairs is not None and len(pairs) else pd.Series(dtype=int)
    errorbar, points = None, frame
    if len(n) and n.min() > 1 and n.nunique() == 1:  # one t quantile serves every cell only if they share n
        errorbar, points = ("se", float(stats.t.ppf(0.975, int(n.iloc[0]) - 1))), pairs
    row_key = col(fig_spec["row"]) if "row" in fig_spec else None
    rows = list(dict.fromkeys(frame[row_key])) if row_key else [None]
    panels = list(SPLITS) + (["accuracy"] if fig_spec.get("accuracy") else [])
    hues = list(dict.fromkeys(frame[hue].astype(str))) if hue else []
    palette = dict(zip(hues, sns.color_palette("tab10" if fig_spec.get("palette") == "categorical" else "viridis",
                                               len(hues))))
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(5.5 * len(panels) + 2.5, 4 * len(rows)),
                             squeeze=False)
    for r, row_value in enumerate(rows):
        row_legend = {}  # one legend per row, right of its panels (lines: in the panels, it hid the data)
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            if c and panel != "accuracy":
                ax.sharey(axes[r][0])
            pick = (lambda f: f[f[row_key] == row_value]) if row_key else (lambda f: f)  # noqa: E731
            handles = _panel(ax, fig_spec, panel, pick(points), pick(frame), x, hue, palette, errorbar,
                             raw["scale"])
            row_legend.update({h.get_label(): h for h in handles})
            title = panel if panel != "accuracy" else "test accuracy, mean of A and B"
            if row_key:
                title = f"{fig_spec.get('row_titles', {}).get(row_value, row_value)}: {title}"
            ax.set_title(title, fontsize=10)
        if row_legend:
            axes[r][-1].legend(handles=list(row_legend.values()), title=fig_spec.get("hue"), fontsize=8,
                               title_fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1))
    unstable = frame.loc[frame["status"] != "ok", "cell"].tolist()
    title = raw["studies"][study]["title"] + f"  [{raw['scale']} scale]"
    if unstable:
        title += "\nunstable (not drawn): " + ", ".join(unstable)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _panel(ax, fig_spec: dict, panel: str, points: pd.DataFrame, cells: pd.DataFrame, x: str, hue: str | None,
           palette: dict, errorbar, scale: str) -> list:
    """One panel: a split's barrier (or the test accuracy) against x, one line or bar group per hue. Returns
    the legend's handles of a line plot (a bar plot keeps its legend in the panel)."""
    import matplotlib.lines
    import matplotlib.ticker
    import seaborn as sns

    y = fig_spec["y"]
    ok = cells[cells["status"] == "ok"]
    if panel == "accuracy":
        value = lambda f: 50 * (f["acc_test_a"].astype(float) + f["acc_test_b"].astype(float))  # noqa: E731
        cpu_value = lambda f: 50 * (f["cpu_acc_test_a"].astype(float) + f["cpu_acc_test_b"].astype(float))  # noqa: E731
        ylabel = "test accuracy (%)"
    else:
        value = lambda f: 100 * f[f"{y}_{panel}"].astype(float)  # noqa: E731
        cpu_value = lambda f: 100 * f[f"cpu_barrier_{panel}"].astype(float)  # noqa: E731
        ylabel = ("normalized barrier" if y == "normalized_barrier" else "barrier") + " (%)"
    hue_kw = lambda f: ({"hue": f[hue].astype(str), "palette": palette,  # noqa: E731
                         "hue_order": [h for h in palette if h in set(f[hue].astype(str))]} if hue else {})
    part = points.assign(value=value(points))
    numeric_x = pd.api.types.is_numeric_dtype(part[x])
    legend = []
    if numeric_x:
        part_hue = hue_kw(part)
        sns.lineplot(data=part, x=x, y="value", marker="o", ax=ax, errorbar=errorbar, legend=False, **part_hue)
        legend = [matplotlib.lines.Line2D([], [], color=palette.get(h, "C0"), marker="o", label=h)
                  for h in (part_hue.get("hue_order") or [])]
        styles = [("solid", f"{scale} scale" + (" (mean, 95% interval)" if errorbar else ""))]
        if fig_spec.get("cross_init") and panel != "accuracy":  # A of pair 0 vs A of pair 1, one value per cell
            sns.lineplot(x=ok[x], y=100 * ok[f"barrier_{panel}_cross_init"].astype(float), marker="x", linestyle="--",
                         ax=ax, legend=False, errorbar=None, **hue_kw(ok))
            styles.append(("--", "cross-init (A of two inits)"))
        if "cpu_status" in cells:  # the same cells at cpu scale, where they ran
            cpu = cells[cells["cpu_status"] == "ok"]
            if len(cpu):
                sns.lineplot(x=cpu[x], y=cpu_value(cpu), marker="s", linestyle=":", ax=ax, legend=False,
                             errorbar=None, **hue_kw(cpu))
                styles.append((":", "cpu scale"))
        if panel == "accuracy":
            for h, (percent, label) in fig_spec["accuracy"].items() if isinstance(fig_spec["accuracy"], dict) else ():
                if h in palette and h in set(part[hue].astype(str)):
                    ax.axhline(percent, color=palette[h], lw=1, ls="-.")
                    styles.append(("-.", f"paper: {h} {percent}% ({label})"))
        if len(styles) > 1:  # what each line style means, where there is more than one
            legend += [matplotlib.lines.Line2D([], [], color="gray", linestyle=ls, label=lab) for ls, lab in styles]
        values = sorted(part[x].unique())
        if fig_spec.get("xscale") == "symlog":  # steps 0, 8, …, 480: spread the small ones out
            ax.set_xscale("symlog", linthresh=min(v for v in values if v > 0))
            ax.set_xlim(values[0], values[-1] * 1.1)
        elif fig_spec.get("xscale") == "log":  # widths 128, 256, …: equal steps for each doubling
            ax.set_xscale("log", base=2)
        if fig_spec.get("xscale") in ("symlog", "log"):
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    else:
        sns.barplot(data=part, x=x, y="value", ax=ax, errorbar=errorbar, **hue_kw(part))
        ax.tick_params(axis="x", labelrotation=20)
    if panel != "accuracy":
        ax.axhline(100 * THRESHOLD, color="red", lw=0.8, ls="--")
    ax.set(xlabel=fig_spec["x"], ylabel=ylabel)
    if hue and not numeric_x:
        ax.legend(*ax.get_legend_handles_labels(), title=fig_spec["hue"], fontsize=8)
    return legend
