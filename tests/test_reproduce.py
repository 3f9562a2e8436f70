"""The reproduction check's report (lmc/reproduce.py); its end-to-end run on the real pipeline is in
tests/test_pipeline.py."""
import subprocess
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
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    commit_here("c")
    assert reproduce.usage_problem(Path("."), "HEAD") is None
    assert reproduce.main(["--against", "nosuchref"]) == 2
    assert "--against nosuchref: git knows no such commit here" in capsys.readouterr().err
    assert reproduce.main(["--project", "studies/cpuu", "--relock-report", "r.md"]) == 2
    assert "--project studies/cpuu: no dvc.yaml there" in capsys.readouterr().err and not Path("r.md").exists()
    (tmp_path / "dvc.lock").write_text("stages:\n  train:\n    outs: [\n")  # cut short mid-write
    assert "dvc.lock here is not valid YAML (cut short by an interrupted write?)" in \
        reproduce.usage_problem(Path("."), "HEAD")


def test_a_stage_missing_from_the_lock_here_is_named_as_not_run_not_blamed_on_a_kernel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = {"train": "data/twins", "report": "reports/metrics.json"}
    lock = {"schema": "2.0", "stages": {s: {"cmd": s, "outs": [{"path": o, "md5": "0" * 32}]} for s, o in outs.items()}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    commit_here("c")
    del lock["stages"]["report"]  # a lock cut short after its first stage
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    ok, text = reproduce.check(Path("."), "HEAD")
    assert not ok and "- reports/metrics.json (stage report): missing here" in text
    assert "- report: not recorded in dvc.lock here (not run, interrupted, or the lock was cut short): run " \
           "`dvc repro` before the check" in text and "unpinned" not in text
