"""lmc.kernels: products on one fixed kernel (OpenBLAS's Haswell sgemm, one thread a call). Their values are
torch's up to float rounding; their bytes do not depend on the threads or cores a process has, nor on the CPU
model (QEMU's emulation of Intel and AMD models; marked e2e, it takes minutes)."""
import concurrent.futures
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lmc import kernels

PINNED = {"OPENBLAS_CORETYPE": kernels.CORETYPE}


def probe(env: dict | None = None, prefix: tuple[str, ...] = (), at_once: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "lmc.kernels", str(at_once)], capture_output=True, text=True,
                          env={**os.environ, **PINNED, **(env or {})}, timeout=1800)


def test_linear_and_matmul_are_torchs_products_forward_and_backward():
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(3, 40, 30, generator=g), torch.randn(20, 30, generator=g), torch.randn(20, generator=g)
    q, k = torch.randn(2, 4, 9, 6, generator=g), torch.randn(2, 4, 9, 6, generator=g)
    grads = []
    for fixed in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, w, b, q, k)]
        lin = (kernels.linear if fixed else torch.nn.functional.linear)(*leaves[:3])
        att = (kernels.matmul if fixed else torch.matmul)(leaves[3], leaves[4].transpose(-1, -2))
        (lin.sin().sum() + att.cos().sum()).backward()
        grads.append([lin, att, *(t.grad for t in leaves)])
    for mine, torchs in zip(*grads):
        torch.testing.assert_close(mine, torchs, rtol=1e-5, atol=1e-5)


def test_a_product_of_other_layouts_or_types_is_refused_or_copied():
    a = torch.randn(6, 8)[:, ::2]  # neither row- nor column-major: copied first
    assert torch.equal(kernels.mm(a, torch.eye(4)), a)
    with pytest.raises(TypeError, match="float32 on the CPU"):
        kernels.mm(torch.ones(2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="equal leading dimensions"):
        kernels.matmul(torch.ones(2, 3, 4), torch.ones(4, 5))


def test_the_bytes_do_not_depend_on_threads_or_cores():
    """One process per setting: OpenBLAS, OpenMP and torch told 1 or 4 threads, on one core or two, and four
    probes computed at once on four threads of one process. Every probe is the same bytes."""
    runs = {"1 thread": probe({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}),
            "4 threads": probe({"OPENBLAS_NUM_THREADS": "4", "OMP_NUM_THREADS": "4"}),
            "4 probes at once": probe(at_once=4)}
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        runs["core 0"] = probe(prefix=("taskset", "-c", "0"))
        runs["cores 0,1"] = probe(prefix=("taskset", "-c", "0,1"))
    for name, run in runs.items():
        assert run.returncode == 0, (name, run.stderr)
    probes = {name: run.stdout.split() for name, run in runs.items()}
    assert len(probes["4 probes at once"]) == 4
    assert len({p for found in probes.values() for p in found}) == 1, probes


def test_a_process_whose_openblas_runs_another_kernel_is_told_in_one_line():
    run = probe({"OPENBLAS_CORETYPE": "Sandybridge"})
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "error: numpy's OpenBLAS runs its Sandybridge kernel, not Haswell: its core type is read when numpy "
        "loads; start Python with OPENBLAS_CORETYPE=Haswell"], run.stderr


@pytest.mark.e2e  # slow: each emulated process takes minutes
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-user (make test-system-packages)")
def test_emulated_intel_and_amd_cpus_compute_the_hosts_bytes():
    """QEMU's user-mode emulation gives the process the model's CPUID, vendor included (no AVX-512: TCG lacks
    it, and the kernel never takes it). Two Intel and two AMD models compute the host's probe."""
    host = probe().stdout.strip()
    models = ("Haswell-noTSX", "Skylake-Client-noTSX-IBRS", "EPYC-Rome", "EPYC-Milan")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = dict(zip(models, pool.map(lambda m: probe(prefix=("qemu-x86_64", "-cpu", m)), models)))
    for model, run in runs.items():
        assert run.returncode == 0, (model, run.stderr[-2000:])
        assert run.stdout.strip() == host, model
