"""The fingerprint probe (lmc/fingerprint.py): this machine computes the committed fingerprints, and CPUs of
both vendors, emulated by QEMU, compute the host's bytes in the portable mode while the native mode's differ."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import pytest

from lmc import fingerprint, numerics

# Two Intel and two AMD models QEMU's TCG emulates (qemu-x86_64 -cpu help), with their vendors' CPUID.
EMULATED = {"GenuineIntel": ("Haswell-noTSX", "Skylake-Client-noTSX-IBRS"), "AuthenticAMD": ("EPYC-Rome", "EPYC-Milan")}
PROBED = ("mlp", "cnn")  # MKL's matmuls and the convolution: the paths that take vendor-specific kernels


def probe(*args: str, mode: str = "portable") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmc.fingerprint", *args], capture_output=True, text=True,
                          env={**numerics.unpinned_environ(), numerics.ENV: mode})


def test_this_machine_computes_the_committed_fingerprints():
    """The portable bytes of every model equal the committed reference (made on another CPU, reports/
    fingerprints.json names it): a quick check of the portable promise on any machine, and a relock or a kernel
    change that moves a model's bytes fails here until the reference is rewritten (--write)."""
    proc = probe("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the same: all 5 models' fingerprints here equal those of" in proc.stdout


def test_a_wrong_model_or_a_missing_emulator_is_one_line():
    proc = probe("--models", "mlp,resnet")
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "error: --models: resnet is no model; choose from mlp, linear, cnn, lc_cnn, vit"
    env = {**numerics.unpinned_environ(), "PATH": os.path.dirname(sys.executable)}  # no qemu-x86_64 on it
    proc = subprocess.run([sys.executable, "-m", "lmc.fingerprint", "--cpu", "Haswell-noTSX", "--models", "mlp"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "apt-get install qemu-user" in proc.stderr


@pytest.mark.e2e
def test_emulated_cpus_of_both_vendors_compute_the_hosts_portable_bytes_and_other_native_ones():
    """Under QEMU's user-mode emulation of two Intel and two AMD models (no AVX-512: TCG has none), the portable
    probe gives this machine's bytes. The control: the native mode, under a model of the other vendor than this
    machine's, gives other bytes than here (MKL takes vendor-specific paths), so the emulation reaches the
    kernels that differ and an equality above is no accident. make test installs qemu-user."""
    assert shutil.which("qemu-x86_64"), "qemu-x86_64 missing: make test-system-packages installs qemu-user"
    host_vendor = numerics.cpu_identity().get("cpu_id", "").split()[0]
    other = next(models for vendor, models in EMULATED.items() if vendor != host_vendor)[0]
    host = {mode: fingerprint_in(mode) for mode in ("portable", "native")}
    runs = [(cpu, "portable") for models in EMULATED.values() for cpu in models] + [(other, "native")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        got = dict(zip(runs, pool.map(lambda run: fingerprint.emulated(run[0], PROBED, mode=run[1], timeout=1800),
                                      runs)))
    for (cpu, mode), prints in got.items():
        if mode == "portable":
            assert prints == host["portable"], f"{cpu}: {prints} != this machine's {host['portable']}"
    native = got[other, "native"]
    assert all(native[m] != host["native"][m] for m in PROBED), (other, native, host["native"])


def fingerprint_in(mode: str) -> dict:
    proc = probe("--models", ",".join(PROBED), mode=mode)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)["fingerprints"]
