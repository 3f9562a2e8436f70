"""The fingerprint probe: a short twin experiment per model on fixed synthetic images, through the real code
(Θ0, training with Adam and augmentation, the path, the report's metrics), hashed. A kernel that computes
another bit changes it, so two fingerprints compare two CPUs (or modes) in minutes instead of a pipeline.

    python -m lmc.fingerprint                           # this machine's, in the portable mode, every model
    python -m lmc.fingerprint --check                   # against the committed reference (exit 1 if it differs)
    python -m lmc.fingerprint --check --cpu Haswell-noTSX   # computed under QEMU's emulation of that CPU model
    python -m lmc.fingerprint --write                   # record this machine's as the reference (after a relock)

Under `--cpu`, the probe runs as `qemu-x86_64 -cpu MODEL python -m lmc.fingerprint` (apt-get install
qemu-user): user-mode emulation gives the process that CPU's CPUID, vendor included, so MKL and oneDNN take the
paths they take on it; QEMU's TCG has no AVX-512, so models that have it are emulated without it. The process
is told the model (LMC_EMULATED_CPU), since /proc/cpuinfo still names the host.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from . import numerics

MODELS = ("mlp", "linear", "cnn", "lc_cnn", "vit")
REFERENCE = Path("reports/fingerprints.json")


def fingerprint(models: tuple[str, ...] = MODELS) -> dict[str, str]:
    """The sha256 (16 hex digits) of each model's twin experiment, in this process's numerics mode."""
    import numpy as np

    from . import api, data
    from .spec import spec_from_dict
    numerics.configure_torch()
    rng = np.random.default_rng(0)
    split = [data.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n))
             for n in (256, 64)]
    out = {}
    for model in models:
        spec = spec_from_dict({"model": model, "width": 32, "channels": 8, "epochs": 1, "batch_size": 64,
                               "optimizer": "adam", "lr": 0.001, "augment": True, "pairs": 2,
                               "numerics": numerics.active()})
        result = api.experiment(spec, *split)
        out[model] = hashlib.sha256(json.dumps(result).encode()).hexdigest()[:16]
    return out


def emulated(cpu: str, models: tuple[str, ...] = MODELS, mode: str | None = None,
             timeout: float | None = None) -> dict[str, str]:
    """The fingerprints a process computes under QEMU's emulation of `cpu`, in `mode` (default: this one's)."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise RuntimeError("--cpu needs QEMU's user-mode emulator: apt-get install qemu-user")
    env = {**numerics.unpinned_environ(), numerics.ENV: mode or numerics.active(), numerics.EMULATED: cpu}
    proc = subprocess.run([qemu, "-cpu", cpu, sys.executable, "-m", "lmc.fingerprint", "--models", ",".join(models)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    try:
        if proc.returncode == 0:
            return json.loads(proc.stdout.splitlines()[-1])["fingerprints"]
    except (ValueError, KeyError, IndexError):
        pass
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"the probe under qemu-x86_64 -cpu {cpu} failed: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmc.fingerprint", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: every model)")
    parser.add_argument("--cpu", help="compute under QEMU's emulation of this CPU model (qemu-x86_64 -cpu help)")
    parser.add_argument("--check", action="store_true", help=f"compare with {REFERENCE} (portable mode)")
    parser.add_argument("--write", action="store_true", help=f"write this machine's into {REFERENCE}")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"error: --models: {unknown[0]} is no model; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    reference = {}
    if args.check:
        try:
            reference = json.loads(REFERENCE.read_text())
        except (OSError, ValueError) as err:
            print(f"error: --check: cannot read {REFERENCE} ({err}); restore it with git checkout", file=sys.stderr)
            return 2
        if numerics.active() != reference.get("numerics"):
            print(f"error: {REFERENCE} holds {reference.get('numerics')} fingerprints; start with "
                  f"{numerics.ENV}={reference.get('numerics')}", file=sys.stderr)
            return 2
    try:
        prints = emulated(args.cpu, models) if args.cpu else fingerprint(models)
    except (RuntimeError, subprocess.SubprocessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = {"numerics": numerics.active(), **numerics.cpu_identity(emulated=args.cpu), "fingerprints": prints}
    print(json.dumps(record))
    if args.write:
        from .io import write_text_atomic
        write_text_atomic(REFERENCE, json.dumps(record, indent=1) + "\n")
    if not args.check:
        return 0
    moved = [m for m in models if prints[m] != reference["fingerprints"].get(m)]
    where = f"under {args.cpu}" if args.cpu else "here"
    if moved:
        print(f"NOT the same: {', '.join(moved)} computed other bytes {where} than on {reference['cpu']} "
              f"({REFERENCE}); the portable mode promises the same: report it with this output")
        return 1
    print(f"the same: all {len(models)} models' fingerprints {where} equal those of {reference['cpu']} ({REFERENCE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
