"""Numerics modes: which CPU kernels compute, pinned before torch loads (this module imports no torch).

Training amplifies the last bit of every sum, so a kernel that sums in another order on another CPU makes
another model. Two modes (the `numerics` param):

- `portable`: the same bytes on every x86-64 CPU. Every kernel choice that depends on the CPU is pinned,
  whatever the environment says: ATen's own kernels at their baseline build (`ATEN_CPU_CAPABILITY=default`,
  no AVX2/AVX-512 variants), MKL on its conditional-numerical-reproducibility path that every x86-64 CPU
  takes, Intel or AMD (`MKL_CBWR=COMPATIBLE`), oneDNN and NNPACK off (their kernels are chosen per ISA and
  cache size), and a fixed thread count (ATen and MKL split sums by thread). tests/test_numerics.py shows on
  one machine that a user's settings are overridden and that MKL held to an older CPU's instructions computes
  the same bytes (and says what it does not show).
- `native`: this machine's fast paths, as the results made before the modes existed: ATen capped at AVX2 and
  MKL asked for its AVX2 branch (which it takes on Intel only), both unless the environment says otherwise,
  and every core. Same bytes on one kind of CPU only.

`lmc/__init__.py` pins the mode named by LMC_NUMERICS (default portable) when lmc is first imported. A stage
whose spec names the other mode starts itself again in it (`require`), before any work; a notebook is told
to set LMC_NUMERICS. CUDA runs are reproducible per GPU model whatever the mode (lmc/device.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from pathlib import Path

MODES = ("portable", "native")
ENV = "LMC_NUMERICS"
PORTABLE_THREADS = 2  # ATen and MKL split work by thread: a fixed count, oversubscribed or not
# The environment of the portable pin: forced, whatever the user set.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",  # MKL would otherwise pick its own thread count per call
    "MKL_NUM_THREADS": str(PORTABLE_THREADS),
    "OMP_NUM_THREADS": str(PORTABLE_THREADS),
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN is off (configure_torch); should a kernel reach it, its lowest ISA
    "DNNL_MAX_CPU_ISA": "SSE41",
}
NATIVE_DEFAULTS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}  # what results before the modes used
EMULATED = "LMC_EMULATED_CPU"  # the CPU model QEMU emulates for this process (lmc/fingerprint.py, reproduce)
RESTORE = "LMC_NUMERICS_RESTORE"  # the values the portable pin replaced, for a native process started below it

_active: str | None = None
_reexec_allowed = False


class NumericsError(RuntimeError):
    """A process pinned to one mode asked to compute in the other; the message is one line."""


def pin(mode: str) -> None:
    """Set the environment of `mode` for the kernels torch, MKL and oneDNN load (call before torch loads)."""
    global _active
    if mode not in MODES:
        raise NumericsError(f"{ENV}={mode!r} is not a numerics mode; choose one of {', '.join(MODES)}")
    restore = json.loads(os.environ.pop(RESTORE, "{}"))
    for key, value in restore.items():  # undo a portable pin inherited from a parent process
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if mode == "portable":
        replaced = {key: os.environ.get(key) for key in PORTABLE_ENV}
        os.environ.update(PORTABLE_ENV)
        os.environ[RESTORE] = json.dumps(replaced)
    else:
        for key, value in NATIVE_DEFAULTS.items():
            os.environ.setdefault(key, value)
    os.environ[ENV] = mode
    _active = mode


def unpinned_environ() -> dict[str, str]:
    """os.environ as it was before this process's portable pin: for a child that should see the user's own."""
    env = dict(os.environ)
    for key, value in json.loads(env.pop(RESTORE, "{}")).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.pop(ENV, None)
    return env


def active() -> str:
    if _active is None:
        raise NumericsError("lmc.numerics.pin was never called (lmc/__init__.py calls it)")
    return _active


@contextlib.contextmanager
def restart_allowed(allowed: bool):
    """While a stage that is this process's program (`python -m stages.<name>`) runs, `require` may start the
    process again in the other mode; outside it, never."""
    global _reexec_allowed
    before, _reexec_allowed = _reexec_allowed, allowed
    try:
        yield
    finally:
        _reexec_allowed = before


def threads() -> int:
    """The thread count computing uses in this mode (portable: fixed; native: every core)."""
    return PORTABLE_THREADS if active() == "portable" else (os.cpu_count() or 1)


def configure_torch() -> None:
    """The settings that can only be made after torch loads. Portable: oneDNN and NNPACK off, the thread count
    fixed. Native: none (training takes every core, evaluation torch's default, as before the modes)."""
    if active() != "portable":
        return
    import torch
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(PORTABLE_THREADS)


def require(mode: str) -> None:
    """Compute in `mode` from here on: configure torch if this process is pinned to it; else start this stage
    again in it (nothing has been written yet), or, outside a stage, stop with one line."""
    if mode == active():
        configure_torch()
        return
    if not _reexec_allowed or os.environ.get(EMULATED):  # under QEMU an exec would leave the emulated CPU
        raise NumericsError(f"this Python process computes in numerics={active()} (pinned when lmc was first "
                            f"imported) but the spec asks for numerics={mode}; start Python with {ENV}={mode}")
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ, **{ENV: mode})
    os.execve(sys.executable, sys.orig_argv, env)


def environment(device: str = "cpu") -> dict:
    """The numeric environment this process computes in: what a reproduction check compares when the bytes
    differ. Torch must be loaded."""
    import torch
    env = {
        "numerics": active(),
        **cpu_identity(),
        "machine": platform.machine(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "mkl": _built_with(torch, "Math Kernel Library Version "),
        "onednn": _built_with(torch, "MKL-DNN "),
        "onednn_enabled": torch.backends.mkldnn.enabled,
        "threads": torch.get_num_threads(),
        "pins": {key: os.environ.get(key) for key in PORTABLE_ENV},
    }
    if device == "cuda" and torch.cuda.is_available():
        env["cuda"] = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                       "driver": _nvidia_driver(), "cudnn": torch.backends.cudnn.version(),
                       "deterministic": torch.are_deterministic_algorithms_enabled(),
                       "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    return env


def record(path, key: str, device: str = "cpu") -> None:
    """Add this process's numeric environment under `key` to the JSON file at `path` (beside the results, not
    one of them: it differs between machines that compute the same bytes)."""
    from .io import write_text_atomic
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    records[key] = environment(device)
    write_text_atomic(path, json.dumps(dict(sorted(records.items())), indent=1) + "\n")


# The x86-64 microarchitecture levels (psABI), by the /proc/cpuinfo flags each adds; lzcnt shows as abm.
X86_64_LEVELS = (("x86-64-v2", {"cx16", "popcnt", "sse4_1", "sse4_2", "ssse3", "lahf_lm"}),
                 ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"}),
                 ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}))


def cpu_identity(cpuinfo: str | None = None, emulated: str | None = None) -> dict:
    """Which CPU this is: its name (`cpu`) and, since a name such as "AMD EPYC" covers Zen 3 and Zen 4 alike,
    its vendor, family, model and stepping (`cpu_id`) and its x86-64 level (`isa`), from /proc/cpuinfo's first
    processor. Only the name, from the platform, where /proc/cpuinfo is missing (not Linux). Under QEMU's
    user-mode emulation /proc/cpuinfo names the host: given the emulated model (`emulated`; None reads
    LMC_EMULATED_CPU, "" asks for the host), the record names it, and the host's family and model as where it
    ran; its x86-64 level is unknown there (QEMU's TCG has no AVX-512) and left out."""
    if emulated is None:
        emulated = os.environ.get(EMULATED)
    if emulated:
        host = cpu_identity(cpuinfo, emulated="")
        return {"cpu": f"{emulated} (emulated by QEMU)", "cpu_id": f"QEMU -cpu {emulated}",
                "emulated_on": host.get("cpu_id", host["cpu"])}
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough: a machine's cores are one model
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    out = {"cpu": fields.get("model name") or platform.processor() or "unknown"}
    if "vendor_id" in fields:
        out["cpu_id"] = (f"{fields['vendor_id']} family {fields.get('cpu family')} model {fields.get('model')} "
                         f"stepping {fields.get('stepping')}")
    if "flags" in fields:
        flags, out["isa"] = set(fields["flags"].split()), "x86-64"
        for level, needed in X86_64_LEVELS:
            if not needed <= flags:
                break
            out["isa"] = level
    return out


def _built_with(torch, label: str) -> str | None:
    """The version torch's build configuration gives after `label` (MKL, oneDNN)."""
    for line in torch.__config__.show().splitlines():
        if label in line:
            return line.split(label, 1)[1].split(" for ")[0].split(" (Git")[0].strip()
    return None


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None
