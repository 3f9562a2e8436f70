"""The reproduction check's report (lmc/reproduce.py); its end-to-end run on the real pipeline is in
tests/test_pipeline.py."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from lmc import paths, reproduce, studies

ROOT = Path(__file__).resolve().parents[1]

AMD = {"numerics": "portable", "cpu": "AMD EPYC", "aten_cpu_capability": "DEFAULT", "torch": "2.14.1",
       "mkl": "2024.2", "onednn": "v3.12.0", "onednn_enabled": False, "threads": 2}
INTEL = {**AMD, "cpu": "Intel(R) Xeon(R) Platinum 8480+"}


def commit_here(message: str) -> None:
    """The working folder as a git repository whose one commit holds every file written so far."""
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(["git", *args], check=True, capture_output=True)


def test_metric_moves_name_each_changed_key_and_keep_order():
    old = {"barrier_test": 0.003, "acc": 0.9, "layers": {"l0": {"barrier": 0.1}}}
    new = {"barrier_test": 0.0027, "acc": 0.9, "layers": {"l0": {"barrier": 0.2}}, "added": 1}
    assert reproduce.metric_moves(old, new) == [("barrier_test", 0.003, 0.0027), ("layers.l0.barrier", 0.1, 0.2),
                                                ("added", None, 1)]


def test_each_cause_is_named():
    assert "report it" in reproduce.explain(AMD, INTEL)  # portable across CPUs: a difference is a bug
    assert "cpu: AMD EPYC → Intel(R) Xeon(R) Platinum 8480+" in reproduce.explain(AMD, INTEL)
    native = {**AMD, "numerics": "native"}
    assert reproduce.explain(native, {**INTEL, "numerics": "native"}).startswith(
        "the native mode gives the same bytes on the same kind of CPU only (cpu: AMD EPYC")
    assert "another numerics mode (native → portable)" in reproduce.explain(native, AMD)
    assert "other library versions (torch: 2.14.1 → 2.15.0)" in reproduce.explain(AMD, {**AMD, "torch": "2.15.0"})
    h100 = {**AMD, "cuda": {"gpu": "NVIDIA H100", "driver": "570"}}
    assert "another GPU model or driver" in reproduce.explain(h100, {**AMD, "cuda": {"gpu": "NVIDIA H200", "driver": "570"}})
    assert "this is a bug" in reproduce.explain(h100, h100)
    assert "made before records existed" in reproduce.explain(None, AMD)
    assert "the rebuild recorded no numeric environment" in reproduce.explain(AMD, None)
    zen3, zen4 = ({**AMD, "cpu_id": f"AuthenticAMD family 25 model {m} stepping 1", "isa": isa}
                  for m, isa in ((1, "x86-64-v3"), (17, "x86-64-v4")))
    assert "cpu_id: AuthenticAMD family 25 model 1 stepping 1 → AuthenticAMD family 25 model 17 stepping 1; " \
           "isa: x86-64-v3 → x86-64-v4" in reproduce.explain(zen3, zen4)  # one name, two CPUs
    assert "cpu_id" not in reproduce.explain(AMD, zen4)  # a record from before cpu_id: unknown, not a difference
    assert "cuda: None → " in "; ".join(reproduce.env_differences(AMD, {**AMD, "cuda": {"gpu": "NVIDIA H100"}}))


def test_a_scale_of_the_studies_keeps_its_numerics_records_in_its_own_folder():
    assert reproduce._record_path(Path("."), "train") == paths.NUMERICS
    for scale in studies.SCALES:  # where stages/cell.py and stages/trunk.py write them
        assert reproduce._record_path(studies.scale_dir(scale), "table2-sgd-hi") == \
            studies.numerics_record(scale, "table2-sgd-hi") == Path(f"studies/{scale}/numerics/table2-sgd-hi.json")
    assert (ROOT / reproduce._record_path(Path("studies/cpu"), "trunk-spawn")).exists()  # a committed one


def test_a_relock_report_gives_each_study_its_summary_and_names_every_changed_verdict(tmp_path, monkeypatch):
    import json

    def write(path: Path, **metrics):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": metrics}))

    monkeypatch.chdir(tmp_path)
    cell, same, default = (Path("studies/cpu/out/t2/adam-hi.json"), Path("studies/cpu/out/t2/sgd.json"),
                           paths.METRICS)
    write(cell, barrier_test=0.012, barrier_train=0.019, barrier_test_cross_init=0.05)
    write(same, barrier_test=0.001, barrier_train=0.0)
    write(default, barrier_test=0.003, barrier_train=0.0)
    commit_here("before")
    write(cell, barrier_test=0.010, barrier_train=0.0205, barrier_test_cross_init=0.05)  # train crosses 2%
    write(default, barrier_test=0.0027, barrier_train=0.0)
    text = reproduce.relock_report("HEAD", [default, cell, same], "t")
    summary, table = text.split("\n\n")[1], text.split("\n\n")[2]
    assert summary.startswith("7 barriers compared with HEAD; 3 moved, the largest by 0.20 pp") and \
        summary.endswith("changed: studies/cpu/out/t2/adam-hi.json barrier_train (1.90 → 2.05%).")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == ["default experiment", "cpu/t2"]
    assert rows["default experiment"] == "| default experiment | 2 | 1 | 0.03 | 0.03 | none |"
    assert rows["cpu/t2"] == "| cpu/t2 | 5 | 2 | 0.18 | 0.20 | 1 |"  # moves of 0.20 and 0.15 pp
    assert "| studies/cpu/out/t2/adam-hi.json | barrier_train | 1.90 | 2.05 | +0.15 | **connected → not** |" in text


def test_a_ref_git_does_not_know_a_folder_without_a_pipeline_or_a_broken_lock_is_one_line(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {cmd: x, outs: [{path: a, md5: '0'}]}}\n")
    commit_here("c")
    assert reproduce.usage_problem(Path("."), "HEAD") is None
    assert reproduce.main(["--against", "nosuchref"]) == 2
    assert "--against nosuchref: git knows no such commit here" in capsys.readouterr().err
    assert reproduce.main(["--project", "studies/cpuu", "--relock-report", "r.md"]) == 2
    assert "--project studies/cpuu: no dvc.yaml there" in capsys.readouterr().err and not Path("r.md").exists()
    assert reproduce.main(["--sample", "2"]) == 2  # the default experiment has no cells to draw
    assert "--sample draws cells of a scale of the studies" in capsys.readouterr().err
    assert reproduce.main(["--stages", ","]) == 2  # with no target, dvc repro would rebuild every stage
    assert "error: no stage to rebuild (the stages named: )" in capsys.readouterr().err
    Path("sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert "run from the repository's top folder" in reproduce.usage_problem(Path("."), "HEAD")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # a lock of no stage: nothing to check
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "empty"], check=True)
    assert reproduce.main([]) == 2 and "dvc.lock at HEAD records no stage" in capsys.readouterr().err
    (tmp_path / "dvc.lock").write_text("stages:\n  train:\n    outs: [\n")  # cut short mid-write, then committed
    subprocess.run(["git", "commit", "-qam", "cut", "--author", "t <t@t>"], check=True, capture_output=True,
                   env={**os.environ, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    assert "dvc.lock at HEAD is not valid YAML" in reproduce.usage_problem(Path("."), "HEAD")


def write_outputs(outs: dict[str, str]) -> dict:
    """The files `outs` (path -> text) and a dvc.lock that records each as its own stage's output, as DVC would."""
    for path, text in outs.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    lock = {"schema": "2.0", "stages": {Path(p).stem: {"cmd": "x", "outs": [{"path": p, "md5": reproduce.dvc_md5(
        Path(p))}]} for p in outs}}
    Path("dvc.lock").write_text(yaml.safe_dump(lock))
    return lock


def test_only_recomputed_bytes_count_a_changed_file_under_an_unchanged_lock_fails_and_the_rest_is_unchecked(
        tmp_path, monkeypatch):
    """The verdict comes from the files' own bytes, and only from those this check rebuilt: a file whose bytes
    moved under an unchanged lock fails; a tracked output it did not rebuild is 'not recomputed', never
    reproduced; a check that rebuilt nothing passes nothing."""
    monkeypatch.chdir(tmp_path)
    write_outputs({"data/twins.pt": "weights", "reports/metrics.json": '{"barrier_test": 0.01}'})
    commit_here("results")
    ok, text = reproduce.check(Path("."), "HEAD", Path("."), ["twins"])
    assert ok and text.startswith("reproduced: all 1 outputs of dvc.lock that this check recomputed")
    assert "recomputed here, the committed bytes: 1" in text and \
        "not recomputed in this check, never counted as reproduced: 1" in text

    Path("data/twins.pt").write_text("other weights")  # the lock is untouched
    ok, text = reproduce.check(Path("."), "HEAD", Path("."), ["twins", "metrics"])
    assert not ok and text.startswith("NOT reproduced: 1 of the 2 outputs") and "- data/twins.pt (stage twins)" in text
    Path("reports/metrics.json").write_text('{"barrier_test": 0.02}')
    ok, text = reproduce.check(Path("."), "HEAD", Path("."), ["metrics"])
    assert not ok and "    barrier_test: 0.01 → 0.02 (+0.01)" in text

    ok, text = reproduce.check(Path("."), "HEAD", Path("."), [])  # nothing rebuilt: whatever is on disk
    assert not ok and text.startswith("NOT checked: this check recomputed no output(s) of dvc.lock")
    assert "not recomputed in this check, never counted as reproduced: 2" in text


def test_a_tracked_result_committed_with_other_bytes_than_its_lock_fails_even_unrebuilt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_outputs({"out/t2/hi.json": '{"barrier_test": 0.01}', "out/t2/lo.json": '{"barrier_test": 0.03}'})
    Path("out/t2/lo.json").write_text('{"barrier_test": 0.003}')  # a result edited by hand, committed as it is
    commit_here("results")
    ok, text = reproduce.check(Path("."), "HEAD", Path("."), ["hi"])
    assert not ok and "NOT what the lock records: 1 tracked output(s) committed at HEAD with other bytes than " \
        "dvc.lock names (edited by hand, or committed without their lock): out/t2/lo.json" in text


def test_a_folder_hashes_as_dvc_records_it(tmp_path):
    """dvc_md5 against DVC itself: `dvc add` of a folder of nested files records the md5 the check computes."""
    (tmp_path / "twins/pair0").mkdir(parents=True)
    for name, payload in {"twins/pair0/a.pt": b"a" * 3, "twins/pair0/b.pt": b"\x00\x01", "twins/z.txt": b"z"}.items():
        (tmp_path / name).write_bytes(payload)
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run(dvc + ["add", "-q", "twins"], cwd=tmp_path, check=True)
    recorded = yaml.safe_load((tmp_path / "twins.dvc").read_text())["outs"][0]["md5"]
    assert reproduce.dvc_md5(tmp_path / "twins") == recorded and recorded.endswith(".dir")
    assert reproduce.dvc_md5(tmp_path / "twins/z.txt") == hashlib.md5(b"z").hexdigest()
    assert reproduce.dvc_md5(tmp_path / "absent") is None


def test_a_stage_is_rebuilt_with_every_stage_above_it():
    stages = {"source": {"outs": {"data/mnist/source.json": 1}, "deps": []},
              "prepare": {"outs": {"data/mnist/train.beton": 1}, "deps": ["data/mnist/source.json", "../../lmc"]},
              "trunk-spawn": {"outs": {"trunks/spawn": 1}, "deps": ["data/mnist/train.beton"]},
              "spawn-k8": {"outs": {"out/spawn/k8.json": 1}, "deps": ["data/mnist/train.beton", "trunks/spawn"]},
              "table2-hi": {"outs": {"out/table2/hi.json": 1}, "deps": ["data/mnist/train.beton"]}}
    assert reproduce.upstream(stages, ["spawn-k8"]) == ["source", "prepare", "trunk-spawn", "spawn-k8"]
    assert reproduce.upstream(stages, ["table2-hi"]) == ["source", "prepare", "table2-hi"]


def test_the_sample_is_spread_over_models_and_optimizers_within_its_budget_and_redrawn_by_its_seed():
    cells = {f"{m}-{o}-{i}": (m, o, 10.0 * (i + 1)) for m in ("mlp", "cnn", "vit") for o in ("sgd", "adam")
             for i in range(4)}
    draw = reproduce.draw(cells, 6, seed=3, budget_s=1e9)
    assert len(draw) == 6 and {cells[c][:2] for c in draw} == {(m, o) for m in ("mlp", "cnn", "vit")
                                                                for o in ("sgd", "adam")}
    assert draw == reproduce.draw(cells, 6, seed=3, budget_s=1e9)
    assert any(reproduce.draw(cells, 6, seed=s, budget_s=1e9) != draw for s in range(4, 8))
    tight = reproduce.draw(cells, 6, seed=3, budget_s=45)
    assert sum(cells[c][2] for c in tight) <= 45 and tight


def test_the_committed_studies_are_drawn_from_every_cell_with_a_time(tmp_path):
    locked = reproduce.lock_stages((ROOT / "studies/cpu/dvc.lock").read_text())
    cells = reproduce.cell_strata("cpu", locked)
    assert len(cells) == 131 and {m for m, _, _ in cells.values()} == {"mlp", "linear", "cnn", "lc_cnn", "vit"}
    assert all(seconds > 0 for _, _, seconds in cells.values()) and "trunk-spawn" not in cells
    default = reproduce.draw(cells, 6, seed=0, budget_s=reproduce.SAMPLE_BUDGET_S)
    assert len(default) >= 5 and len({cells[c][:2] for c in default}) == len(default)


def test_a_stage_that_fails_in_the_rebuild_is_named_as_such_not_blamed_on_a_kernel(tmp_path, monkeypatch):
    """In a real scratch clone, whose committed records the rebuild removes first: a stage that wrote nothing
    and recorded nothing is 'not rebuilt' with no record, never the committed record compared with itself."""
    monkeypatch.chdir(tmp_path)
    write_outputs({"data/twins.pt": "weights", "reports/metrics.json": "{}"})
    paths.NUMERICS.write_text(json.dumps({"twins": AMD, "metrics": AMD}))
    commit_here("results")
    here = reproduce.scratch_clone("HEAD", tmp_path)
    for out in ("data/twins.pt", "reports/metrics.json"):  # what rebuild deletes before DVC runs
        (here / out).unlink()
    reproduce.forget_records(here, Path("."), ["twins", "metrics"])
    assert json.loads((here / paths.NUMERICS).read_text()) == {}
    (here / "data/twins.pt").write_text("weights")  # the first stage rebuilt its output; the second failed
    (here / paths.NUMERICS).write_text(json.dumps({"twins": AMD}))
    ok, text = reproduce.check(Path("."), "HEAD", here, ["twins", "metrics"])
    assert not ok and "- reports/metrics.json (stage metrics): not rebuilt here" in text
    assert "- metrics: no record from the rebuild\n  meaning: the rebuild recorded no numeric environment" in text
    assert "unpinned" not in text


def test_a_committed_folder_output_hashes_as_its_lock_names_it(tmp_path, monkeypatch):
    """A tracked folder output (DVCLive's reports/train) is hashed from git's blobs as DVC hashes a folder: the
    same as its lock's md5 when untouched, another when a file in it was edited and committed."""
    monkeypatch.chdir(tmp_path)
    write_outputs({"reports/train/metrics.json": "{}", "reports/train/plots/loss.tsv": "1\n"})
    lock = {"schema": "2.0", "stages": {"train": {"cmd": "x", "outs": [
        {"path": "reports/train", "md5": reproduce.dvc_md5(Path("reports/train"))}]}}}
    Path("dvc.lock").write_text(yaml.safe_dump(lock))
    commit_here("results")
    assert reproduce.committed_md5("HEAD", Path("reports/train")) == lock["stages"]["train"]["outs"][0]["md5"]
    ok, text = reproduce.check(Path("."), "HEAD", Path("."), [])
    assert "NOT what the lock records" not in text
    Path("reports/train/plots/loss.tsv").write_text("2\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "edit"], check=True)
    assert "NOT what the lock records: 1 tracked output(s)" in reproduce.check(Path("."), "HEAD", Path("."), [])[1]
