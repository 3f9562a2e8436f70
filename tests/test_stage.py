"""What every stage's main() shares (lmc/stage.py): a known failure is one line and exit status 2."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmc.spec import SpecError
from lmc.stage import entry, out_of_memory

ROOT = Path(__file__).resolve().parents[1]


def test_a_user_error_or_an_allocation_failure_is_one_line_and_anything_else_a_traceback(capsys):
    def failing(err):
        @entry
        def main():
            raise err
        return main

    for err, line in ((SpecError("params: lr=0 is out of range"), "error: params: lr=0 is out of range"),
                      (MemoryError(), "error: out of memory (MemoryError); lower width, depth, pairs or batch_size")):
        with pytest.raises(SystemExit) as exit_:
            failing(err)()
        assert exit_.value.code == 2 and capsys.readouterr().err.startswith(line)
    with pytest.raises(RuntimeError, match="a bug"):  # not an allocation failure: its traceback stays
        failing(RuntimeError("a bug"))()


def test_the_allocators_own_failures_are_read_as_out_of_memory():
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(10 ** 15)  # 4 PB: refused at once, whatever the machine
    assert out_of_memory(cpu.value).startswith("can't allocate memory: you tried to allocate 4000000000000000 bytes")
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")) == \
        "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert out_of_memory(RuntimeError("shapes cannot be multiplied")) is None


def test_a_width_no_machine_holds_stops_init_in_one_line(tmp_path):
    params = (ROOT / "params.yaml").read_text()
    assert "\nwidth: 512\n" in params
    (tmp_path / "params.yaml").write_text(params.replace("\nwidth: 512\n", "\nwidth: 1000000000000\n"))
    proc = subprocess.run([sys.executable, "-m", "stages.init"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: out of memory (can't allocate memory: you tried to allocate 3136000000000000 "
                               "bytes") and lines[0].endswith("or run on a machine with more memory")
    assert not (tmp_path / "data").exists()  # nothing written
