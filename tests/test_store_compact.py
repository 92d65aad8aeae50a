"""Compacting a run store (``RunStore.compact``, ``nicebench compact``): the cells of earlier runs
go, the latest run's tables and kept arrays stay byte for byte, and the file shrinks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nicebench.cli import main
from nicebench.report.tables import write_tables
from nicebench.store import CellResult, RunStore, StoreError


def _cell(key: str, dataset: str, method: str, seed: int) -> CellResult:
    rng = np.random.default_rng(seed)
    res = CellResult(
        key=key,
        dataset=dataset,
        method=method,
        method_name=method,
        shard=0,
        n_images=8,
        seconds=1.0,
        explain_ms_per_image=2.0,
    )
    for i in range(8):
        res.image_rows.append((i, i % 2, i % 2, "correct", 1.0))
        res.image_rows.append((i, i % 2, i % 2, "deletion_auc", float(rng.uniform(0, 0.5))))
        res.artifacts.append((i, "curve/deletion", rng.random(65).astype(np.float32)))
        res.artifacts.append((i, "map", rng.standard_normal((32, 32)).astype(np.float16)))
        res.samples.append((i, "image", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
    return res


def _two_runs(run_dir: Path) -> RunStore:
    """A first run with cells ``old`` (on a dataset only it used) and ``a``; a second with ``a``
    (resumed) and ``b``."""
    store = RunStore(run_dir)
    store.record_run({"methods": ["old", "a"]}, {"code": "1"}, ["old-key", "a-key"])
    store.write(_cell("old-key", "retired", "old", seed=1))
    store.write(_cell("a-key", "scenes", "a", seed=2))
    store.record_run({"methods": ["a", "b"]}, {"code": "1"}, ["a-key", "b-key"])
    store.write(_cell("b-key", "scenes", "b", seed=3))
    return store


def _snapshot(store: RunStore, keys: set[str]) -> dict[str, list]:
    return {
        name: store.conn.execute(sql, sorted(keys)).fetchall()
        for name, sql in {
            "image_values": "SELECT * FROM image_values WHERE cell_key IN (?, ?) ORDER BY 1, 2, 5",
            "artifacts": "SELECT * FROM artifacts WHERE cell_key IN (?, ?) ORDER BY 1, 2, 3",
        }.items()
    }


def test_compact_keeps_the_latest_run_only(tmp_path):
    store = _two_runs(tmp_path / "run")
    latest = store.latest_keys()
    assert latest == {"a-key", "b-key"}
    for name in ("before", "after"):
        (tmp_path / name).mkdir()
    write_tables(store, latest, tmp_path / "before")
    kept = _snapshot(store, latest)
    size = store.path.stat().st_size + Path(f"{store.path}-wal").stat().st_size

    assert store.compact() == 1
    assert set(store.cells().key) == latest
    for table in ("image_values", "artifacts"):
        left = {k for (k,) in store.conn.execute(f"SELECT DISTINCT cell_key FROM {table}")}
        assert left == latest, table
    assert set(store.samples().dataset) == {"scenes"}  # the retired dataset's images went
    assert _snapshot(store, latest) == kept
    assert store.latest_keys() == latest
    assert len(store.conn.execute("SELECT * FROM runs").fetchall()) == 2  # both runs' records
    write_tables(store, latest, tmp_path / "after")
    store.close()

    before = {p.name: p.read_bytes() for p in (tmp_path / "before").iterdir()}
    after = {p.name: p.read_bytes() for p in (tmp_path / "after").iterdir()}
    assert "leaderboard.csv" in before and before == after  # the latest run's tables unchanged
    wal = Path(f"{store.path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # store.sqlite alone holds the run
    assert store.path.stat().st_size < size


def test_compact_command_and_a_store_without_run_keys(tmp_path, capsys):
    _two_runs(tmp_path / "run").close()
    assert main(["compact", str(tmp_path / "run")]) == 0
    assert "dropped 1 of earlier runs" in capsys.readouterr().out
    assert main(["compact", str(tmp_path / "run")]) == 0  # nothing more to drop
    assert "dropped 0" in capsys.readouterr().out

    old = RunStore(tmp_path / "old")
    old.record_run({"methods": ["a"]}, {"code": "1"})  # a store from before runs named their cells
    with pytest.raises(StoreError, match="recorded no cell keys"):
        old.compact()
    old.close()
    assert main(["compact", str(tmp_path / "nowhere")]) == 2
    assert "holds no run store" in capsys.readouterr().err
