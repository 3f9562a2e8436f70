"""Matrix products on one fixed kernel: the same bytes on every x86-64-v3 CPU, however many cores compute.

Every product here is ONE single-threaded call of OpenBLAS's Haswell sgemm kernel (numpy's bundled OpenBLAS,
its core type set before numpy loads, OPENBLAS_CORETYPE=Haswell; `check` makes sure of it):

- The kernel is chosen by name, not by the CPU: the same AVX2 and FMA instructions on an Intel or an AMD CPU,
  and on one with AVX-512 too (it never takes an AVX-512 path). sgemm's are exact (IEEE 754 multiplies and
  fused multiply-adds in a fixed order), so every x86-64-v3 CPU (Intel since Haswell, AMD since Zen) computes
  the same bits. Not every AVX2 kernel agrees so: ATen's AVX2 sqrt computes other bytes under QEMU's emulated
  AMD EPYC than on this project's Intel Xeon (`benchmarks/kernels.py --emulate` checks it), so ATen's own
  kernels stay at their baseline build (lmc/numerics.py).
- One call is one thread, so no sum is split by the thread count; `check` holds OpenBLAS's own threads at 1. The
  bytes depend on the operands' shapes alone. A caller that wants more cores runs independent products
  (another model's) side by side, each on its own thread (the GIL is released while sgemm runs).

Forward and backward of `linear` and `matmul` go through it. Not yet used by the pipeline: the portable mode
still computes its matmuls with MKL's COMPATIBLE branch (lmc/numerics.py) until its results are relocked.
"""
from __future__ import annotations

import numpy as np
import torch

CORETYPE = "Haswell"  # OpenBLAS's name for its AVX2 + FMA kernels


class KernelError(RuntimeError):
    """The fixed kernel is not what computes here; the message is one line that says what to do."""


def check() -> None:
    """Make sure numpy's OpenBLAS runs the Haswell kernel on one thread: its core type is read once, when numpy
    loads, so a process that loaded numpy before OPENBLAS_CORETYPE was set cannot use the fixed kernel."""
    from threadpoolctl import threadpool_info, threadpool_limits

    blas = [i for i in threadpool_info() if i.get("internal_api") == "openblas" and "numpy" in i.get("filepath", "")]
    if not blas:
        raise KernelError("numpy's OpenBLAS is not loaded; the fixed kernel needs numpy's bundled OpenBLAS")
    found = blas[0].get("architecture")
    if found != CORETYPE:
        raise KernelError(f"numpy's OpenBLAS runs its {found} kernel, not {CORETYPE}: its core type is read when "
                          f"numpy loads; start Python with OPENBLAS_CORETYPE={CORETYPE}")
    if blas[0].get("num_threads") != 1:
        threadpool_limits(1, user_api="blas")


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-D float32 CPU tensors (any layout: a transposed view is passed to sgemm as such)."""
    out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.float32)
    np.matmul(_blasable(a), _blasable(b), out=out.numpy())
    return out


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b over matching leading dimensions (..., n, k) @ (..., k, m): one sgemm per matrix, in order."""
    lead = a.shape[:-2]
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    out = torch.empty((a3.shape[0], a.shape[-2], b.shape[-1]), dtype=torch.float32)
    o = out.numpy()
    for i in range(a3.shape[0]):
        np.matmul(_blasable(a3[i]), _blasable(b3[i]), out=o[i])
    return out.reshape(*lead, a.shape[-2], b.shape[-1])


def _blasable(t: torch.Tensor) -> np.ndarray:
    """The tensor as an array sgemm takes without a copy (row- or column-major); any other layout is copied
    to row-major first, so numpy never falls back to its own, slower loop."""
    t = t.detach()
    if t.dtype != torch.float32 or t.device.type != "cpu":
        raise TypeError(f"lmc.kernels computes float32 on the CPU, not {t.dtype} on {t.device}")
    if not (t.is_contiguous() or t.t().is_contiguous()):
        t = t.contiguous()
    return t.numpy()


class _Linear(torch.autograd.Function):
    """x @ weight.T + bias with its gradients, every product on the fixed kernel; x may have leading
    dimensions (the ViT's tokens), which are flattened into rows."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.shape, ctx.has_bias = x.shape, bias is not None
        out = mm(rows, weight.t())
        if bias is not None:
            out += bias.detach()
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        g = grad.reshape(-1, weight.shape[0]).contiguous()
        gx = mm(g, weight).reshape(ctx.shape) if ctx.needs_input_grad[0] else None
        gw = mm(g.t(), rows) if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class _Matmul(torch.autograd.Function):
    """a @ b over matching leading dimensions (attention's q·kᵀ and weights·v, a layer per position)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return bmm(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad = grad.contiguous()
        ga = bmm(grad, b.transpose(-1, -2)) if ctx.needs_input_grad[0] else None
        gb = bmm(a.transpose(-1, -2), grad) if ctx.needs_input_grad[1] else None
        return ga, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """torch.nn.functional.linear on the fixed kernel."""
    return _Linear.apply(x, weight, bias)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.matmul for operands with the same leading dimensions, on the fixed kernel."""
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"lmc.kernels.matmul needs equal leading dimensions, not {tuple(a.shape)} @ {tuple(b.shape)}")
    return _Matmul.apply(a, b)


def probe() -> str:
    """The sha256 (16 hex digits) of a fixed set of products, forward and backward, at this project's shapes:
    an MLP layer at batch 128 (784 -> 512), its head, and one attention block's products (8 heads, 65 tokens).
    Equal probes mean the same kernel computed the same bits."""
    import hashlib

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g) for s in ((128, 784), (512, 784), (512,)))
    q, k = (torch.randn(16, 8, 65, 48, generator=g) for _ in range(2))
    w, b, q, k = (t.requires_grad_() for t in (w, b, q, k))
    h = linear(x, w, b)
    out = linear(torch.nn.functional.leaky_relu(h, 0.01), w[:10, :512].detach().contiguous())
    scores = matmul(q, k.transpose(-1, -2))
    (out.square().sum() + scores.square().sum()).backward()
    digest = hashlib.sha256()
    for t in (h, out, scores, w.grad, b.grad, q.grad, k.grad):
        digest.update(t.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def main(argv: list[str]) -> int:
    """`python -m lmc.kernels [N]`: the probe, after the check; with N, N probes at once on N threads, each
    printed (tests/test_kernels.py)."""
    import concurrent.futures
    import sys

    try:
        check()
    except KernelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = int(argv[0]) if argv else 1
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        print(" ".join(pool.map(lambda _: probe(), range(n))))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
