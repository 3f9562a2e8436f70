"""The executors by name: the one place that lists them. Home and the command line reach each one through
common.Executor, the contract they all meet. An executor's module is imported when it is first asked for: the
bare machine of the archive executor has no submitit, which the SLURM executor needs."""
from __future__ import annotations

import importlib

from .common import Executor

# kind -> "module:class"
EXECUTORS: dict[str, str] = {"local": "lmc.dispatch.local:LocalExecutor", "slurm": "lmc.dispatch.slurm:SlurmExecutor",
                             "archive": "lmc.dispatch.archive:ArchiveExecutor"}


def executor_class(kind: str | None) -> type[Executor] | None:
    """The executor of that kind (a record's "executor" field); None for a kind this version does not know."""
    if kind not in EXECUTORS:
        return None
    module, _, name = EXECUTORS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
