"""Numerics modes (lmc/numerics.py) on one machine. What the fingerprint tests show, each against the bytes a
fresh process computes (lmc/fingerprint.py):

- Controls: the same settings twice give the same bytes, so an `!=` below is a setting's doing, not noise.
- Overrides: a user's ATEN_CPU_CAPABILITY or MKL_CBWR does not reach the portable mode's kernels (lmc pins them
  before torch loads, so these cases all run the pinned path: they test the override, not other kernels). Each
  value first shows, unpinned, that it gives other bytes: an override that stopped working would fail.
- Kernels: MKL_ENABLE_INSTRUCTIONS, which the portable mode leaves alone, holds MKL to an older CPU's
  instructions; unpinned it gives other bytes, and under the portable mode (MKL_CBWR=COMPATIBLE) every model's
  bytes are the same.

Not here, for no case of them could fail (measured on an Intel Xeon with AVX-512, native mode, every model):
- Thread count: 1, 2 and 8 threads give the same bytes (no kernel splits sums of the fingerprint's sizes), so it
  is no proof of thread-count independence; the portable mode pins 2 threads (test_portable_pins_what_the_user_set
  _and_native_leaves_it checks the pin); a test of independence belongs to a change of threading.
- ONEDNN_MAX_CPU_ISA: pinned, but oneDNN is off in the portable mode (same test), so its override cannot show.
- GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA,-AVX: changes libm's double functions (Python's math.exp, math.cos)
  but no torch kernel's bytes at any ATen level, nor the fingerprint's.
- NPY_DISABLE_CPU_FEATURES (numpy 2.x names X86_V3 ...; the older AVX2 FMA3 AVX512F only warn): no byte; the
  results take no float that numpy computes with its SIMD variants.
"""
import json
import os
import subprocess
import sys

import pytest

from lmc import numerics
from lmc.fingerprint import MODELS
from lmc.spec import Spec, SpecError, spec_from_dict

FLAGS = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
AVX512 = "avx512f" in FLAGS
# The portable mode's ATen and MKL pins, set by hand in the native mode (which leaves oneDNN on and every core):
# the pinned kernels' settings, with nothing overriding what the environment says.
UNPINNED = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
# Values a user may set that the portable mode overrides (the MLP's bytes: ATen and MKL compute all of them).
OVERRIDDEN = [("ATEN_CPU_CAPABILITY", v) for v in ("avx2",) + (("avx512",) if AVX512 else ())] + \
             [("MKL_CBWR", v) for v in ("AUTO", "AVX2")]
# MKL's instruction-set cap, below this CPU's: an older CPU's MKL paths, on this one.
MKL_CAPS = ["SSE4_2"] + (["AVX2"] if AVX512 else [])


def fingerprint(mode: str, *models: str, **env) -> dict:
    """The fingerprint of a fresh Python process in `mode`, the user's environment plus `env` (of `models`, or
    of every model)."""
    proc = subprocess.run([sys.executable, "-m", "lmc.fingerprint", "--models", ",".join(models or MODELS)],
                          capture_output=True, text=True, timeout=600,
                          env={**numerics.unpinned_environ(), **env, numerics.ENV: mode})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])["fingerprints"]


@pytest.fixture(scope="module")
def portable():
    return fingerprint("portable")


@pytest.fixture(scope="module")
def unpinned():
    return fingerprint("native", "mlp", **UNPINNED)


@pytest.fixture(scope="module")
def mkl_auto():
    """MKL on its own choice of path (no reproducibility branch), every model: where its instruction cap shows."""
    return fingerprint("native", MKL_CBWR="AUTO")


def test_the_same_settings_give_the_same_bytes(unpinned, mkl_auto):
    assert fingerprint("native", "mlp", **UNPINNED) == unpinned
    assert fingerprint("native", MKL_CBWR="AUTO") == mkl_auto


@pytest.mark.parametrize("key,value", OVERRIDDEN, ids=[f"{k}={v}" for k, v in OVERRIDDEN])
def test_the_portable_mode_overrides_a_users_kernel_choice(portable, unpinned, key, value):
    assert fingerprint("native", "mlp", **{**UNPINNED, key: value}) != unpinned  # unpinned, it reaches a kernel
    assert fingerprint("portable", "mlp", **{key: value})["mlp"] == portable["mlp"]


@pytest.mark.parametrize("cap", MKL_CAPS)
def test_portable_bytes_do_not_depend_on_mkls_instruction_set(portable, mkl_auto, cap):
    capped = fingerprint("native", MKL_CBWR="AUTO", MKL_ENABLE_INSTRUCTIONS=cap)
    assert all(capped[m] != mkl_auto[m] for m in capped), (capped, mkl_auto)  # unpinned, every model sees it
    assert fingerprint("portable", MKL_ENABLE_INSTRUCTIONS=cap) == portable


ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse sse2 ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm avx f16c fma abm movbe bmi1 bmi2 avx2

processor\t: 1
vendor_id\t: GenuineIntel
"""


def test_the_record_tells_cpus_of_one_name_apart():
    """"AMD EPYC" names Zen 3 and Zen 4 alike: the record adds the family, model and stepping and the x86-64
    level, read from the first processor's block of /proc/cpuinfo."""
    zen3 = numerics.cpu_identity(ZEN3)
    assert zen3 == {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD family 25 model 1 stepping 1", "isa": "x86-64-v3"}
    zen4_flags = "avx512f avx512bw avx512cd avx512dq avx512vl"
    zen4 = numerics.cpu_identity(ZEN3.replace("model\t\t: 1", "model\t\t: 17").replace("avx2\n", f"avx2 {zen4_flags}\n"))
    assert zen4["cpu"] == zen3["cpu"] and zen4["cpu_id"].endswith("model 17 stepping 1") and zen4["isa"] == "x86-64-v4"
    assert numerics.cpu_identity(ZEN3.replace(" avx2", ""))["isa"] == "x86-64-v2"  # one flag short of v3
    assert set(numerics.cpu_identity("")) == {"cpu"}  # no /proc/cpuinfo: the platform's name alone
    if FLAGS:  # this machine's record has all three
        assert {"cpu", "cpu_id", "isa"} <= set(numerics.cpu_identity())


def test_the_record_names_an_emulated_cpu_and_the_host_it_ran_on():
    """Under QEMU's user-mode emulation /proc/cpuinfo names the host: the record takes the model from the check
    that started the emulator."""
    assert numerics.cpu_identity(ZEN3, emulated="Haswell-noTSX") == {
        "cpu": "Haswell-noTSX (emulated by QEMU)", "cpu_id": "QEMU -cpu Haswell-noTSX",
        "emulated_on": "AuthenticAMD family 25 model 1 stepping 1"}
    assert numerics.cpu_identity(ZEN3, emulated="") == numerics.cpu_identity(ZEN3)


def test_a_misspelt_mode_is_one_line_when_lmc_is_imported():
    proc = subprocess.run([sys.executable, "-c", "import lmc"], capture_output=True, text=True,
                          env={**numerics.unpinned_environ(), numerics.ENV: "Native"})
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: LMC_NUMERICS='Native' is not a numerics mode; choose one of portable, native"]


def test_portable_pins_what_the_user_set_and_native_leaves_it():
    probe = "import os, torch, lmc, lmc.numerics as n; n.configure_torch(); " \
            "print(os.environ['ATEN_CPU_CAPABILITY'], os.environ['MKL_CBWR'], torch.get_num_threads(), " \
            "torch.backends.mkldnn.enabled)"
    env = {**numerics.unpinned_environ(), "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "7"}
    run = lambda mode: subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                      env={**env, numerics.ENV: mode}).stdout.split()
    assert run("portable") == ["default", "COMPATIBLE", str(numerics.PORTABLE_THREADS), "False"]
    assert run("native")[:2] == ["avx2", "AUTO"]  # the user's choice, as before the modes


def test_a_native_child_of_a_portable_process_gets_the_users_environment():
    env = {**numerics.unpinned_environ(), "ATEN_CPU_CAPABILITY": "avx2"}
    env.pop("MKL_CBWR", None)
    parent = ("import os, subprocess, sys, lmc; os.environ['LMC_NUMERICS'] = 'native'; "
              "print(subprocess.run([sys.executable, '-c', 'import os, lmc; print(os.environ[\"ATEN_CPU_CAPABILITY\"], "
              "os.environ[\"MKL_CBWR\"], \"OMP_NUM_THREADS\" in os.environ)'], capture_output=True, text=True).stdout)")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True,
                         env={**env, numerics.ENV: "portable"}).stdout.split()
    assert out == ["avx2", "AVX2", "False"]


def test_the_mode_is_a_param_recorded_away_from_its_legacy_value():
    assert Spec().numerics == "portable" and Spec().record()["numerics"] == "portable"
    assert "numerics" not in Spec(numerics="native").record()  # results made before the modes were native
    with pytest.raises(SpecError, match="numerics='fast' is not allowed; choose one of portable, native"):
        spec_from_dict({"numerics": "fast"})


def test_outside_a_stage_the_other_mode_is_one_clear_error():
    assert numerics.active() == "portable"
    with pytest.raises(numerics.NumericsError, match="start Python with LMC_NUMERICS=native"):
        numerics.require("native")


def test_a_stage_called_from_other_code_never_restarts_that_program():
    """A stage's main() called in-process (a test, a notebook) must not make `require` start the calling program
    again (it did: pytest re-executed itself and ran the whole suite anew); it gets the one-line error, during
    the call and after it."""
    from lmc.stage import entry

    @entry
    def main():
        numerics.require("native")

    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    with pytest.raises(numerics.NumericsError):
        numerics.require("native")


def test_a_stage_run_as_the_program_restarts_in_its_mode(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("import os, lmc\nfrom lmc import numerics\nfrom lmc.stage import entry\n\n@entry\n"
                      "def main():\n    numerics.require('native')\n    print(numerics.active())\n\nmain()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env={**numerics.unpinned_environ(), numerics.ENV: "portable"})
    assert out.returncode == 0 and out.stdout.split() == ["native"], out.stderr[-2000:]
