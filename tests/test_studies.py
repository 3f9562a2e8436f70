import dataclasses
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lmc import report, studies, studies_dvc, study_report
from lmc.spec import Spec, SpecError

ROOT = Path(__file__).resolve().parents[1]
RAW = studies.load("cpu", ROOT / studies.STUDIES_FILE)
PAPER = {**RAW, "scale": "paper"}


def test_the_file_is_seen_at_the_scale_asked_for():
    assert RAW["scale"] == "cpu" and studies.scale_names(RAW) == list(studies.SCALES)
    assert studies.load("paper", ROOT / studies.STUDIES_FILE)["scale"] == "paper"
    assert studies.load(path=ROOT / studies.STUDIES_FILE)["scale"] == "cpu"  # cpu unless told


@pytest.mark.parametrize("scale", studies.SCALES)
def test_generated_dvc_yaml_is_up_to_date(scale):
    assert studies.dvc_file(scale) == Path("studies") / scale / "dvc.yaml"
    assert (ROOT / studies.dvc_file(scale)).read_text() == studies_dvc.generate({**RAW, "scale": scale}), \
        "run `python -m lmc.studies_dvc`"


def test_each_scale_has_its_own_paths():
    assert studies.cell_output("paper", "table2", "sgd-hi") == Path("studies/paper/out/table2/sgd-hi.json")
    assert studies.trunk_path("smoke", "spawn", 8) == Path("studies/smoke/trunk/spawn/step8.pt")
    assert studies.data_paths("cpu", "mnist") == {"source": Path("studies/cpu/data/mnist/source.json"),
                                                  "train": Path("studies/cpu/data/mnist/train.beton"),
                                                  "test": Path("studies/cpu/data/mnist/test.beton")}
    assert studies.numerics_record("cpu", "trunk-spawn") == Path("studies/cpu/numerics/trunk-spawn.json")
    assert studies.notes_path("cpu", "width") == Path("studies/cpu/notes/width.md")
    assert studies.report_path("paper", "fig3") == Path("reports/paper/fig3")


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
    for study in studies.study_names(PAPER):  # the paper's cells: every one exists at the paper scale
        ids = {c.id for c in studies.cells(PAPER, study)}
        s = RAW["studies"][study]
        assert set(s.get("paper", {})) <= ids and set(s.get("paper_accuracy", {})) <= ids


def test_a_cell_depends_on_exactly_the_entries_that_define_it():
    cell = studies.find_cell(RAW, "fig1", "L4-p0_3")
    assert cell.param_keys == ["studies.fig1.base", "studies.fig1.axes.net.L4", "studies.fig1.axes.slope.p0_3"]
    for scale in ("cpu", "paper"):
        stage = yaml.safe_load(studies_dvc.generate({**RAW, "scale": scale}))["stages"]["fig1-L4-p0_3"]
        # its own scale's entry only; paths relative to studies/<scale>/, the commands run from the root
        assert stage["params"] == [{"../studies.yaml": [f"scales.{scale}", *cell.param_keys]}]
        assert stage["cmd"] == f"cd ../.. && python -m stages.cell fig1 L4-p0_3 --scale {scale}"
        assert "data/mnist/train.beton" in stage["deps"] and "../../lmc/api.py" in stage["deps"]
        assert "../../lmc/study_report.py" not in stage["deps"]
        assert stage["outs"] == [{"out/fig1/L4-p0_3.json": {"cache": False}}]


def test_an_axis_value_given_per_scale_exists_only_at_the_scales_it_names():
    ids = {scale: {c.id for c in studies.cells({**RAW, "scale": scale}, "width")} for scale in studies.SCALES}
    assert "mlp-adam-hi-w2048" in ids["cpu"] and "mlp-adam-hi-w6272" not in ids["cpu"]
    assert ids["paper"] == ids["smoke"] == ids["cpu"] | {f"{s}-w{w}" for s in RAW["studies"]["width"]["axes"]["setup"]
                                                           for w in (4096, 6272)}
    cell = studies.find_cell({**RAW, "scale": "paper"}, "width", "linear-L4-adam-hi-w6272")
    assert (studies.resolve(RAW, cell, "paper").width, studies.resolve(RAW, cell, "paper").depth) == (6272, 4)
    # each scale's generated file holds that scale's cells
    assert "width-mlp-sgd-hi-w6272" not in studies_dvc.generate(RAW)
    assert "width-mlp-sgd-hi-w6272" in studies_dvc.generate({**RAW, "scale": "paper"})


def write_copy(tmp_path: Path, raw: dict) -> Path:
    """`raw` as a studies file in tmp_path, in its own key order (the axes' order names the cells)."""
    path = tmp_path / "studies.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_bad_study_definitions_are_one_line_errors():
    bad = {**yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text()), "scale": "cpu"}
    bad["studies"]["table2"]["axes"]["setup"]["sgd-hi"]["lr"] = -1
    with pytest.raises(SpecError, match=r"cell table2/sgd-hi at scale cpu: params: lr=-1 is out of range"):
        studies.resolve(bad, studies.find_cell(bad, "table2", "sgd-hi"))
    with pytest.raises(SpecError, match="no study 'table9'"):
        studies.cells(bad, "table9")


def _set(path: str, value):
    """A change to studies.yaml: the value at a dotted path ("studies.table1.figure.x"), or a key renamed
    (value: ("rename", new name))."""
    def change(raw):
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        if isinstance(value, tuple) and value[0] == "rename":
            node[value[1]] = node.pop(last)
        else:
            node[last] = value
    return change


# What the code reads as a mapping must be one, and what is keyed by cell id must name a cell: a wrong shape is
# a line naming its place (not a traceback), a misspelt id a line (not a silently ignored entry).
MISSHAPEN = [  # (change, words of the one line)
    (_set("studies", None), "`studies:` in"),
    (_set("scales", "cpu paper"), "`scales:` in"),
    (_set("scales.smoke", None), "scales.smoke in"),
    (_set("scales.cpu.defaults", ["epochs"]), "scales.cpu.defaults in"),
    (_set("studies.table1", None), "studies.table1 in"),
    (_set("studies.table1.figure", "net"), "studies.table1.figure in"),
    (_set("studies.table1.axes", ["net"]), "studies.table1.axes in"),
    (_set("studies.table1.base", ["model"]), "studies.table1.base in"),
    (_set("studies.table1.axes.net", {}), "studies.table1.axes.net in"),
    (_set("studies.table1.axes.net.L1", [1]), "studies.table1.axes.net.L1 in"),
    (lambda raw: raw["studies"].update({5: raw["studies"]["table2"]}), "study name 5"),  # YAML's `5:` is an int
    (_set("studies", ("rename", "studes")), "unknown top-level key(s) studes"),
    (_set("studies.table1.cells", {"L2-sgd-hii": {"lr": 0.05}}), "`cells:` names no cell 'L2-sgd-hii' at any scale; "
                                                               "did you mean 'L2-sgd-hi'?"),
    (_set("studies.table1.paper.L4-sgd-mid", [0, 0]), "`paper:` names no cell 'L4-sgd-mid'"),
    (_set("studies.fig3.paper_accuracy.mnist-L3-hi", 98.0), "`paper_accuracy:` names no cell 'mnist-L3-hi'"),
    (_set("studies.table1.figure.x", "nett"), "figure x: 'nett' is neither one of its axes (net, opt) nor a spec key"),
    (_set("studies.table1.figure.hue", "optt"), "figure hue: 'optt'"),
    (_set("studies.table1.figure.hue", ["opt"]), "figure hue: ['opt']"),
    (_set("studies.table1.figure.hue", "precision"), "nor a spec key every result records"),  # legacy: not always
]


@pytest.mark.parametrize("change,message", [
    (lambda r: r["studies"]["table1"]["axes"]["net"].update({"L1-bs30k-sgd": {}}) or
     r["studies"]["table1"]["axes"]["opt"].update({"hi": {}}), "two cells named 'L1-bs30k-sgd-hi'"),
    (lambda r: r["studies"]["fig1"].pop("figure"), "study fig1 has no `figure:`"),
    (lambda r: r["studies"]["fig1"]["figure"].update(y="accuracy"), "figure needs x"),
    (lambda r: r["studies"]["fig1"]["figure"].update(colour="tab10"), "figure has unknown key.* colour; it may hold x"),
    (lambda r: r.update(scale="cpu"), "without a top-level `scale:`"),
    (lambda r: r["scales"].update(huge={}), "unknown scale 'huge'"),
    (lambda r: r["scales"]["smoke"].update(like="tiny"), "scale smoke has unknown key.* or `like:` tiny"),
    (lambda r: r["scales"]["smoke"].update(epochs=2), "scale smoke has unknown key.* epochs"),
    (lambda r: r["scales"].pop("paper"), "defines no scale.* paper"),
] + [(change, re.escape(words)) for change, words in MISSHAPEN],
    ids=["duplicate ids", "no figure", "bad y", "unknown figure key", "scale in the file", "unknown scale", "bad like",
         "bad scale key", "no paper scale"] + [f"misshapen {i}" for i in range(len(MISSHAPEN))])
def test_bad_study_files_are_refused_on_load(tmp_path, change, message):
    raw = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    change(raw)
    with pytest.raises(SpecError, match=message) as err:
        studies.load(path=write_copy(tmp_path, raw))
    assert "\n" not in str(err.value)


def test_a_scale_the_file_does_not_define_is_refused(tmp_path):
    raw = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    assert studies.load("smoke", write_copy(tmp_path, raw))["scale"] == "smoke"
    with pytest.raises(SpecError, match=r"scale 'gpu' is not defined in .*; choose one of cpu, paper, smoke$"):
        studies.load("gpu", tmp_path / "studies.yaml")
    raw["scales"].pop("smoke")
    with pytest.raises(SpecError, match=r"scale 'smoke' is not defined"):
        studies.load("smoke", write_copy(tmp_path, raw))


def test_dataset_per_scale_is_refused_with_the_way_to_do_it():
    raw = {**yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text()), "scale": "cpu"}
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


def fake_results(tmp_path, monkeypatch, raw, study, barrier=lambda cell: 0.01, pairs=1, error=0.1):
    """Cell outputs at raw's scale as stages.cell writes them (below tmp_path/studies, which stands for studies/),
    from curves whose pair i has test and train barrier b + i/1000 between end points of `error`."""
    monkeypatch.setattr(studies, "ROOT", tmp_path / "studies")
    for cell in studies.cells(raw, study):
        spec = studies.resolve(raw, cell)
        b = barrier(cell)
        curves = {"alpha": [0.0, 0.5, 1.0], "status": "diverged" if b is None else "ok"}
        if b is not None:
            curves["pairs"] = [{f"{split}_{kind}": [error, error + b + i / 1000, error]
                                for split in ("train", "test") for kind in ("error", "loss")} for i in range(pairs)]
        path = studies.cell_output(raw["scale"], study, cell.id)
        assert path.is_relative_to(tmp_path)
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
    # the paper's numbers come from its own scale: a cpu-scale report says so beside its flags
    assert "Ours are at cpu scale, the paper's at its own: a cell without ⚠ sits on the paper's side" in text
    assert re.search(r"^\d+ cells flagged ⚠ \(cpu scale against the paper's scale\)\.$", text, re.M)
    for name in ("a.png", "b.png"):
        study_report.figure(RAW, "table1", frame, tmp_path / name)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_table4_accuracies_appear_in_the_fig3_report(tmp_path, monkeypatch):
    fake_results(tmp_path, monkeypatch, RAW, "fig3")  # the paper scale's report reads the cpu cells too
    fake_results(tmp_path, monkeypatch, PAPER, "fig3")
    text = study_report.markdown(PAPER, "fig3", study_report.cell_frame(PAPER, "fig3"))
    assert "paper test acc" in text and "14.26" in next(l for l in text.splitlines()
                                                         if l.startswith("| cifar100 | L4 | hi |"))
    cpu = study_report.markdown(RAW, "fig3", study_report.cell_frame(RAW, "fig3"))
    assert "paper test acc" in cpu and "98.41" in next(l for l in cpu.splitlines() if l.startswith("| mnist | L4 | hi |"))


def test_a_shared_trunk_study_gets_one_trunk_stage_its_cells_depend_on():
    stages = yaml.safe_load(studies_dvc.generate(RAW))["stages"]
    trunk = stages["trunk-spawn"]
    assert trunk["outs"] == ["trunk/spawn"] and "../../stages/trunk.py" in trunk["deps"]
    assert trunk["cmd"] == "cd ../.. && python -m stages.trunk spawn --scale cpu"
    assert all("trunk/spawn" in stages[f"spawn-{c.id}"]["deps"] for c in studies.cells(RAW, "spawn"))
    assert "trunk/spawn" not in stages["table2-sgd-hi"]["deps"]
    spec, steps = studies.trunk_plan(RAW, "spawn")
    assert steps == [8, 32, 64, 160, 320, 480] and spec.pairs == 3


def test_a_shared_trunk_study_whose_cells_train_differently_is_refused():
    bad = {**yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text()), "scale": "cpu"}
    bad["studies"]["spawn"]["axes"]["k"]["k8"]["lr"] = 0.001
    with pytest.raises(SpecError, match="cell k8 differs from the first cell in lr"):
        studies.trunk_plan(bad, "spawn")


def test_unknown_study_keys_are_refused(tmp_path):
    raw = yaml.safe_load((ROOT / studies.STUDIES_FILE).read_text())
    raw["studies"]["spawn"]["shared_trunks"] = True
    with pytest.raises(SpecError, match="study spawn has unknown key"):
        studies.load(path=write_copy(tmp_path, raw))



def test_a_studies_file_that_is_no_yaml_or_gives_a_key_twice_is_one_line(tmp_path):
    text = (ROOT / studies.STUDIES_FILE).read_text()
    assert "        L4: {depth: 4}\n" in text
    for broken, words in ((text.replace("scales:\n", "scales: [\n", 1), "is not valid YAML at line"),
                          (text.replace("        L4: {depth: 4}\n", "        L4: {depth: 4}\n        L4: {depth: 5}\n", 1),
                           "(key 'L4' is given twice)")):
        (tmp_path / "studies.yaml").write_text(broken)
        with pytest.raises(SpecError, match=re.escape(words)):
            studies.load(path=tmp_path / "studies.yaml")
    raw = yaml.safe_load(text)  # a spec key as the figure's hue is fine (the report plots along its values)
    raw["studies"]["table1"]["figure"]["hue"] = "optimizer"
    studies.load(path=write_copy(tmp_path, raw))


def test_a_study_dataset_no_study_trains_on_is_refused(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SpecError, match="no study trains on dataset 'mnst'; the studies' datasets are mnist"):
        studies.stage_target(Spec(), ["--study-dataset", "mnst", "--scale", "cpu"])


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
    study_report.figure(RAW, "table2", frame, tmp_path / "no-pairs.png")  # the same means, without the pairs
    assert (tmp_path / "no-pairs.png").read_bytes() != (tmp_path / "a.png").read_bytes()  # error bars: only with pairs
    mixed = pd.concat([pairs, pairs[(pairs["cell"] == "sgd-hi") & (pairs["pair"] == 0)].assign(pair=3)])
    study_report.figure(RAW, "table2", frame, tmp_path / "mixed.png", mixed)  # cells with 3 and 4 pairs
    assert (tmp_path / "mixed.png").read_bytes() != (tmp_path / "a.png").read_bytes()


def test_trunk_and_cell_stages_show_a_bar_on_a_terminal_and_nothing_else_off_one(tmp_path, betons):
    import shutil
    import subprocess
    import sys

    from .fixtures import run_stage_stderr, shows_a_bar
    config = {"scales": {"cpu": {"datasets": {"mnist": "mnist5k"}, "defaults": {"batch_size": 500, "width": 16}},
                         "paper": {"datasets": {}, "defaults": {}}},
              "studies": {"tinyspawn": {
                  "title": "t", "finding": "none", "shared_trunk": True,
                  "base": {"model": "mlp", "dataset": "mnist", "pairs": 1, "epochs": 2},
                  "axes": {"k": {"k3": {"spawn_step": 3}}}, "figure": {"x": "spawn_step", "y": "barrier"}}}}
    (tmp_path / studies.STUDIES_FILE).parent.mkdir(parents=True)
    (tmp_path / studies.STUDIES_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "lmc.studies_dvc"], cwd=tmp_path, check=True, env={"PYTHONPATH": str(ROOT)})
    assert (tmp_path / studies.dvc_file("cpu")).exists() and (tmp_path / studies.dvc_file("paper")).exists()
    for split, path in studies.data_paths("cpu", "mnist").items():
        if split in betons:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(betons[split], tmp_path / path)
    for tty in (True, False):
        status, trunk = run_stage_stderr(tmp_path, "trunk", "tinyspawn", "--scale", "cpu", tty=tty)
        assert status == 0 and shows_a_bar(trunk) == tty and ("trunk tinyspawn: 100%|" in trunk) == tty, trunk
        status, cell = run_stage_stderr(tmp_path, "cell", "tinyspawn", "k3", "--scale", "cpu", tty=tty)
        assert status == 0 and shows_a_bar(cell) == tty and ("cell tinyspawn/k3: 100%|" in cell) == tty, cell
        if not tty:
            assert trunk.splitlines() == ["trunk tinyspawn: 1 snapshots, steps [3]"]
            assert len(cell.splitlines()) == 1 and cell.startswith("cell tinyspawn/k3: ok in ")
    assert (tmp_path / studies.trunk_path("cpu", "tinyspawn", 3)).exists()
    assert json.loads((tmp_path / studies.cell_output("cpu", "tinyspawn", "k3")).read_text())["scale"] == "cpu"


def test_width_report_gives_the_cross_init_barrier_and_the_studys_notes(tmp_path, monkeypatch):
    # the committed notes are a dep of the report stage: editing them reruns the report
    assert "notes/width.md" in yaml.safe_load(studies_dvc.generate(RAW))["stages"]["report-width"]["deps"]
    fake_results(tmp_path, monkeypatch, RAW, "width", barrier=lambda c: 0.01, pairs=2)
    for cell in studies.cells(RAW, "width"):  # A of pair 0 vs A of pair 1: a 5% barrier
        path = studies.cell_output("cpu", "width", cell.id)
        result = json.loads(path.read_text())
        result["curves"]["cross_init"] = {f"{split}_{kind}": [0.1, 0.15, 0.1] for split in ("train", "test")
                                          for kind in ("error", "loss")}
        result["metrics"] = report.metrics_from_curves(result["curves"])
        path.write_text(json.dumps(result))
    notes = studies.notes_path("cpu", "width")  # below tmp_path now (fake_results moved studies.ROOT)
    assert notes.is_relative_to(tmp_path)
    notes.parent.mkdir(parents=True)
    notes.write_text("## What the curves mean\n\nwritten by hand\n")
    frame = study_report.cell_frame(RAW, "width")
    text = study_report.markdown(RAW, "width", frame)
    header = next(l for l in text.splitlines() if l.startswith("| setup | width |"))
    assert header.endswith("| refined test / train | cross-init test / train |")
    line = next(l for l in text.splitlines() if l.startswith("| mlp-sgd-hi | w2048 |"))
    assert "| 5.00 / 5.00 |" in line and text.rstrip().endswith("written by hand")
    study_report.figure(RAW, "width", frame, tmp_path / "w.png", study_report.pair_frame(RAW, "width"))
    assert (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")


def _drawn(monkeypatch, raw: dict, study: str):
    """The matplotlib Figure that study_report.figure draws for `study` at raw's scale (not saved)."""
    drawn = []
    monkeypatch.setattr(study_report, "save_figure", lambda fig, path: drawn.append(fig))
    study_report.figure(raw, study, study_report.cell_frame(raw, study), None, study_report.pair_frame(raw, study))
    return drawn[0]


def test_width_figure_gives_each_family_its_row_a_colour_per_setup_and_the_cpu_scale_beside(tmp_path, monkeypatch):
    fake_results(tmp_path, monkeypatch, RAW, "width", barrier=lambda c: 0.07, pairs=2)
    fig = _drawn(monkeypatch, RAW, "width")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"{family}: {panel}" for family in ("Table 2's MLPs", "Table 1's linear networks")
                      for panel in ("test", "train", "test accuracy, mean of A and B")]
    mlp_acc, linear_acc = fig.axes[2], fig.axes[5]
    colours = [h.get_color() for h in mlp_acc.get_legend().legend_handles if h.get_marker() == "o"]
    assert [t.get_text() for t in mlp_acc.get_legend().get_texts()][:5] == [
        "mlp-sgd-hi", "mlp-sgd-hi-warmup", "mlp-adam-med", "mlp-adam-hi", "mlp-adam-hi-warmup"]
    assert len(set(map(str, colours))) == 5  # a categorical palette: no two setups share a colour
    assert "linear-L4-adam-hi" in [t.get_text() for t in linear_acc.get_legend().get_texts()]
    # Table 4's accuracy of the 1-hidden-layer MLP with SGD lr 0.1: a line in its row, not in the linear one's
    assert any(list(line.get_ydata()) == [98.32, 98.32] for line in mlp_acc.get_lines())
    assert not any(list(line.get_ydata()) == [98.32, 98.32] for line in linear_acc.get_lines())
    assert not [l for ax in fig.axes for l in ax.get_lines() if l.get_linestyle() == ":"]  # cpu: nothing beside
    for cell in studies.cells(RAW, "width"):  # the cpu scale's B: 80% (A: 90%)
        path = studies.cell_output("cpu", "width", cell.id)
        result = json.loads(path.read_text())
        result["metrics"]["acc_test_b"] = 0.8
        path.write_text(json.dumps(result))
    fake_results(tmp_path, monkeypatch, PAPER, "width", barrier=lambda c: 0.03, pairs=2)
    paper = _drawn(monkeypatch, PAPER, "width")
    dotted = [l for l in paper.axes[0].get_lines() if l.get_linestyle() == ":"]  # MLPs, test: the cpu scale's
    # its five widths: 7.05% each (pairs of 7.0 and 7.1%), where the paper scale's own are near 3%
    assert dotted and all(list(l.get_ydata()) == pytest.approx([7.05] * 5) for l in dotted)
    assert "cpu scale" in [t.get_text() for t in paper.axes[2].get_legend().get_texts()]
    cpu_acc = [l for l in paper.axes[2].get_lines() if l.get_linestyle() == ":"]  # the mean of A and B there too
    assert cpu_acc and all(list(l.get_ydata()) == pytest.approx([85.0] * 5) for l in cpu_acc)


# -- the scales side by side -------------------------------------------------------------------------------

def _stages(scale: str, raw: dict = RAW) -> dict:
    return yaml.safe_load(studies_dvc.generate({**raw, "scale": scale}))["stages"]


def _from_root(scale: str, path: str) -> Path:
    """A path written in studies/<scale>/dvc.yaml, relative to the repository root instead."""
    return Path(os.path.normpath(studies.scale_dir(scale) / path))


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def _other_scales(scale: str, path: Path) -> list[str]:
    """The scales other than `scale` whose folders (studies/<s>/, reports/<s>/) hold `path`."""
    return [s for s in studies.SCALES if s != scale and any(
        path.is_relative_to(d) for d in (studies.scale_dir(s), studies.REPORTS_DIR / s))]


def test_a_report_above_cpu_reads_the_cpu_cells_and_the_cpu_report_reads_no_other_scale():
    cpu_ids = [c.id for c in studies.cells(RAW, "table2")]
    assert studies.cpu_cells(PAPER, "table2") == cpu_ids and len(cpu_ids) == 5 and studies.cpu_cells(RAW, "table2") == []
    report = _stages("paper")["report-table2"]
    assert report["cmd"] == "cd ../.. && python -m stages.study_report table2 --scale paper"
    for cell_id in cpu_ids:
        assert f"out/table2/{cell_id}.json" in report["deps"] and f"../cpu/out/table2/{cell_id}.json" in report["deps"]
    assert [d for d in report["deps"] if _other_scales("paper", _from_root("paper", d))] == [
        f"../cpu/out/table2/{cell_id}.json" for cell_id in cpu_ids]
    assert [{next(iter(o)) for o in report["outs"]}] == [{f"../../reports/paper/table2.{ext}" for ext in ("md", "csv", "png")}]
    # width: the paper's w4096/w6272 cells have no cpu twin, so nothing to read for them
    width = _stages("paper")["report-width"]["deps"]
    assert {d for d in width if d.startswith("../cpu/")} == {f"../cpu/out/width/{c.id}.json"
                                                             for c in studies.cells(RAW, "width")}
    for scale in studies.SCALES:  # no stage of any scale reads from a scale other than cpu, nor cpu from any
        for name, stage in _stages(scale).items():
            into = {s for d in stage.get("deps", []) for s in _other_scales(scale, _from_root(scale, d))}
            assert into <= ({"cpu"} if scale != "cpu" and name.startswith("report-") else set()), (scale, name, into)


def test_the_scales_write_disjoint_outputs():
    outs = {}
    for scale in studies.SCALES:
        mine = [_from_root(scale, o) for stage in _stages(scale).values() for o in _outs(stage)]
        assert len(mine) == len(set(mine)), f"{scale}: one output written by two stages"
        assert all(o.is_relative_to(studies.scale_dir(scale)) or o.is_relative_to(studies.REPORTS_DIR / scale)
                   for o in mine), scale
        outs[scale] = mine
    for a in studies.SCALES:
        for b in studies.SCALES:
            if a < b:
                overlaps = [(x, y) for x in outs[a] for y in outs[b] if x == y or x in y.parents or y in x.parents]
                assert not overlaps, (a, b, overlaps[:3])
    assert Path("studies/cpu/out/table2/sgd-hi.json") in outs["cpu"]
    assert Path("studies/paper/out/table2/sgd-hi.json") in outs["paper"]
    assert Path("reports/smoke/table2.md") in outs["smoke"]
    assert Path("studies/paper/trunk/spawn") in outs["paper"] and Path("studies/cpu/trunk/spawn") in outs["cpu"]


TINY = {
    "scales": {"cpu": {"datasets": {"mnist": "mnist5k"}, "defaults": {"batch_size": 500, "width": 16, "epochs": 2}},
               "paper": {"datasets": {}, "defaults": {"device": "cuda"}}},
    "studies": {
        "tiny": {"title": "Tiny", "finding": "none", "base": {"model": "mlp", "dataset": "mnist"},
                 "axes": {"opt": {"sgd": {"optimizer": "sgd", "lr": 0.1},
                                  "adam": {"paper": {"optimizer": "adam", "lr": 0.005}}}},  # paper only
                 "figure": {"x": "opt", "y": "barrier"},
                 "paper": {"sgd": [1.25, 2.5], "adam": [3.75, 4.5]}, "paper_accuracy": {"sgd": 97.5, "adam": 96.25}},
        "paperonly": {"title": "Paper only", "finding": "none", "base": {"model": "mlp"},
                      "axes": {"data": {"cifar10": {"paper": {"dataset": "cifar10"}}}},
                      "figure": {"x": "data", "y": "barrier"}}}}


def _load(tmp_path, config, scale):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return studies.load(scale, path)


def test_a_study_without_cells_at_a_scale_gets_no_stage_there(tmp_path):
    cpu, paper = _stages("cpu", _load(tmp_path, TINY, "cpu")), _stages("paper", _load(tmp_path, TINY, "paper"))
    assert list(cpu) == ["source-mnist", "prepare-mnist", "tiny-sgd", "report-tiny"]
    assert {"source-cifar10", "paperonly-cifar10", "report-paperonly", "tiny-adam", "report-tiny"} <= set(paper)
    assert "../cpu/out/tiny/sgd.json" in paper["report-tiny"]["deps"]
    assert "../cpu/out/tiny/adam.json" not in paper["report-tiny"]["deps"]


def _table(text: str, first: str) -> tuple[list[str], dict[str, list[str]]]:
    """A markdown table's header and rows (by first column), the table whose header starts with `first`."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"| {first} |"))
    split = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]  # noqa: E731
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows[split(line)[0]] = split(line)
    return split(lines[start]), rows


def test_the_report_above_cpu_gives_three_numbers_per_cell(tmp_path, monkeypatch):
    cpu, paper = _load(tmp_path, TINY, "cpu"), _load(tmp_path, TINY, "paper")
    fake_results(tmp_path, monkeypatch, cpu, "tiny", barrier=lambda c: 0.07, error=0.2)
    fake_results(tmp_path, monkeypatch, paper, "tiny", barrier=lambda c: 0.05 if c.id == "sgd" else 0.03)
    frame = study_report.cell_frame(paper, "tiny")
    assert list(frame["cell"]) == ["sgd", "adam"] and frame["cpu_status"].iloc[0] == "ok"
    assert frame["cpu_status"].isna().tolist() == [False, True] and frame["cpu_barrier_test"].iloc[0] == pytest.approx(0.07)
    text = study_report.markdown(paper, "tiny", frame)
    assert "Three numbers per cell" in text and "Not at this scale" not in text
    head, rows = _table(text, "opt")
    ours, theirs, at_cpu = (head.index(h) for h in ("barrier test / train", "paper test / train",
                                                     "cpu scale test / train"))
    assert (rows["sgd"][theirs], rows["sgd"][ours], rows["sgd"][at_cpu]) == ("1.25 / 2.50", "5.00 / 5.00", "7.00 / 7.00")
    assert (rows["adam"][theirs], rows["adam"][ours], rows["adam"][at_cpu]) == ("3.75 / 4.50", "3.00 / 3.00", "–")
    acc, cpu_acc = head.index("paper test acc"), head.index("cpu scale test acc A")
    assert (rows["sgd"][acc], rows["sgd"][cpu_acc], rows["adam"][acc], rows["adam"][cpu_acc]) == (
        "97.50", "80.00", "96.25", "–")
    # the cpu report itself: its own numbers beside the paper's, no third column
    cpu_frame = study_report.cell_frame(cpu, "tiny")
    assert not [c for c in cpu_frame.columns if c.startswith("cpu_")]
    cpu_text = study_report.markdown(cpu, "tiny", cpu_frame)
    head, rows = _table(cpu_text, "opt")
    assert "cpu scale test / train" not in head and "Three numbers per cell" not in cpu_text
    assert list(rows) == ["sgd"] and rows["sgd"][head.index("barrier test / train")] == "7.00 / 7.00"
    studies.cell_output("cpu", "tiny", "sgd").unlink()
    with pytest.raises(SpecError, match=r"sgd.json is missing, and this report shows the cpu scale beside its "
                                        r"own; run `make study STUDY=tiny`"):  # one line, not a traceback
        study_report.cell_frame(paper, "tiny")


def test_fig3_at_cpu_scale_is_mnist_only_and_its_report_says_what_is_missing(tmp_path, monkeypatch):
    cells = studies.cells(RAW, "fig3")
    assert [c.id for c in cells] == [f"mnist-{n}-{lr}" for n in ("L2", "L4", "L8") for lr in ("hi", "med")]
    assert {studies.paper_dataset(RAW, c) for c in cells} == {"mnist"}
    assert len(studies.cells(PAPER, "fig3")) == 24 and studies.cpu_cells(PAPER, "fig3") == [c.id for c in cells]
    assert study_report.missing_datasets(RAW, "fig3") == ["cifar10", "cifar100", "tinyimagenet"]
    assert study_report.missing_datasets(PAPER, "fig3") == [] and study_report.missing_datasets(RAW, "table2") == []
    fake_results(tmp_path, monkeypatch, RAW, "fig3")
    text = study_report.markdown(RAW, "fig3", study_report.cell_frame(RAW, "fig3"))
    line = next(l for l in text.splitlines() if l.startswith("Not at this scale"))
    assert "the paper's cifar10, cifar100, tinyimagenet cells" in line and "trains on mnist5k only" in line
    assert "6 cells:" in text
    fake_results(tmp_path, monkeypatch, PAPER, "fig3")
    paper = study_report.markdown(PAPER, "fig3", study_report.cell_frame(PAPER, "fig3"))
    assert "Not at this scale" not in paper and "24 cells:" in paper
    fake_results(tmp_path, monkeypatch, RAW, "table2")
    assert "Not at this scale" not in study_report.markdown(RAW, "table2", study_report.cell_frame(RAW, "table2"))


@pytest.mark.parametrize("argv", [["--sort-lok"], ["--repro", "table1"], ["--scale", "cpu"],
                                  ["--repro", "table1", "--scale", "cpu", "--sort-lock"]])
def test_the_generator_refuses_a_misspelt_or_incomplete_option_before_writing(argv, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    before = {scale: studies.dvc_file(scale).read_bytes() for scale in studies.SCALES}
    with pytest.raises(SystemExit) as exit_:
        studies_dvc.main(argv)
    assert exit_.value.code == 2 and "usage: python -m lmc.studies_dvc" in capsys.readouterr().err
    assert {scale: studies.dvc_file(scale).read_bytes() for scale in studies.SCALES} == before
