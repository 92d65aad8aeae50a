"""Fault-injection points: named moments of a run where a test can kill the process (SIGKILL, as
a crash, the OOM killer or ``kill -9`` would) to show that rerunning the command loses nothing.

The core marks each such moment with ``checkpoint(PHASE)``:

- ``train``: after each optimiser step of a classifier's training;
- ``cache``: a cache file (weights or their JSON) written and fsynced, before its rename;
- ``cell``: inside a cell, after each metric;
- ``store``: inside a cell's store transaction, after its ``cells`` row, before its values;
- ``tables``: between the table files moved into the run directory.

Two environment variables drive them (unset, a checkpoint costs one dictionary look-up):

- ``NICEBENCH_KILL_AT=PHASE:K``: this process sends itself SIGKILL at the K-th checkpoint of
  ``PHASE`` (counted per process, from 1);
- ``NICEBENCH_FAULT_TRACE=FILE``: each checkpoint appends ``PID PHASE`` to ``FILE``, so a test can
  count a run's moments, pick some with a seeded RNG and kill a rerun there.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["PHASES", "checkpoint"]

PHASES = ("train", "cache", "cell", "store", "tables")
_counts: Counter[str] = Counter()


def checkpoint(phase: str) -> None:
    """Mark a moment of ``phase`` (one of :data:`PHASES`): trace it, and kill this process here
    when ``NICEBENCH_KILL_AT`` names this phase and count."""
    trace, kill_at = os.environ.get("NICEBENCH_FAULT_TRACE"), os.environ.get("NICEBENCH_KILL_AT")
    if not (trace or kill_at):
        return
    _counts[phase] += 1
    if trace:
        with open(trace, "a") as f:
            f.write(f"{os.getpid()} {phase}\n")
    if kill_at:
        name, _, k = kill_at.rpartition(":")
        if name == phase and k.isdigit() and _counts[phase] == int(k):
            os.kill(os.getpid(), signal.SIGKILL)
