import errno
from pathlib import Path

import pytest

from lmc.io import OutputError, atomic_dir, atomic_path, write_text_atomic
from .fixtures import run_stage




def test_a_failed_block_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyError("crash")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_folder_is_replaced_whole_or_not_at_all_and_a_killed_runs_leftover_is_dropped(tmp_path):
    target = tmp_path / "twins"
    (target / "pair0").mkdir(parents=True)
    (target / "pair0/a.pt").write_text("old")
    (tmp_path / "twins.partial/pair9").mkdir(parents=True)  # what a SIGKILL mid-write left
    with pytest.raises(KeyError):
        with atomic_dir(target) as tmp:
            assert list(tmp.iterdir()) == []  # the leftover is not taken up
            (tmp / "a.pt").write_text("half")
            raise KeyError("crash")
    assert list(tmp_path.iterdir()) == [target] and (target / "pair0/a.pt").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "b.pt").write_text("new")
    assert list(tmp_path.iterdir()) == [target] and list(target.iterdir()) == [target / "b.pt"]


def test_full_disk_is_an_output_error_naming_the_file(tmp_path, monkeypatch):
    def full(self, data):
        self.open("wb").write(data[:10])  # part of it lands, as on a real full disk
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError, match=r"cannot write .*metrics.json \(No space left on device\); free disk space, then rerun"):
        write_text_atomic(tmp_path / "metrics.json", "{}" * 100)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_stops_a_stage_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("dataset: mnist5k\n")
    (tmp_path / "data").write_text("a file where the data folder should be")
    proc = run_stage(tmp_path, "source")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: cannot write data/source.json (File exists); check that the path can be written, then rerun"]
