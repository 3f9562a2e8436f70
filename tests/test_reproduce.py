"""The reproduction check's report (lmc/reproduce.py); its end-to-end run on the real pipeline is in
tests/test_pipeline.py."""
from pathlib import Path

from lmc import paths, reproduce, studies

ROOT = Path(__file__).resolve().parents[1]

AMD = {"numerics": "portable", "cpu": "AMD EPYC", "aten_cpu_capability": "DEFAULT", "torch": "2.14.1",
       "mkl": "2024.2", "onednn": "v3.12.0", "onednn_enabled": False, "threads": 2}
INTEL = {**AMD, "cpu": "Intel(R) Xeon(R) Platinum 8480+"}


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


def test_a_scale_of_the_studies_keeps_its_numerics_records_in_its_own_folder():
    assert reproduce._record_path(Path("."), "train") == paths.NUMERICS
    for scale in studies.SCALES:  # where stages/cell.py and stages/trunk.py write them
        assert reproduce._record_path(studies.scale_dir(scale), "table2-sgd-hi") == \
            studies.numerics_record(scale, "table2-sgd-hi") == Path(f"studies/{scale}/numerics/table2-sgd-hi.json")
    assert (ROOT / reproduce._record_path(Path("studies/cpu"), "trunk-spawn")).exists()  # a committed one
