"""report: metrics, the α curve as CSV, a markdown summary and a figure, under reports/."""
import json

from lmc import paths, report
from lmc.io import write_text_atomic
from lmc.models import CheckpointError
from lmc.spec import load_params
from lmc.stage import entry


def read_curves() -> dict:
    """data/interpolation.json as the interpolate stage wrote it, or one line naming the stage to rerun."""
    if not paths.CURVES.exists():
        raise CheckpointError(f"{paths.CURVES} is missing; run `{paths.repro('interpolate')}` to create it")
    try:
        curves = json.loads(paths.CURVES.read_text())
        complete = {"alpha", "status"} <= set(curves) and (curves["status"] != "ok" or "pairs" in curves)
    except (OSError, ValueError, TypeError):
        complete = False
    if not complete:
        raise CheckpointError(f"{paths.CURVES} is damaged or not the interpolate stage's; rerun "
                              f"`{paths.repro('interpolate', force=True)}`")
    return curves


@entry
def main() -> None:
    spec = load_params()
    curves = read_curves()
    metrics = report.metrics_from_curves(curves)
    frame = report.curves_frame(curves)
    title = f"{spec.model} L={spec.depth} on {spec.dataset}, {spec.optimizer} lr={spec.lr:g}"
    write_text_atomic(paths.METRICS, json.dumps(report.shown_first(metrics), indent=2) + "\n")
    write_text_atomic(paths.CURVE_CSV, frame.to_csv(index=False, float_format="%.6f"))
    pair_frame = report.pair_curves_frame(curves)
    write_text_atomic(paths.PAIR_CURVE_CSV, pair_frame.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(paths.SUMMARY, report.summary_markdown(metrics, title))
    report.error_figure(curves, title, paths.FIGURE)


if __name__ == "__main__":
    main()
