import json

import pytest

from lmc import report

CURVES = {"alpha": [0.0, 0.5, 1.0], "status": "ok",
          "train_error": [0.0, 0.1, 0.02], "test_error": [0.05, 0.2, 0.07],
          "train_loss": [0.01, 0.5, 0.03], "test_loss": [0.2, 0.9, 0.25]}


def test_metrics_are_flat_fractions():
    m = report.metrics_from_curves(CURVES)
    assert tuple(m) == report.METRIC_KEYS
    assert m["barrier_train"] == pytest.approx(0.09) and m["barrier_test"] == pytest.approx(0.14)
    assert m["acc_test_a"] == pytest.approx(0.95) and m["acc_test_b"] == pytest.approx(0.93)
    assert m["normalized_barrier_test"] == pytest.approx(0.14 / 0.94, abs=1e-6)
    assert m["normalized_barrier_train"] == pytest.approx(0.09 / 0.94, abs=1e-6)
    assert m["loss_barrier_train"] == pytest.approx(0.48)
    assert m["status"] == "ok"
    json.dumps(m)


def test_diverged_run_has_null_barriers_and_is_shown_unstable():
    m = report.metrics_from_curves({"alpha": [0.0, 1.0], "status": "diverged"})
    assert m["status"] == "diverged" and all(v is None for k, v in m.items() if k != "status")
    assert "unstable" in report.summary_markdown(m, "t")
    assert report.curves_frame({"alpha": [0.0, 1.0], "status": "diverged"})["test_error"].isna().all()


def test_summary_states_the_verdict():
    text = report.summary_markdown(report.metrics_from_curves(CURVES), "t")
    assert "NOT linearly mode-connected" in text and "| error barrier (%) | 9.00 | 14.00 |" in text


def test_figure_is_byte_stable(tmp_path):
    frame = report.curves_frame(CURVES)
    report.error_figure(frame, "t", tmp_path / "a.png")
    report.error_figure(frame, "t", tmp_path / "b.png")
    png = (tmp_path / "a.png").read_bytes()
    assert png.startswith(b"\x89PNG") and png == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in png
