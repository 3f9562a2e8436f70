import json

import pytest

from lmc import report

PAIR = {"train_error": [0.0, 0.1, 0.02], "test_error": [0.05, 0.2, 0.07],
        "train_loss": [0.01, 0.5, 0.03], "test_loss": [0.2, 0.9, 0.25]}
CURVES = {"alpha": [0.0, 0.5, 1.0], "status": "ok", "pairs": [PAIR]}


def test_metrics_are_flat_fractions():
    m = report.metrics_from_curves(CURVES)
    assert tuple(m) == report.METRIC_KEYS
    assert m["barrier_train"] == pytest.approx(0.09) and m["barrier_test"] == pytest.approx(0.14)
    assert m["acc_test_a"] == pytest.approx(0.95) and m["acc_test_b"] == pytest.approx(0.93)
    assert m["normalized_barrier_test"] == pytest.approx(0.14 / 0.94, abs=1e-6)
    assert m["normalized_barrier_train"] == pytest.approx(0.09 / 0.94, abs=1e-6)
    assert m["loss_barrier_train"] == pytest.approx(0.48)
    assert m["status"] == "ok" and m["pairs"] == 1
    assert m["barrier_test_ci_low"] is None and m["barrier_test_cross_init"] is None
    assert m["barrier_test_refined"] == m["barrier_test"] and m["peak_alpha_test"] == 0.5
    json.dumps(m)


def test_diverged_run_has_null_barriers_and_is_shown_unstable():
    m = report.metrics_from_curves({"alpha": [0.0, 1.0], "status": "diverged"})
    assert m["status"] == "diverged" and all(v is None for k, v in m.items() if k != "status")
    assert "unstable" in report.summary_markdown(m, "t")
    assert report.curves_frame({"alpha": [0.0, 1.0], "status": "diverged"})["test_error"].isna().all()


def test_pair_curves_are_long_form_one_row_per_pair_split_and_alpha():
    second = {k: [v + 0.01 for v in vals] for k, vals in PAIR.items()}
    frame = report.pair_curves_frame({**CURVES, "pairs": [PAIR, second]})
    assert list(frame.columns) == ["alpha", "pair", "split", "error", "loss"] and len(frame) == 2 * 2 * 3
    row = frame[(frame["pair"] == 1) & (frame["split"] == "test") & (frame["alpha"] == 0.5)]
    assert row["error"].item() == pytest.approx(0.21) and row["loss"].item() == pytest.approx(0.91)
    assert report.pair_curves_frame({"alpha": [0.0, 1.0], "status": "diverged"}).empty


def test_summary_states_the_verdict():
    text = report.summary_markdown(report.metrics_from_curves(CURVES), "t")
    assert "NOT linearly mode-connected" in text and "| error barrier (%) | 9.00 | 14.00 |" in text


def test_figure_is_byte_stable(tmp_path):
    report.error_figure(PAIRS, "t", tmp_path / "a.png")
    report.error_figure(PAIRS, "t", tmp_path / "b.png")
    png = (tmp_path / "a.png").read_bytes()
    assert png.startswith(b"\x89PNG") and png == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in png


OTHER = {"train_error": [0.02, 0.05, 0.0], "test_error": [0.07, 0.1, 0.05],
         "train_loss": [0.03, 0.2, 0.01], "test_loss": [0.25, 0.4, 0.2],
         "test_refined": {"alpha": [0.4, 0.6], "error": [0.15, 0.3], "loss": [0.5, 0.6]}}
PAIRS = {"alpha": [0.0, 0.5, 1.0], "status": "ok", "pairs": [PAIR, OTHER, PAIR],
         "cross_init": {**OTHER, "test_error": [0.07, 0.5, 0.05]}}


def test_several_pairs_give_the_mean_and_a_student_t_interval():
    m = report.metrics_from_curves(PAIRS)
    test = [0.14, 0.04, 0.14]  # the three pairs' test barriers on the grid
    assert m["pairs"] == 3 and m["barrier_test"] == pytest.approx(sum(test) / 3, abs=1e-6)
    half = 4.302653 * (sum((t - sum(test) / 3) ** 2 for t in test) / 2) ** 0.5 / 3 ** 0.5  # t(0.975, 2) = 4.3027
    assert m["barrier_test_ci_low"] == pytest.approx(sum(test) / 3 - half, abs=1e-5)
    assert m["barrier_test_ci_high"] == pytest.approx(sum(test) / 3 + half, abs=1e-5)
    assert m["barrier_test_cross_init"] == pytest.approx(0.44)


def test_refined_points_raise_the_barrier_only_where_they_peak_higher():
    m = report.pair_metrics(OTHER, [0.0, 0.5, 1.0])
    assert m["barrier_test"] == pytest.approx(0.04) and m["barrier_test_refined"] == pytest.approx(0.24)
    assert m["peak_alpha_test"] == 0.6 and m["barrier_train_refined"] == m["barrier_train"]


def test_interval_needs_two_values():
    assert report.interval95([0.1]) == (None, None)
    low, high = report.interval95([0.1, 0.1, 0.1])
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_curves_frame_is_the_mean_over_pairs():
    frame = report.curves_frame(PAIRS)
    assert frame["test_error"].tolist() == pytest.approx([0.17 / 3, 0.5 / 3, 0.19 / 3])
    long = report.pairs_frame(PAIRS)
    assert len(long) == 3 * 2 * 3 + 2 and long["refined"].sum() == 2


def test_the_report_stage_names_the_stage_to_rerun_for_missing_or_damaged_curves(tmp_path, monkeypatch):
    from lmc.models import CheckpointError
    from stages.report import read_curves

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"^data/interpolation.json is missing; run `dvc repro interpolate`"):
        read_curves()
    (tmp_path / "data").mkdir()
    for damaged in ('{"alpha": [0', '[1]', json.dumps({"alpha": [0.0], "status": "ok"})):  # cut, foreign, no pairs
        (tmp_path / "data/interpolation.json").write_text(damaged)
        with pytest.raises(CheckpointError, match=r"damaged or not the interpolate stage's; rerun `dvc repro -f "):
            read_curves()
    (tmp_path / "data/interpolation.json").write_text(json.dumps({"alpha": [0.0], "status": "diverged"}))
    assert read_curves()["status"] == "diverged"  # an unstable run has no pairs, and is a result
    (tmp_path / "data/interpolation.json").write_text(json.dumps(CURVES))
    assert read_curves() == CURVES
