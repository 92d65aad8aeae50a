"""Runs that are killed (SIGKILL at seeded moments: during training, a cache write, a cell, a store
transaction, the table writing) or that share a run directory with another live run: rerunning the
command gives the tables of an uninterrupted run, and each classifier is trained once.

The kills go through the core's fault-injection points (:mod:`nicebench.faults`); each run is a
``nicebench run`` subprocess on a fresh model cache, so training happens in it."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nicebench.faults import PHASES

SEED = 16
DATASET = "scenes:size=32,n=8,train_n=600,train_epochs=2"  # ~10 training steps of ~0.1 s
ARGS = [
    "run",
    "--datasets",
    DATASET,
    "--methods",
    "center,gradcam",
    "--metrics",
    "deletion,pointing_game",
    "--n-images",
    "8",
    "--shard-size",
    "4",
    "--threads",
    "1",
    "-q",
]
N_CELLS = 4
TIMING = ("explain_ms", "peak_mem", "seconds")  # measured, not computed: they differ run to run


def _start(
    out: Path, cache: Path, trace: Path, kill_at: str | None = None, report: bool = False, **popen
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NICEBENCH_")}
    env.update(NICEBENCH_CACHE=str(cache), NICEBENCH_FAULT_TRACE=str(trace), OMP_NUM_THREADS="1")
    if kill_at:
        env["NICEBENCH_KILL_AT"] = kill_at
    argv = [*ARGS, "--out", str(out)] + ([] if report else ["--no-report"])
    return subprocess.Popen(
        [sys.executable, "-m", "nicebench.cli", *argv],
        env=env,
        text=True,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen},
    )


def _nicebench(out, cache, trace, kill_at=None) -> tuple[int, str, str]:
    proc = _start(out, cache, trace, kill_at)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def _trace(path: Path) -> list[tuple[int, str]]:
    """(pid, phase) of each fault-injection checkpoint passed, in order."""
    if not path.exists():
        return []
    return [
        (int(p), phase)
        for p, phase in (line.split() for line in path.read_text().split("\n") if line)
    ]


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    tables = {name: pd.read_csv(out / name) for name in ("leaderboard.csv", "per_image.csv")}
    return {
        name: t.drop(columns=[c for c in t.columns if c.startswith(TIMING)])
        for name, t in tables.items()
    }


def _assert_same_tables(out: Path, reference: dict[str, pd.DataFrame]) -> None:
    for name, table in _tables(out).items():
        assert len(table) == len(reference[name]), name
        pd.testing.assert_frame_equal(table, reference[name], check_exact=True, obj=name)


def _classifier_sha(cache: Path) -> str:
    import json

    metas = list((cache / "classifiers").glob("*.json"))
    assert len(metas) == 1, f"one classifier's metadata expected in {cache}, found {metas}"
    return json.loads(metas[0].read_text())["sha256"]


def _stored_cells(out: Path) -> int:
    with sqlite3.connect(out / "store.sqlite") as conn:
        return conn.execute("SELECT count(*) FROM cells WHERE status = 'ok'").fetchone()[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its tables, its classifier's hash and the checkpoints it passed."""
    root = tmp_path_factory.mktemp("reference")
    code, stdout, stderr = _nicebench(root / "out", root / "cache", root / "trace")
    assert code == 0, stderr
    assert f"{N_CELLS} cells computed, 0 already in the store, 0 failed" in stdout
    counts = Counter(phase for _, phase in _trace(root / "trace"))
    assert set(counts) == set(PHASES) and counts["store"] == N_CELLS, counts
    return {
        "tables": _tables(root / "out"),
        "sha": _classifier_sha(root / "cache"),
        "counts": counts,
    }


@pytest.mark.slow
def test_killed_at_seeded_moments_a_rerun_gives_the_uninterrupted_tables(reference, tmp_path):
    """One run killed five times, each rerun of the same command killed at a seeded moment of
    the next phase (training; a cache file written but not renamed; inside a cell; inside a
    cell's store transaction; between two table files), then rerun to the end."""
    rng = np.random.default_rng(SEED)
    out, cache, trace = tmp_path / "out", tmp_path / "cache", tmp_path / "trace"
    counts = reference["counts"]
    for phase in PHASES:
        # the moments this rerun will pass: training restarts whole (so do its cache writes),
        # cells and their store writes go on from the last cell stored, all tables are written
        remaining = N_CELLS - (_stored_cells(out) if (out / "store.sqlite").exists() else 0)
        limit = {"cell": counts["cell"] // N_CELLS * remaining, "store": remaining}
        k = int(rng.integers(1, limit.get(phase, counts[phase]) + 1))
        code, _, stderr = _nicebench(out, cache, trace, kill_at=f"{phase}:{k}")
        assert code == -signal.SIGKILL, f"{phase}:{k} was not reached (exit {code}): {stderr}"
        pid, last = _trace(trace)[-1]
        assert last == phase and sum(p == pid and ph == phase for p, ph in _trace(trace)) == k
    stored = _stored_cells(out)
    assert 0 < stored <= N_CELLS  # killed while writing the tables: the cells are all in place
    code, stdout, stderr = _nicebench(out, cache, trace)
    assert code == 0, stderr
    assert f"{N_CELLS - stored} cells computed, {stored} already in the store, 0 failed" in stdout
    _assert_same_tables(out, reference["tables"])
    assert _classifier_sha(cache) == reference["sha"]  # retrained to the same weights
    with sqlite3.connect(out / "store.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM cells").fetchone()[0] == N_CELLS
    # nothing the kills interrupted stays behind: scratch tables, temporary cache files
    assert not list(out.glob(".tables-*")) and not list(cache.rglob("*.tmp"))


@pytest.mark.slow
def test_two_runs_started_together_on_one_directory_train_once_and_agree(reference, tmp_path):
    """Two `nicebench run`s of one config on one run directory and one empty cache, started
    together (with the figures and report): the second waits for the first, naming its pid, then
    finds every cell stored. Both exit 0, the classifier is trained once, the tables equal an
    uninterrupted run's. So that both surely overlap, the test holds the run directory while they
    start and lets go once both wait for it."""
    out, cache, trace = tmp_path / "out", tmp_path / "cache", tmp_path / "trace"
    out.mkdir()
    errs = [tmp_path / f"err{i}" for i in range(2)]
    with open(out / "run.lock", "a+") as held, open(errs[0], "w") as e0, open(errs[1], "w") as e1:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(str(os.getpid()))
        held.flush()
        procs = [_start(out, cache, trace, report=True, stderr=e) for e in (e0, e1)]
        waiting = f"waiting for run pid {os.getpid()}"
        deadline = time.monotonic() + 180
        while not all(waiting in err.read_text() for err in errs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                for p in procs:
                    p.kill()
                pytest.fail(f"the runs did not both wait: {[e.read_text() for e in errs]}")
            time.sleep(0.2)
    outs = [p.communicate(timeout=300)[0] for p in procs]  # the test's hold is let go
    stderr = [err.read_text() for err in errs]
    assert [p.returncode for p in procs] == [0, 0], stderr
    first, second = sorted(range(2), key=lambda i: f"{N_CELLS} cells computed" not in outs[i])
    assert f"{N_CELLS} cells computed, 0 already in the store, 0 failed" in outs[first], outs
    assert f"0 cells computed, {N_CELLS} already in the store, 0 failed" in outs[second], outs
    assert f"waiting for run pid {procs[first].pid}" in stderr[second], stderr[second]
    # one training: only the first run passed training steps, as many as the uninterrupted run
    trained = Counter(pid for pid, phase in _trace(trace) if phase == "train")
    assert trained == {procs[first].pid: reference["counts"]["train"]}, trained
    assert len(list((cache / "classifiers").glob("*.pt"))) == 1
    assert _classifier_sha(cache) == reference["sha"]
    _assert_same_tables(out, reference["tables"])
    assert (out / "report" / "index.html").is_file()
    # both runs printed the same best methods and scores (the tables each of them wrote)
    best = [o[o.index("best method per metric") : o.index("run directory")] for o in outs]
    assert best[0] == best[1], best


# -- fast checks of the pieces -------------------------------------------------------------------
def test_checkpoints_trace_and_kill_at_the_named_count(tmp_path, monkeypatch):
    from nicebench import faults

    kills = []
    monkeypatch.setattr(faults, "_counts", Counter())
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv("NICEBENCH_FAULT_TRACE", str(tmp_path / "trace"))
    monkeypatch.setenv("NICEBENCH_KILL_AT", "cell:2")
    for phase in ("train", "cell", "store", "cell", "cell"):
        faults.checkpoint(phase)
    assert kills == [(os.getpid(), signal.SIGKILL)]  # at the second cell checkpoint only
    assert _trace(tmp_path / "trace") == [
        (os.getpid(), p) for p in ("train", "cell", "store", "cell", "cell")
    ]
    monkeypatch.delenv("NICEBENCH_FAULT_TRACE")
    monkeypatch.delenv("NICEBENCH_KILL_AT")
    faults.checkpoint("cell")  # neither variable: nothing counted
    assert faults._counts["cell"] == 3


def test_a_second_claim_waits_for_the_live_run_then_goes_on(tmp_path, capsys):
    import threading

    from nicebench.store import RunLock, RunStore, StoreError

    first = RunLock(tmp_path).acquire()  # what a live run's RunStore.claim() holds
    with pytest.raises(StoreError, match=rf"live run \(pid {os.getpid()}\) after waiting 0.3 s"):
        RunStore(tmp_path).claim(wait=0.3)
    assert f"waiting for run pid {os.getpid()}" in capsys.readouterr().err
    threading.Timer(0.8, first.release).start()  # the live run ends
    t0 = time.monotonic()
    second = RunStore(tmp_path).claim(wait=60)
    assert 0.5 < time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert f"waiting for run pid {os.getpid()}" in err and "is free; going on" in err
    assert (tmp_path / "run.lock").read_text() == str(os.getpid())
    second.close()


def test_lock_timeout_in_config_and_on_the_command_line(tmp_path):
    from nicebench.cli import build_parser
    from nicebench.config import parse_config

    base = 'datasets = ["scenes"]\nmethods = ["center"]\n'
    assert parse_config(base).lock_timeout == 86400.0
    assert parse_config(base + "lock_timeout = 0\n").lock_timeout == 0.0
    with pytest.raises(ValueError, match="line 3: lock_timeout must be a number of seconds"):
        parse_config(base + 'lock_timeout = "soon"\n')
    args = build_parser().parse_args(["run", "--lock-timeout", "5", "--cell-timeout", "2.5"])
    assert (args.lock_timeout, args.cell_timeout) == (5.0, 2.5)
