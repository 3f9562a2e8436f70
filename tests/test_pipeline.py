"""End to end: the real `dvc` commands on a temporary copy of this repository."""
import copy
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmc import browser, data, report
from .fixtures import BIN, TINY, TINY_STUDIES, WRITERS, commit, copy_repo, ran, sh, write_studies


PLOTS = {"training_loss", "training_accuracy", "error_vs_alpha", "loss_vs_alpha"}  # dvc.yaml's `plots:`

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    sh(repo, "dvc", "repro")
    return repo


def test_repro_writes_every_report(tiny_repo):
    metrics = json.loads((tiny_repo / "reports/metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert set(metrics) == set(report.METRIC_KEYS) and metrics["pairs"] == 3  # params.yaml's default
    assert tuple(metrics)[:len(report.SHOWN_FIRST)] == report.SHOWN_FIRST  # what `dvc exp show` leads with
    assert all(0 <= metrics[k] <= 1 for k in metrics if k.startswith(("acc", "barrier")) and "_ci_" not in k)
    # The interval, recomputed by hand from each pair's curve: mean ± t(0.975, 2)·s/√3 over the 3 pairs.
    curves = json.loads((tiny_repo / "data/interpolation.json").read_text())["pairs"]
    barriers = [max(c["test_error"]) - (c["test_error"][0] + c["test_error"][-1]) / 2 for c in curves]
    mean = sum(barriers) / 3
    half = 4.302653 * (sum((b - mean) ** 2 for b in barriers) / 2) ** 0.5 / 3 ** 0.5
    assert metrics["barrier_test"] == pytest.approx(mean, abs=1e-6)
    assert (metrics["barrier_test_ci_low"], metrics["barrier_test_ci_high"]) == pytest.approx(
        (mean - half, mean + half), abs=1e-6)
    assert metrics["barrier_test_cross_init"] is not None
    csv = (tiny_repo / "reports/interpolation.csv").read_text().splitlines()
    assert csv[0] == "alpha,train_error,test_error,train_loss,test_loss" and len(csv) == 12
    assert (tiny_repo / "reports/interpolation.png").read_bytes().startswith(b"\x89PNG")
    assert "Verdict" in (tiny_repo / "reports/summary.md").read_text()
    live = json.loads((tiny_repo / "reports/train/metrics.json").read_text())
    assert live["step"] == TINY["epochs"] - 1 and {"loss_a0", "loss_b2", "acc_a1", "acc_b0"} <= set(live)
    assert (tiny_repo / "reports/train/plots/metrics/diverged.tsv").is_file()  # DVCLive's files stay, not plotted
    train = (tiny_repo / "reports/training.csv").read_text().splitlines()
    assert train[0] == "epoch,pair,twin,loss,accuracy" and len(train) == 1 + TINY["epochs"] * 3 * 2
    assert train[1].startswith("1,0,A,") and train[-1].startswith(f"{TINY['epochs']},2,B,")
    per_pair = (tiny_repo / "reports/interpolation_pairs.csv").read_text().splitlines()
    assert per_pair[0] == "alpha,pair,split,error,loss" and len(per_pair) == 1 + 3 * 2 * 11
    plots = json.loads(sh(tiny_repo, "dvc", "plots", "show", "--json").stdout)
    assert set(plots["data"]) == PLOTS and not plots.get("errors")
    layers = json.loads((tiny_repo / "reports/layerwise.json").read_text())  # a few metrics, not one per layer
    assert set(layers) == {"status", "max_layer_barrier_train", "max_layer_train", "max_layer_barrier_test",
                           "max_layer_test"} and layers["max_layer_test"] in ("layers.0", "layers.1")
    per_layer = (tiny_repo / "reports/layerwise.csv").read_text().splitlines()
    assert per_layer[0] == "layer,barrier_train,hybrid_error_train,barrier_test,hybrid_error_test"
    assert [row.split(",")[0] for row in per_layer[1:]] == ["layers.0", "layers.1"]
    assert "| layers.0 |" in (tiny_repo / "reports/layerwise.md").read_text()
    assert sorted(p.name for p in (tiny_repo / "data/twins").iterdir()) == ["pair0", "pair1", "pair2"]


def plot_charts(dom: str) -> dict[str, int]:
    """Each plot's <div> on the page -> how many vega charts (canvas or svg, class "marks") it holds."""
    parts = re.split(r'<div id="([^"]+)"', dom)  # DVC's <div id = "{plot id}">, vega draws inside
    return {name: len(re.findall(r'<(canvas|svg)\b[^>]*class="marks"', body)) for name, body in
            zip(parts[1::2], parts[2::2])}


def test_plots_render_offline_in_a_real_browser_wherever_the_page_is_written(tiny_repo, tmp_path):
    """The real `dvc plots show`, its page opened by headless Chromium with no network: every plot is drawn."""
    if not browser.chromium():
        pytest.skip("chromium is not installed (`make test-system-packages` installs it)")
    sh(tiny_repo, "dvc", "plots", "show", "-o", str(tmp_path / "elsewhere"))
    page = tmp_path / "elsewhere/index.html"
    html = page.read_text()
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert plot_charts(browser.run(page, "--dump-dom")) == {name: 1 for name in PLOTS}
    # Control: DVC's own page, which loads vega from a CDN, draws nothing in the same browser.
    from dvc_render.html import PAGE_HTML

    (tmp_path / "cdn.html").write_text(PAGE_HTML)
    sh(tiny_repo, "dvc", "plots", "show", "--html-template", str(tmp_path / "cdn.html"), "-o", str(tmp_path / "cdn"))
    assert "cdn.jsdelivr.net" in (tmp_path / "cdn/index.html").read_text()
    assert plot_charts(browser.run(tmp_path / "cdn/index.html", "--dump-dom")) == {name: 0 for name in PLOTS}


def test_exp_show_leads_with_the_barriers_and_has_no_study_column(tiny_repo):
    """The comparison comes first: `dvc exp show` has at most 100 columns, none from the studies (their own
    DVC project), and barrier_test before any per-twin training curve; the table renders in a terminal."""
    header = sh(tiny_repo, "dvc", "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert len(header) <= 100, len(header)
    assert not [c for c in header if "studies" in c], [c for c in header if "studies" in c]
    assert not [c for c in header if "layers." in c]  # per-layer values live in layerwise.csv, not in the table
    assert {"max_layer_barrier_test", "max_layer_test"} <= set(header)
    metrics = header[header.index("Created") + 2:]  # after Experiment, rev, typ, Created, parent
    assert metrics[:2] == ["barrier_test", "barrier_train"], metrics[:6]
    twins = [i for i, c in enumerate(header) if c.startswith(("loss_a", "loss_b", "acc_a", "acc_b"))]
    assert all(i > header.index("barrier_test") for i in twins)
    env = {**os.environ, "COLUMNS": "120", "PATH": f"{BIN}:{os.environ['PATH']}"}
    table = subprocess.run(["dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep",
                            "Experiment|barrier_test|barrier_train|acc_test_a|acc_test_b|status"],
                           cwd=tiny_repo, capture_output=True, text=True, env=env).stdout
    assert "barrier_test" in table and "barrier_train" in table and "workspace" in table


def test_experiment_reruns_only_train_and_later_and_is_compared(tiny_repo):
    commit(tiny_repo, "baseline")
    proc = sh(tiny_repo, "dvc", "exp", "run", "-S", "optimizer=adam", "-S", "lr=0.005")
    out = proc.stdout
    assert set(ran(out)) == {"check", "source", "train", "interpolate", "report", "layerwise"}  # in any order
    noise = [l for l in (proc.stdout + proc.stderr).splitlines() if "WARNING" in l or "%|" in l]
    assert not noise, noise  # no warning about anything but this run, no progress bar off a terminal
    table = json.loads(sh(tiny_repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(table)
    assert '"optimizer": "adam"' in text and '"optimizer": "sgd"' in text and "barrier_test" in text
    out = sh(tiny_repo, "dvc", "exp", "run", "-S", "alphas=5").stdout
    assert set(ran(out)) == {"check", "source", "interpolate", "report"}  # layerwise has its own α
    out = sh(tiny_repo, "dvc", "exp", "run", "-S", "layerwise_samples=500").stdout
    assert set(ran(out)) == {"check", "source", "layerwise"}
    out = sh(tiny_repo, "dvc", "exp", "run", "-S", "align=weight_matching", "-S", "refine_alphas=3").stdout
    assert set(ran(out)) == {"check", "source", "interpolate", "report"}
    curves = json.loads((tiny_repo / "data/interpolation.json").read_text())
    assert len(curves["pairs"]) == 3 and len(curves["pairs"][0]["test_refined"]["alpha"]) == 6


def test_diverged_experiment_finishes_and_reports_unstable(tiny_repo):
    """A twin whose loss turns non-finite stops cleanly; every later stage still runs and says so."""
    proc = sh(tiny_repo, "dvc", "exp", "run", "-S", "optimizer=sgd", "-S", "lr=1000000.0")
    assert set(ran(proc.stdout)) == {"check", "source", "train", "interpolate", "report", "layerwise"}
    assert json.loads((tiny_repo / "reports/layerwise.json").read_text()) == {"status": "diverged"}
    metrics = json.loads((tiny_repo / "reports/metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["barrier_test"] is None
    assert "**unstable**" in (tiny_repo / "reports/summary.md").read_text()
    assert json.loads((tiny_repo / "reports/train/metrics.json").read_text())["diverged"] == 1
    shown = json.dumps(json.loads(sh(tiny_repo, "dvc", "exp", "show", "--json").stdout))
    assert '"status": "diverged"' in shown and '"status": "ok"' in shown


def test_changed_source_data_rebuilds_the_betons_and_unchanged_does_not(tmp_path):
    import pickle

    raw = tmp_path / "raw"
    WRITERS["cifar10"](raw)
    repo = copy_repo(tmp_path / "repo", {"dataset": "cifar10", "data_root": str(raw), "download": False})
    assert set(ran(sh(repo, "dvc", "repro", "prepare").stdout)) == {"source", "prepare"}
    before = (repo / "data/train.beton").read_bytes()
    assert ran(sh(repo, "dvc", "repro", "prepare").stdout) == ["source"]
    batch = raw / "cifar-10-batches-py/data_batch_2"
    content = pickle.loads(batch.read_bytes())
    content["labels"][0] = (content["labels"][0] + 1) % 10
    batch.write_bytes(pickle.dumps(content, protocol=2))
    assert set(ran(sh(repo, "dvc", "repro", "prepare").stdout)) == {"source", "prepare"}
    assert (repo / "data/train.beton").read_bytes() != before
    assert data.read_split(repo / "data/train.beton").labels[8] == content["labels"][0]  # batch 2 starts at 8


def test_lock_is_bit_reproducible(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    sh(repo, "dvc", "repro")
    commit(repo, "lock")
    sh(repo, "dvc", "repro", "-f")
    sh(repo, "git", "diff", "--exit-code", "dvc.lock", "reports")


@pytest.mark.parametrize("line,message", [
    ("learning_rate: 0.1", "unknown key 'learning_rate'"),
    ("depth: 0", "depth=0 is out of range"),
])
def test_bad_params_stop_dvc_repro_with_one_line_and_no_output(tmp_path, line, message):
    repo = copy_repo(tmp_path)
    params = (repo / "params.yaml").read_text()
    key = line.split(":")[0]
    kept = [l for l in params.splitlines() if not l.startswith(f"{key}:")]
    (repo / "params.yaml").write_text("\n".join(kept + [line]) + "\n")
    proc = sh(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
    assert not any((repo / "data").glob("*.beton")) and not (repo / "data/init").exists()


def test_committed_lock_reproduces_here_and_a_difference_is_explained(tmp_path):
    """`make check-repro` on a copy of the repository: every stage of the default experiment, rebuilt from scratch
    in a scratch clone, gives the bytes pinned in the committed dvc.lock; a commit that moves the experiment to
    the other numerics mode, checked against the commit before it, fails and says why."""
    repo, scratch = copy_repo(tmp_path / "repo"), tmp_path / "scratch"
    scratch.mkdir()
    check = sh(repo, sys.executable, "-m", "lmc.reproduce", "--workdir", str(scratch), check=False)
    assert check.returncode == 0, f"the committed results do not reproduce:\n{check.stdout}"
    assert "reproduced: all 16 outputs of dvc.lock that this check recomputed have the committed bytes" in \
        check.stdout and "not recomputed in this check, never counted as reproduced: 0" in check.stdout
    assert not any(scratch.iterdir())  # the scratch clone goes once the check passes
    left = sh(repo, "git", "status", "--porcelain", "--ignored").stdout.splitlines()
    assert not [line for line in left if "__pycache__" not in line], left  # the checkout is left as it was

    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "numerics": "native"}, sort_keys=False))
    commit(repo, "native")
    check = sh(repo, sys.executable, "-m", "lmc.reproduce", "--against", "HEAD~1", "--workdir", str(scratch),
               check=False)
    assert check.returncode == 1, check.stdout
    assert "NOT reproduced" in check.stdout and "- data/twins (stage train)" in check.stdout
    assert re.search(r"^    \w+: \S+ → \S+ \([+-]", check.stdout, re.M), check.stdout  # a metric and its move
    assert "another numerics mode (portable → native)" in check.stdout
    kept = list(scratch.iterdir())
    assert len(kept) == 1 and f"the scratch clone is kept: {kept[0]}" in check.stdout
    assert json.loads((kept[0] / "reports/numerics.json").read_text())["train"]["numerics"] == "native"


def test_study_cells_are_cached_one_by_one_and_absent_data_is_one_line(tmp_path):
    config = copy.deepcopy(TINY_STUDIES)
    repo = copy_repo(tmp_path, {"download": False})
    studies_yaml = repo / "studies/studies.yaml"
    write_studies(repo, config)
    commit(repo, "tiny studies")
    cpu = repo / "studies/cpu"  # the cpu scale's pipeline, in the studies' own DVC project
    assert set(ran(sh(cpu, "dvc", "repro", "report-tiny").stdout)) == {
        "source-mnist", "prepare-mnist", "tiny-hi", "tiny-med", "report-tiny"}
    report = (repo / "reports/cpu/tiny.md").read_text()
    assert "| hi |" in report and "0.05 / 0.00" in report and (repo / "reports/cpu/tiny.png").exists()
    commit(repo, "results")
    sh(cpu, "dvc", "repro", "-f", "tiny-hi", "tiny-med")
    sh(repo, "git", "diff", "--exit-code", "studies/cpu/out", "studies/cpu/dvc.lock")  # same params, same bytes

    config["studies"]["tiny"]["axes"]["lr"]["med"]["lr"] = 0.02
    studies_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    assert set(ran(sh(cpu, "dvc", "repro", "report-tiny").stdout)) == {"source-mnist", "tiny-med", "report-tiny"}
    config["scales"]["cpu"]["defaults"]["width"] = 8  # the scale's own settings: every cell of that scale
    studies_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    assert set(ran(sh(repo, "dvc", "--cd", "studies/cpu", "repro", "report-tiny").stdout)) == {
        "source-mnist", "tiny-hi", "tiny-med", "report-tiny"}

    proc = sh(cpu, "dvc", "repro", "report-absent", check=False)
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1
    assert errors[0].startswith("error: dataset cifar10: data/raw/cifar-10-batches-py/") and "not found" in errors[0]


def test_a_sampled_check_rebuilds_only_the_drawn_cells_and_their_data_and_counts_only_them(tmp_path):
    """`make check-repro SCALE=cpu SAMPLE=1`: one cell drawn by the printed seed is rebuilt with its data stages
    in a scratch clone and has the committed bytes; the other cell and the report are 'not recomputed', never
    reproduced; a result committed by hand with other bytes than its lock fails the check though not rebuilt."""
    config = copy.deepcopy(TINY_STUDIES)
    del config["studies"]["absent"]
    repo, scratch = copy_repo(tmp_path / "repo", {"download": False}), tmp_path / "scratch"
    scratch.mkdir()
    write_studies(repo, config)
    sh(repo, sys.executable, "-m", "lmc.studies_dvc", "--repro", "tiny", "--scale", "cpu")
    commit(repo, "tiny results")
    check = sh(repo, sys.executable, "-m", "lmc.reproduce", "--project", "studies/cpu", "--sample", "1", "--seed",
               "5", "--workdir", str(scratch), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    drawn = re.search(r"^drew 1 of the 2 cells of studies/cpu with seed 5 .*: (tiny-\w+)$", check.stdout, re.M)
    assert drawn and "the same draw again: make check-repro SCALE=cpu SAMPLE=1 SEED=5" in check.stdout
    assert ran(check.stdout) == ["source-mnist", "prepare-mnist", drawn[1]]
    assert "recomputed here, the committed bytes: 4" in check.stdout  # the cell, its source and two .betons
    locked = yaml.safe_load((repo / "studies/cpu/dvc.lock").read_text())["stages"]
    rest = sum(len(stage["outs"]) for stage in locked.values()) - 4  # the other cell, the report (and old cells)
    assert f"not recomputed in this check, never counted as reproduced: {rest}\n" in check.stdout

    other = "med" if drawn[1] == "tiny-hi" else "hi"
    result = repo / f"studies/cpu/out/tiny/{other}.json"
    result.write_text(result.read_text() + "\n")
    commit(repo, "a result edited by hand")
    check = sh(repo, sys.executable, "-m", "lmc.reproduce", "--project", "studies/cpu", "--stages", drawn[1],
               "--workdir", str(scratch), check=False)
    assert check.returncode == 1 and f"NOT what the lock records: 1 tracked output(s) committed at HEAD with other " \
        f"bytes than studies/cpu/dvc.lock names (edited by hand, or committed without their lock): " \
        f"out/tiny/{other}.json" in check.stdout, check.stdout


def tree(repo: Path, *folders: str) -> dict[str, bytes]:
    """Every file under `folders` of `repo`, by path: the bytes a run at another scale must leave alone."""
    return {str(f.relative_to(repo)): f.read_bytes() for d in folders for f in sorted((repo / d).rglob("*"))
            if f.is_file()}


def test_scales_run_side_by_side_and_a_report_shows_the_cpu_result_of_its_cells(tmp_path):
    """The tiny study at cpu scale, then at smoke scale (its own settings): the smoke run has its own lock,
    results and report, reads the cpu results as they are and shows them beside its own, and leaves every byte
    of the cpu scale as it was; the cpu pipeline stays up to date."""
    config = copy.deepcopy(TINY_STUDIES)
    del config["studies"]["absent"]
    repo = copy_repo(tmp_path, {"download": False})
    write_studies(repo, config)
    commit(repo, "tiny studies")
    cpu = repo / "studies/cpu"
    sh(repo, sys.executable, "-m", "lmc.studies_dvc", "--repro", "tiny", "--scale", "cpu")
    assert {"studies/cpu/dvc.lock", "studies/cpu/out/tiny/hi.json", "studies/cpu/out/tiny/med.json",
            "reports/cpu/tiny.md", "reports/cpu/tiny.csv", "reports/cpu/tiny.png"} <= set(
        tree(repo, "studies/cpu", "reports/cpu"))
    assert not (repo / "studies/smoke").exists() and not (repo / "reports/smoke").exists()
    commit(repo, "cpu results")
    before = tree(repo, "studies/cpu", "reports/cpu")

    # A second scale, cheap enough for a CPU: the paper's settings (like: paper) cut to 1 epoch, other widths.
    config["scales"]["smoke"] = {"like": "paper", "datasets": {"mnist": "mnist5k"},
                                 "defaults": {"batch_size": 250, "width": 12, "device": "cpu"},
                                 "overrides": {"epochs": 1}}
    write_studies(repo, config)
    # a new scale changes no other scale's pipeline
    assert (repo / "studies/cpu/dvc.yaml").read_bytes() == before["studies/cpu/dvc.yaml"]
    commit(repo, "a smoke scale")
    proc = sh(repo, sys.executable, "-m", "lmc.studies_dvc", "--repro", "tiny", "--scale", "smoke")
    assert set(ran(proc.stdout)) == {"source-mnist", "prepare-mnist", "tiny-hi", "tiny-med", "report-tiny"}, (
        proc.stdout)
    assert tree(repo, "studies/cpu", "reports/cpu") == before  # not a byte of the cpu scale changed
    assert sh(repo, "git", "status", "--porcelain", "studies/cpu", "reports/cpu").stdout == ""

    lock = yaml.safe_load((repo / "studies/smoke/dvc.lock").read_text())["stages"]
    assert list(lock) == ["source-mnist", "prepare-mnist", "tiny-hi", "tiny-med", "report-tiny"]  # dvc.yaml's order
    assert {"../cpu/out/tiny/hi.json", "../cpu/out/tiny/med.json"} <= {d["path"] for d in lock["report-tiny"]["deps"]}
    for cell in ("hi", "med"):
        mine = json.loads((repo / f"studies/smoke/out/tiny/{cell}.json").read_text())
        theirs = json.loads((repo / f"studies/cpu/out/tiny/{cell}.json").read_text())
        assert mine["scale"] == "smoke" and theirs["scale"] == "cpu"
        assert (mine["spec"]["width"], mine["spec"]["batch_size"], mine["spec"]["epochs"]) == (12, 250, 1)
        assert (theirs["spec"]["width"], theirs["spec"]["batch_size"], theirs["spec"]["epochs"]) == (16, 500, 1)
    md = (repo / "reports/smoke/tiny.md").read_text()
    assert "Scale: **smoke**" in md
    hi = json.loads((repo / "studies/smoke/out/tiny/hi.json").read_text())["metrics"]
    hi_cpu = json.loads((repo / "studies/cpu/out/tiny/hi.json").read_text())["metrics"]
    assert (hi["barrier_test"], hi["acc_test_a"]) != (hi_cpu["barrier_test"], hi_cpu["acc_test_a"])  # two runs
    lines = md.splitlines()
    head = [c.strip() for c in next(l for l in lines if l.startswith("| lr |")).strip().strip("|").split("|")]
    row = [c.strip() for c in next(l for l in lines if l.startswith("| hi |")).strip().strip("|").split("|")]
    assert len(row) == len(head), (head, row)
    assert row[head.index("barrier test / train")] == (
        f"{100 * hi['barrier_test']:.2f} / {100 * hi['barrier_train']:.2f}")  # its own
    assert row[head.index("paper test / train")] == "0.05 / 0.00"
    assert row[head.index("cpu scale test / train")] == (
        f"{100 * hi_cpu['barrier_test']:.2f} / {100 * hi_cpu['barrier_train']:.2f}")  # next to its own
    with open(repo / "reports/smoke/tiny.csv", newline="") as f:
        csv_hi = next(r for r in csv.DictReader(f) if r["cell"] == "hi")
    assert float(csv_hi["cpu_barrier_test"]) == pytest.approx(hi_cpu["barrier_test"], abs=1e-6)
    assert float(csv_hi["barrier_test"]) == pytest.approx(hi["barrier_test"], abs=1e-6)
    assert (repo / "reports/smoke/tiny.png").read_bytes().startswith(b"\x89PNG")

    for scale in ("cpu", "smoke"):  # every stage of both scales up to date (in its folder, a scale's own stages
        # have bare names; the always-changed source stage is never up to date)
        status = json.loads(sh(repo / "studies" / scale, "dvc", "status", "--json").stdout or "{}")
        assert {"source-mnist"} <= set(status) and not [s for s in status if ":" not in s and s != "source-mnist"], (
            scale, status)

    # Running the smoke scale again reruns nothing. A cpu result changed by hand leaves the cpu cell stale and
    # the smoke report too: the smoke run reads the cpu result as it is (its report reruns), never reruns the cell.
    again = sh(repo, sys.executable, "-m", "lmc.studies_dvc", "--repro", "tiny", "--scale", "smoke").stdout
    assert set(ran(again)) <= {"source-mnist"}, again
    commit(repo, "smoke results")
    out = repo / "studies/cpu/out/tiny/med.json"
    out.write_text(out.read_text().replace('"scale": "cpu"', '"scale": "cpu" '))
    assert "tiny-med" in json.loads(sh(cpu, "dvc", "status", "--json").stdout or "{}")
    smoke = json.loads(sh(repo / "studies/smoke", "dvc", "status", "--json").stdout or "{}")
    assert "report-tiny" in smoke and not {"tiny-hi", "tiny-med"} & set(smoke), smoke
    rerun = sh(repo, sys.executable, "-m", "lmc.studies_dvc", "--repro", "tiny", "--scale", "smoke").stdout
    assert set(ran(rerun)) == {"source-mnist", "report-tiny"}, rerun
    assert out.read_text().count('"scale": "cpu" ') == 1  # the hand-changed cpu result is still there
    assert sh(repo, "git", "status", "--porcelain", "studies/smoke/out", "studies/cpu/dvc.lock").stdout == ""


def test_spawn_study_trains_its_trunk_once_and_a_is_the_same_run_at_every_k(tmp_path):
    config = copy.deepcopy(TINY_STUDIES)
    config["studies"] = {"tinyspawn": {
        "title": "t", "finding": "none", "shared_trunk": True,
        "base": {"model": "mlp", "dataset": "mnist", "pairs": 2, "epochs": 2},
        "axes": {"k": {"k0": {"spawn_step": 0}, "k3": {"spawn_step": 3}, "k5": {"spawn_step": 5}}},
        "figure": {"x": "spawn_step", "y": "barrier"}}}
    repo = copy_repo(tmp_path, {"download": False})
    write_studies(repo, config)
    commit(repo, "spawn study")
    assert set(ran(sh(repo / "studies/cpu", "dvc", "repro", "report-tinyspawn").stdout)) == {
        "source-mnist", "prepare-mnist", "trunk-tinyspawn", "tinyspawn-k0", "tinyspawn-k3", "tinyspawn-k5",
        "report-tinyspawn"}
    assert sorted(p.name for p in (repo / "studies/cpu/trunk/tinyspawn").iterdir()) == ["step3.pt", "step5.pt"]
    results = {k: json.loads((repo / f"studies/cpu/out/tinyspawn/{k}.json").read_text()) for k in ("k0", "k3", "k5")}
    for key in ("acc_train_a", "acc_test_a"):  # A continues its trunk exactly: the same model whatever k
        assert len({r["metrics"][key] for r in results.values()}) == 1
    assert results["k0"]["curves"]["pairs"][0]["test_error"] != results["k5"]["curves"]["pairs"][0]["test_error"]
    (repo / "studies/cpu/trunk/tinyspawn/step3.pt").unlink()
    (repo / "studies/cpu/trunk/tinyspawn/step3.pt").write_bytes(b"damaged")
    proc = sh(repo, sys.executable, "-m", "stages.cell", "tinyspawn", "k3", "--scale", "cpu", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: trunk snapshot studies/cpu/trunk/tinyspawn/step3.pt is damaged (UnpicklingError); "
        "rerun `dvc --cd studies/cpu repro -f trunk-tinyspawn`"]
