"""The run store: one SQLite file per run directory; each finished cell lands in one transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["CellResult", "RunStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, dataset TEXT, method TEXT, method_name TEXT, kind TEXT,
    shard INTEGER, status TEXT, error TEXT, n_images INTEGER, explain_ms_per_image REAL,
    peak_mem_mb REAL, seconds REAL, finished_at TEXT, code_version TEXT, spec TEXT,
    model TEXT DEFAULT 'default'
);
CREATE TABLE IF NOT EXISTS image_values (
    cell_key TEXT, image_index INTEGER, label INTEGER, pred INTEGER, metric TEXT, value REAL,
    PRIMARY KEY (cell_key, image_index, metric)
);
CREATE TABLE IF NOT EXISTS cell_values (
    cell_key TEXT, name TEXT, value REAL, PRIMARY KEY (cell_key, name)
);
CREATE TABLE IF NOT EXISTS tables (
    cell_key TEXT, name TEXT, data TEXT, PRIMARY KEY (cell_key, name)
);
CREATE TABLE IF NOT EXISTS runs (started_at TEXT, config TEXT, versions TEXT);
"""


@dataclass
class CellResult:
    """What one cell computed: per-image values, per-cell scalars and small tables."""

    key: str
    dataset: str
    method: str
    method_name: str
    shard: int
    kind: str = "method"  # or "codec"
    status: str = "ok"
    error: str = ""
    n_images: int = 0
    explain_ms_per_image: float = float("nan")
    peak_mem_mb: float = float("nan")
    seconds: float = 0.0
    code_version: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    model: str = "default"  # the model spec's label
    image_rows: list[tuple[int, int, int, str, float]] = field(default_factory=list)
    cell_values: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class StoreError(ValueError):
    """A run store that can't be used: corrupt, or held by another live run."""


class RunStore:
    """``<run dir>/store.sqlite``; the driver alone writes it (see :meth:`claim`)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "store.sqlite"
        self._lock: Any = None
        self.conn = sqlite3.connect(self.path, timeout=60)  # waits up to 60 s for a writer
        try:
            bad = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            bad = [str(exc)]
        if bad != ["ok"]:
            self.conn.close()
            raise StoreError(
                f"run store {self.path} is damaged ({'; '.join(bad[:3])}): move it aside "
                "(the tables beside it stay readable) and rerun to recompute its cells"
            )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(cells)")}
        if "kind" not in columns and "track" in columns:  # written before cells had a kind
            with self.conn:
                self.conn.execute("ALTER TABLE cells RENAME COLUMN track TO kind")
        if "model" not in columns:  # a store written before models were an axis of a run
            with self.conn:
                self.conn.execute("ALTER TABLE cells ADD COLUMN model TEXT DEFAULT 'default'")

    def claim(self) -> RunStore:
        """Make this process the run directory's only writer until :meth:`close`; a
        :class:`StoreError` naming the other run's pid when a live run already holds it."""
        import fcntl

        handle = open(self.dir / "run.lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(
                f"run directory {self.dir} is in use by a live run (pid {pid}); wait for it to "
                "finish, or pass another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle
        return self

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def done_keys(self) -> set[str]:
        """Keys of the cells that finished successfully (a rerun skips them)."""
        return {r[0] for r in self.conn.execute("SELECT key FROM cells WHERE status = 'ok'")}

    def record_run(self, config: dict[str, Any], versions: dict[str, str]) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?)",
                (time.strftime("%Y-%m-%dT%H:%M:%S"), json.dumps(config), json.dumps(versions)),
            )

    def write(self, r: CellResult) -> None:
        """Write one cell and everything it computed in a single transaction (replacing any
        earlier attempt of the same cell)."""
        with self.conn:
            for table in ("image_values", "cell_values", "tables"):
                self.conn.execute(f"DELETE FROM {table} WHERE cell_key = ?", (r.key,))
            self.conn.execute(
                "INSERT OR REPLACE INTO cells (key, dataset, method, method_name, kind, shard, "
                "status, error, n_images, explain_ms_per_image, peak_mem_mb, seconds, finished_at, "
                "code_version, spec, model) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (r.key, r.dataset, r.method, r.method_name, r.kind, r.shard, r.status, r.error,
                 r.n_images, r.explain_ms_per_image, r.peak_mem_mb, r.seconds,
                 time.strftime("%Y-%m-%dT%H:%M:%S"), r.code_version, json.dumps(r.spec), r.model),
            )  # fmt: skip
            self.conn.executemany(
                "INSERT INTO image_values VALUES (?,?,?,?,?,?)",
                [(r.key, *row) for row in r.image_rows],
            )
            self.conn.executemany(
                "INSERT INTO cell_values VALUES (?,?,?)",
                [(r.key, k, float(v)) for k, v in r.cell_values.items()],
            )
            self.conn.executemany(
                "INSERT INTO tables VALUES (?,?,?)",
                [(r.key, k, json.dumps(v, default=float)) for k, v in r.tables.items()],
            )

    # -- reading ---------------------------------------------------------------------------------
    def cells(self, keys: set[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM cells", self.conn)
        return df[df.key.isin(keys)] if keys is not None else df

    def image_values(self, keys: set[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query(
            "SELECT c.dataset, c.model, c.method, c.kind, v.* FROM image_values v "
            "JOIN cells c ON c.key = v.cell_key WHERE c.status = 'ok'",
            self.conn,
        )
        return df[df.cell_key.isin(keys)] if keys is not None else df

    def cell_values(self, keys: set[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query(
            "SELECT c.dataset, c.model, c.method, c.kind, v.* FROM cell_values v "
            "JOIN cells c ON c.key = v.cell_key WHERE c.status = 'ok'",
            self.conn,
        )
        return df[df.cell_key.isin(keys)] if keys is not None else df

    def tables(self, name: str, keys: set[str] | None = None) -> pd.DataFrame:
        rows = self.conn.execute(
            "SELECT c.dataset, c.model, c.method, c.method_name, c.kind, t.cell_key, t.data FROM tables t "
            "JOIN cells c ON c.key = t.cell_key WHERE c.status = 'ok' AND t.name = ?",
            (name,),
        ).fetchall()
        frames = []
        for dataset, model, method, method_name, kind, key, data in rows:
            if keys is not None and key not in keys:
                continue
            part = pd.DataFrame(json.loads(data))
            part.insert(0, "kind", kind)
            part.insert(0, "method_name", method_name)
            part.insert(0, "method", method)
            part.insert(0, "model", model)
            part.insert(0, "dataset", dataset)
            frames.append(part)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def latest_run(self) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        if row is None:
            return {}
        return {"started_at": row[0], "config": json.loads(row[1]), "versions": json.loads(row[2])}
