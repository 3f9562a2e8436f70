"""report: metrics, the α curve as CSV, a markdown summary and a figure, under reports/."""
import json

from lmc import report
from lmc.io import write_text_atomic
from lmc.spec import load_params
from lmc.stage import entry
from stages.interpolate import OUT_PATH as CURVES_PATH

METRICS = "reports/metrics.json"
CURVE_CSV = "reports/interpolation.csv"
SUMMARY = "reports/summary.md"
FIGURE = "reports/interpolation.png"


@entry
def main() -> None:
    spec = load_params()
    with open(CURVES_PATH) as f:
        curves = json.load(f)
    metrics = report.metrics_from_curves(curves)
    frame = report.curves_frame(curves)
    title = f"{spec.model} L={spec.depth} on {spec.dataset}, {spec.optimizer} lr={spec.lr:g}"
    write_text_atomic(METRICS, json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(CURVE_CSV, frame.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(SUMMARY, report.summary_markdown(metrics, title))
    report.error_figure(frame, title, FIGURE)


if __name__ == "__main__":
    main()
