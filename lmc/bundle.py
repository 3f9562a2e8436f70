"""The bundle: what a bare machine (Python and torch, no network, none of the project's other pins; the lent GPU
machine, an air-gapped lab box) needs to run study cells through `dvc repro`: wheels of DVC and of everything
it pulls in, built for the target's Python, and the pins to install them by.

    make bundle PYTHON=3.12                      # = python -m lmc.bundle --python 3.12 --out .bundle

On the bare machine, beside the project (its system packages stay visible; a pinned version it lacks is put
in the environment instead):

    python3 -m venv --system-site-packages /tmp/lmc-env
    /tmp/lmc-env/bin/pip install --no-index --find-links .bundle/wheels -r .bundle/requirements.txt

It needs neither FFCV nor its native libraries: the cells read the .beton files with numpy (lmc/data.py), and
the datasets are prepared at home (the archive executor carries the .beton files, lmc/dispatch). The wheels
are the versions this environment runs (requirements.txt), for the target's interpreter and manylinux; a
package that PyPI has only as source is built here (those are pure Python). Building needs the package index;
the bare machine needs nothing but the bundle.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from .io import write_text_atomic
from .spec import SpecError
from .stage import entry

ROOTS = ("dvc",)  # what a worker runs besides the project's own code and the machine's torch stack
# manylinux tags pip may take for x86-64 (pip matches each one exactly): glibc 2.17 (manylinux2014) to 2.39
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"] + [
    f"manylinux_2_{n}_x86_64" for n in range(17, 40)]


def closure(roots: tuple[str, ...], python: str) -> dict[str, str]:
    """name -> installed version of `roots` and everything they require on Python `python` (markers evaluated
    for it, the extras each requirement names followed)."""
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}
    found: dict[str, str] = {}

    def walk(name: str, extras: set[str]) -> None:
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            return
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SpecError(f"bundle: {name} is required but not installed here; run `make setup` first") from None
        found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in {"", *extras}):
                walk(req.name, set(req.extras))

    for root in roots:
        walk(root, set())
    return dict(sorted(found.items()))


def fetch(pins: dict[str, str], python: str, wheels: Path) -> list[str]:
    """Each pinned package as a wheel for CPython `python` on x86-64 Linux into `wheels`; returns the names that
    PyPI has only as source, built here instead (pure Python, so any interpreter takes them)."""
    wheels.mkdir(parents=True, exist_ok=True)
    built = []
    for name, version in pins.items():
        binary = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                  "--python-version", python, "--implementation", "cp",
                  *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels), f"{name}=={version}"]
        if subprocess.run(binary, capture_output=True, text=True).returncode == 0:
            continue
        source = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), f"{name}=={version}"]
        proc = subprocess.run(source, capture_output=True, text=True)
        if not proc.returncode and not any(wheels.glob(f"{re.sub(r'[-.]', '_', name)}-{version}-py3-none-any.whl")):
            raise SpecError(f"bundle: {name}=={version} has no wheel for Python {python} and builds into a wheel "
                            f"for this machine only; it cannot travel")
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SpecError(f"bundle: no wheel of {name}=={version} for Python {python} ({last}); check the "
                            f"network to the package index")
        built.append(name)
    return built


@entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmc.bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the bare machine's Python, MAJOR.MINOR (default: this one's)")
    parser.add_argument("--out", default=".bundle", help="where to write wheels/ and requirements.txt")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        raise SpecError(f"bundle: --python={args.python!r}; give MAJOR.MINOR, e.g. 3.12")
    out = Path(args.out)
    pins = closure(ROOTS, args.python)
    built = fetch(pins, args.python, out / "wheels")
    write_text_atomic(out / "requirements.txt", f"# lmc bundle for Python {args.python}: python -m lmc.bundle\n"
                      + "".join(f"{n}=={v}\n" for n, v in pins.items()))
    size = sum(p.stat().st_size for p in (out / "wheels").iterdir())
    print(f"bundle: {len(pins)} packages for Python {args.python} in {out}/wheels ({size / 2**20:.1f} MiB"
          f"{'; built from source: ' + ', '.join(built) if built else ''})", file=sys.stderr)


if __name__ == "__main__":
    main()
