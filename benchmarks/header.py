"""Where and when a benchmark ran, said the same way in every report it writes: the command, the commit
measured, the machine (lmc.numerics.cpu_identity: the CPU's name, vendor, family, model and x86-64 level, and
its cores), Python, and the date. A report's figures hold on that machine and at that commit."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmc.numerics import cpu_identity  # noqa: E402

# What a benchmark's figures come from, unless it names its own: the code and the benchmarks.
CODE = ("lmc", "stages", "benchmarks")


def command(argv: list[str] | None = None) -> str:
    """The command as typed from the project's top folder: `python benchmarks/x.py --flag value`."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    return shlex.join(["python", str(script.relative_to(ROOT) if script.is_relative_to(ROOT) else script),
                       *argv[1:]])


def commit(measured: tuple[str, ...] = CODE) -> str:
    """"at commit `abc1234`", and which of `measured` had uncommitted changes (then no commit was measured)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--", *measured).splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return "outside a git checkout"
    return f"at commit `{head}`" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def machine() -> str:
    """"Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 167 stepping 1, x86-64-v4), 2 cores, Python
    3.11.9": the CPU as the numeric records name it."""
    cpu = cpu_identity()
    details = ", ".join(v for v in (cpu.get("cpu_id"), cpu.get("isa")) if v)
    return (f"{cpu['cpu']}{f' ({details})' if details else ''}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


def header(cmd: str | None = None, measured: tuple[str, ...] = CODE) -> str:
    """One line for a report's top: "`command` at commit `abc1234`, on <machine>, 2026-12-08"."""
    return f"`{cmd or command()}` {commit(measured)}, on {machine()}, {time.strftime('%Y-%m-%d')}"
