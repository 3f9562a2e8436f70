import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lmc import report, studies, studies_dvc, study_report
from lmc.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]
RAW = studies.load(ROOT / studies.STUDIES_FILE)


def test_generated_dvc_yaml_is_up_to_date():
    assert (ROOT / studies.DVC_FILE).read_text() == studies_dvc.generate(RAW), "run `python -m lmc.studies_dvc`"


@pytest.mark.parametrize("scale", studies.SCALES)
def test_every_cell_resolves_to_a_valid_spec_at_every_scale(scale):
    raw = {**RAW, "scale": scale}
    ids = []
    for study in studies.study_names(raw):
        for cell in studies.cells(raw, study):
            spec = studies.resolve(raw, cell)
            ids.append(f"{study}-{cell.id}")
            if studies.paper_dataset(raw, cell) == "mnist":
                assert spec.dataset == ("mnist5k" if scale == "cpu" else "mnist")
            if scale == "smoke":  # the paper's settings, 2 epochs
                paper = studies.resolve({**raw, "scale": "paper"}, cell)
                assert spec.epochs == 2 and spec.device == "cuda"
                assert (spec.batch_size, spec.width, spec.pairs) == (paper.batch_size, paper.width, paper.pairs)
    assert len(ids) == len(set(ids))


def test_per_scale_values_and_layer_precedence():
    cell = studies.find_cell(RAW, "table1", "L1-bs30k-adam-hi")
    cpu, paper, smoke = (studies.resolve(RAW, cell, s) for s in studies.SCALES)
    assert (cpu.model, cpu.depth, cpu.optimizer, cpu.lr) == ("linear", 1, "adam", 0.005)
    assert (cpu.batch_size, cpu.epochs, paper.batch_size, paper.epochs) == (2000, 100, 30000, 200)
    assert (smoke.batch_size, smoke.epochs) == (30000, 2)  # like: paper, then the smoke scale's overrides
    warm = studies.find_cell(RAW, "table2", "adam-hi-warmup")
    assert [studies.resolve(RAW, warm, s).warmup_epochs for s in studies.SCALES] == [1, 10, 1]  # its own value
    plain = studies.resolve(RAW, studies.find_cell(RAW, "table1", "L4-sgd-med"), "cpu")
    assert (plain.batch_size, plain.epochs, plain.width) == (128, 20, 512)  # the cpu scale's defaults
    assert studies.resolve(RAW, studies.find_cell(RAW, "fig2", "vit-lo"), "paper").width == "auto"


def test_paper_numbers_name_existing_cells():
    for study in studies.study_names(RAW):
        ids = {c.id for c in studies.cells(RAW, study)}
        s = RAW["studies"][study]
        assert set(s.get("paper", {})) <= ids and set(s.get("paper_accuracy", {})) <= ids


def test_a_cell_depends_on_exactly_the_entries_that_define_it():
    cell = studies.find_cell(RAW, "fig1", "L4-p0_3")
    assert cell.param_keys == ["studies.fig1.base", "studies.fig1.axes.net.L4", "studies.fig1.axes.slope.p0_3"]
    stage = yaml.safe_load(studies_dvc.generate(RAW))["stages"]["fig1-L4-p0_3"]
    # its own scale's entry only (DVC fills ${scale} from `vars`); studies/ is its own project
    assert stage["params"] == [{"studies.yaml": ["scale", "scales.${scale}", *cell.param_keys]}]
    assert "data/mnist/train.beton" in stage["deps"] and "../lmc/study_report.py" not in stage["deps"]


def test_an_axis_value_given_per_scale_exists_only_at_the_scales_it_names():
    ids = {scale: {c.id for c in studies.cells({**RAW, "scale": scale}, "width")} for scale in studies.SCALES}
    assert "mlp-adam-hi-w2048" in ids["cpu"] and "mlp-adam-hi-w6272" not in ids["cpu"]
    assert ids["paper"] == ids["smoke"] == ids["cpu"] | {f"{s}-w{w}" for s in RAW["studies"]["width"]["axes"]["setup"]
                                                           for w in (4096, 6272)}
    cell = studies.find_cell({**RAW, "scale": "paper"}, "width", "linear-L4-adam-hi-w6272")
    assert (studies.resolve(RAW, cell, "paper").width, studies.resolve(RAW, cell, "paper").depth) == (6272, 4)
    # the generated file holds the file's scale's cells: switching to a scale with other cells makes it stale
    assert "width-mlp-sgd-hi-w6272" not in studies_dvc.generate(RAW)
    assert "width-mlp-sgd-hi-w6272" in studies_dvc.generate({**RAW, "scale": "paper"})


def test_bad_study_definitions_are_one_line_errors():
    bad = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    bad["studies"]["table2"]["axes"]["setup"]["sgd-hi"]["lr"] = -1
    with pytest.raises(SpecError, match=r"cell table2/sgd-hi at scale cpu: params: lr=-1 is out of range"):
        studies.resolve(bad, studies.find_cell(bad, "table2", "sgd-hi"))
    with pytest.raises(SpecError, match="no study 'table9'"):
        studies.cells(bad, "table9")


@pytest.mark.parametrize("change,message", [
    (lambda r: r["studies"]["table1"]["axes"]["net"].update({"L1-bs30k-sgd": {}}) or
     r["studies"]["table1"]["axes"]["opt"].update({"hi": {}}), "two cells named 'L1-bs30k-sgd-hi'"),
    (lambda r: r["studies"]["fig1"].pop("figure"), "study fig1 has no `figure:`"),
    (lambda r: r["studies"]["fig1"]["figure"].update(y="accuracy"), "figure needs x"),
    (lambda r: r.update(scale="gpu"), "scale='gpu'"),
    (lambda r: r["scales"].update(huge={}), "unknown scale 'huge'"),
    (lambda r: r["scales"]["smoke"].update(like="tiny"), "scale smoke has unknown key.* or `like:` tiny"),
    (lambda r: r["scales"]["smoke"].update(epochs=2), "scale smoke has unknown key.* epochs"),
    (lambda r: r["scales"].pop("paper"), "defines no scale.* paper"),
], ids=["duplicate ids", "no figure", "bad y", "bad scale", "unknown scale", "bad like", "bad scale key",
        "no paper scale"])
def test_bad_study_files_are_refused_on_load(tmp_path, change, message):
    raw = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    change(raw)
    (tmp_path / "studies.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=message):
        studies.load(tmp_path / "studies.yaml")


def test_dataset_per_scale_is_refused_with_the_way_to_do_it():
    raw = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    raw["studies"]["table2"]["base"]["dataset"] = {"cpu": "mnist", "paper": "cifar10"}
    with pytest.raises(SpecError, match=r"gives dataset per scale; .* `scales.<scale>.datasets`"):
        studies.paper_dataset(raw, studies.cells(raw, "table2")[0])


def row(status="ok", test=0.0, train=0.0, paper=(0.0, 0.0), paper_status="ok"):
    return pd.Series({"status": status, "barrier_test": test, "barrier_train": train,
                      "paper_status": paper_status, "paper_barrier_test": paper[0],
                      "paper_barrier_train": paper[1]})


@pytest.mark.parametrize("r,flag", [
    (row(test=0.023, train=0.0138, paper=(0.0286, 0.0292)), "⚠"),  # train on the other side
    (row(test=0.025, train=0.03, paper=(0.0286, 0.0292)), ""),
    (row(test=0.001, train=0.0, paper=(0.0005, 0.0)), ""),
    (row(status="diverged", test=None, train=None, paper=(None, None), paper_status="unstable"), ""),
    (row(status="diverged", test=None, train=None), "⚠"),
    (row(paper=(None, None), paper_status="unstable"), "⚠"),
    (row(paper=(None, None), paper_status=None), ""),
])
def test_threshold_flags(r, flag):
    assert study_report._flag(r) == flag


def fake_results(tmp_path, monkeypatch, raw, study, barrier=lambda cell: 0.01, pairs=1):
    """Cell outputs as stages.cell writes them, from curves whose pair i has test and train barrier b + i/1000."""
    monkeypatch.setattr(studies, "OUT_DIR", tmp_path / "out")
    for cell in studies.cells(raw, study):
        spec = studies.resolve(raw, cell)
        b = barrier(cell)
        curves = {"alpha": [0.0, 0.5, 1.0], "status": "diverged" if b is None else "ok"}
        if b is not None:
            curves["pairs"] = [{f"{split}_{kind}": [0.1, 0.1 + b + i / 1000, 0.1] for split in ("train", "test")
                                for kind in ("error", "loss")} for i in range(pairs)]
        path = studies.cell_output(study, cell.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"spec": dataclasses.asdict(spec), "status": curves["status"],
                                    "metrics": report.metrics_from_curves(curves), "curves": curves}))


def test_report_puts_ours_beside_the_papers_and_marks_unstable(tmp_path, monkeypatch):
    fake_results(tmp_path, monkeypatch, RAW, "table1",
                 barrier=lambda c: None if c.id == "L8-adam-hi" else (0.03 if c.id == "L1-sgd-hi" else 0.001))
    frame = study_report.cell_frame(RAW, "table1")
    text = study_report.markdown(RAW, "table1", frame)
    line = next(l for l in text.splitlines() if l.startswith("| L1 | sgd-hi |"))
    assert "3.00 / 3.00" in line and "0.06 / 0.04" in line and line.endswith("| ⚠ |")
    assert next(l for l in text.splitlines() if l.startswith("| L8 | adam-hi |")).count("unstable") == 2
    assert "24 cells: 22 linearly connected" in text and "1 unstable" in text
    for name in ("a.png", "b.png"):
        study_report.figure(RAW, "table1", frame, tmp_path / name)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_table4_accuracies_appear_in_the_fig3_report(tmp_path, monkeypatch):
    fake_results(tmp_path, monkeypatch, RAW, "fig3")
    text = study_report.markdown(RAW, "fig3", study_report.cell_frame(RAW, "fig3"))
    assert "paper test acc" in text and "| cifar100 | L4 | hi |" in text and "14.26" in text


def test_a_shared_trunk_study_gets_one_trunk_stage_its_cells_depend_on():
    stages = yaml.safe_load(studies_dvc.generate(RAW))["stages"]
    trunk = stages["trunk-spawn"]
    assert trunk["outs"] == ["trunk/spawn"] and "../stages/trunk.py" in trunk["deps"]
    assert all("trunk/spawn" in stages[f"spawn-{c.id}"]["deps"] for c in studies.cells(RAW, "spawn"))
    assert "trunk/spawn" not in stages["table2-sgd-hi"]["deps"]
    spec, steps = studies.trunk_plan(RAW, "spawn")
    assert steps == [8, 32, 64, 160, 320, 480] and spec.pairs == 3


def test_a_shared_trunk_study_whose_cells_train_differently_is_refused():
    bad = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    bad["studies"]["spawn"]["axes"]["k"]["k8"]["lr"] = 0.001
    with pytest.raises(SpecError, match="cell k8 differs from the first cell in lr"):
        studies.trunk_plan(bad, "spawn")


def test_unknown_study_keys_are_refused(tmp_path):
    raw = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    raw["studies"]["spawn"]["shared_trunks"] = True
    (tmp_path / "studies.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="study spawn has unknown key"):
        studies.load(tmp_path / "studies.yaml")


def test_report_of_several_pairs_gives_intervals_in_the_table_and_the_figure(tmp_path, monkeypatch):
    fake_results(tmp_path, monkeypatch, RAW, "table2", barrier=lambda c: 0.03, pairs=3)
    frame = study_report.cell_frame(RAW, "table2")
    text = study_report.markdown(RAW, "table2", frame)
    line = next(l for l in text.splitlines() if l.startswith("| sgd-hi |"))
    # barriers 3.0, 3.1, 3.2%: mean 3.1, half-width t(0.975, 2) · 0.1 / √3 = 0.248
    assert "3.10 / 3.10" in line and "2.85 – 3.35" in line and "Student-t 95% interval" in text
    pairs = study_report.pair_frame(RAW, "table2")
    assert len(pairs) == 15 and sorted(pairs["pair"].unique()) == [0, 1, 2]
    for name in ("a.png", "b.png"):
        study_report.figure(RAW, "table2", frame, tmp_path / name, pairs)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    one_pair = tmp_path / "one.png"
    fake_results(tmp_path, monkeypatch, RAW, "table2", barrier=lambda c: 0.03, pairs=1)
    study_report.figure(RAW, "table2", study_report.cell_frame(RAW, "table2"), one_pair,
                        study_report.pair_frame(RAW, "table2"))
    assert one_pair.read_bytes() != (tmp_path / "a.png").read_bytes()  # error bars drawn only with pairs
    mixed = pd.concat([pairs, pairs[(pairs["cell"] == "sgd-hi") & (pairs["pair"] == 0)].assign(pair=3)])
    study_report.figure(RAW, "table2", frame, tmp_path / "mixed.png", mixed)  # cells with 3 and 4 pairs
    assert (tmp_path / "mixed.png").read_bytes() != (tmp_path / "a.png").read_bytes()


def test_trunk_and_cell_stages_show_a_bar_on_a_terminal_and_nothing_else_off_one(tmp_path, betons):
    import shutil
    import subprocess
    import sys

    from .conftest import run_stage_stderr, shows_a_bar
    config = {"scale": "cpu",
              "scales": {"cpu": {"datasets": {"mnist": "mnist5k"}, "defaults": {"batch_size": 500, "width": 16}},
                         "paper": {"datasets": {}, "defaults": {}}},
              "studies": {"tinyspawn": {
                  "title": "t", "finding": "none", "shared_trunk": True,
                  "base": {"model": "mlp", "dataset": "mnist", "pairs": 1, "epochs": 2},
                  "axes": {"k": {"k3": {"spawn_step": 3}}}, "figure": {"x": "spawn_step", "y": "barrier"}}}}
    (tmp_path / studies.STUDIES_FILE).parent.mkdir(parents=True)
    (tmp_path / studies.STUDIES_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "lmc.studies_dvc"], cwd=tmp_path, check=True, env={"PYTHONPATH": str(ROOT)})
    for split, path in studies.data_paths("mnist").items():
        if split in betons:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(betons[split], tmp_path / path)
    for tty in (True, False):
        status, trunk = run_stage_stderr(tmp_path, "trunk", "tinyspawn", tty=tty)
        assert status == 0 and shows_a_bar(trunk) == tty and ("trunk tinyspawn: 100%|" in trunk) == tty, trunk
        status, cell = run_stage_stderr(tmp_path, "cell", "tinyspawn", "k3", tty=tty)
        assert status == 0 and shows_a_bar(cell) == tty and ("cell tinyspawn/k3: 100%|" in cell) == tty, cell
        if not tty:
            assert trunk.splitlines() == ["trunk tinyspawn: 1 snapshots, steps [3]"]
            assert len(cell.splitlines()) == 1 and cell.startswith("cell tinyspawn/k3: ok in ")


def test_width_report_gives_the_cross_init_barrier_and_the_studys_notes(tmp_path, monkeypatch):
    fake_results(tmp_path, monkeypatch, RAW, "width", barrier=lambda c: 0.01, pairs=2)
    for cell in studies.cells(RAW, "width"):  # A of pair 0 vs A of pair 1: a 5% barrier
        path = studies.cell_output("width", cell.id)
        result = json.loads(path.read_text())
        result["curves"]["cross_init"] = {f"{split}_{kind}": [0.1, 0.15, 0.1] for split in ("train", "test")
                                          for kind in ("error", "loss")}
        result["metrics"] = report.metrics_from_curves(result["curves"])
        path.write_text(json.dumps(result))
    # the committed notes are a dep of the report stage: editing them reruns the report
    assert "notes/width.md" in yaml.safe_load(studies_dvc.generate(RAW))["stages"]["report-width"]["deps"]
    monkeypatch.setattr(studies_dvc, "NOTES_DIR", tmp_path / "notes")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/width.md").write_text("## What the curves mean\n\nwritten by hand\n")
    frame = study_report.cell_frame(RAW, "width")
    text = study_report.markdown(RAW, "width", frame)
    header = next(l for l in text.splitlines() if l.startswith("| setup | width |"))
    assert header.endswith("| refined test / train | cross-init test / train |")
    line = next(l for l in text.splitlines() if l.startswith("| mlp-sgd-hi | w2048 |"))
    assert "| 5.00 / 5.00 |" in line and text.rstrip().endswith("written by hand")
    study_report.figure(RAW, "width", frame, tmp_path / "w.png", study_report.pair_frame(RAW, "width"))
    assert (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")
