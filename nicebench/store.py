"""The run store: one SQLite file per run directory; each finished cell lands in one transaction."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .faults import checkpoint

__all__ = [
    "CELL_PHASES",
    "CellResult",
    "RUN_PHASES",
    "RunLock",
    "RunStore",
    "StoreError",
    "describe_write_error",
    "pack",
    "peek_cells",
    "unpack",
    "table_blob",
    "table_json",
]

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
CREATE TABLE IF NOT EXISTS runs (
    started_at TEXT, config TEXT, versions TEXT, cells TEXT, catalogue TEXT, timings TEXT
);
CREATE TABLE IF NOT EXISTS timings (
    cell_key TEXT, phase TEXT, name TEXT, seconds REAL, PRIMARY KEY (cell_key, phase, name)
);
CREATE TABLE IF NOT EXISTS artifacts (
    cell_key TEXT, image_index INTEGER, name TEXT, data BLOB,
    PRIMARY KEY (cell_key, image_index, name)
);
CREATE TABLE IF NOT EXISTS samples (
    dataset TEXT, image_index INTEGER, name TEXT, data BLOB,
    PRIMARY KEY (dataset, image_index, name)
);
"""


def pack(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (dtype and shape included; never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def table_blob(rows: list[dict[str, Any]]) -> bytes:
    """A cell's table rows as zlib-compressed JSON (the compression track's rows are large and
    repetitive: about a tenth of the text)."""
    return zlib.compress(json.dumps(rows, default=float).encode(), 6)


def table_json(data: bytes | str) -> str:
    """The JSON text of a stored table (:func:`table_blob`, or plain text in older stores)."""
    return zlib.decompress(data).decode() if isinstance(data, bytes) else data


def unpack(data: bytes) -> np.ndarray:
    """The array :func:`pack` wrote (loaded without pickle)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


# The parts of a cell's wall time (:attr:`CellResult.timings`): loading or training the
# classifier and fitting the method, explain, the metrics, the validity audit's side passes, the rest
CELL_PHASES = ("models", "explain", "metrics", "audit", "other")
# A run's phases (:meth:`RunStore.record_timings`): its cells' parts summed, then what it draws
RUN_PHASES = (*CELL_PHASES, "tables", "figures", "report")


@dataclass
class CellResult:
    """What one cell computed: per-image values, per-cell scalars and small tables.

    ``artifacts``: per-image arrays kept for figures and reports (``(image_index, name, array)``:
    deletion/insertion curves, the sample images' maps and gate masks, coded examples);
    ``samples``: the dataset's own arrays of its sample images (``image``, ``mask``, ``label``),
    stored once per dataset; ``timings``: wall seconds of the cell's parts, ``(phase, name)`` →
    seconds (:data:`CELL_PHASES`; ``("metrics", metric)`` per metric, ``name`` "" otherwise)."""

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
    artifacts: list[tuple[int, str, np.ndarray]] = field(default_factory=list)
    samples: list[tuple[int, str, np.ndarray]] = field(default_factory=list)
    timings: dict[tuple[str, str], float] = field(default_factory=dict)

    def phase_seconds(self) -> dict[str, float]:
        """The cell's seconds per phase of :data:`CELL_PHASES` (its metrics summed); ``other``:
        the rest of :attr:`seconds` (the dataset, the classifier's predictions, the samples)."""
        out = dict.fromkeys(CELL_PHASES[:-1], 0.0)
        for (phase, _), sec in self.timings.items():
            out[phase] = out.get(phase, 0.0) + sec
        out["other"] = max(0.0, self.seconds - sum(out.values()))
        return out


class StoreError(ValueError):
    """A run store that can't be used: corrupt, held by another live run, or not writable (a
    folder without write permission, a full disk)."""


def _is_disk_full(exc: BaseException) -> bool:
    return (
        getattr(exc, "errno", None) == errno.ENOSPC
        or "disk is full" in str(exc)
        or getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13)
    )


def describe_write_error(path: str | Path, exc: BaseException, tables: bool = False) -> str:
    """What failed writing ``path`` and what to do: with a full disk, how much is free there and
    what can be freed; otherwise the folder to make writable. Written data is never half: the
    store's transaction is rolled back, a table is replaced whole or not at all."""
    path = Path(path)
    kept = (
        "the previous tables are unchanged; the cells are in the store: rerun (or "
        "`nicebench run` the same config) to write the tables"
        if tables
        else "the cells stored before it are kept and a rerun resumes from them"
    )
    if _is_disk_full(exc):
        probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(probe).free / 2**20
        return (
            f"no space left on the disk writing {path} ({free:.0f} MiB free there): free "
            "space on that disk (old run directories, e.g. runs/*, or the model cache, "
            "$NICEBENCH_CACHE) or pass --out on another disk; " + kept
        )
    return (
        f"can't write {path} ({type(exc).__name__}: {exc}): pass --out a folder you can "
        "write, or fix its permissions; " + kept
    )


def peek_cells(run_dir: str | Path) -> pd.DataFrame | None:
    """The cells of ``run_dir``'s store, read without writing to it (no schema, no migration, no
    lock; a live run may be writing): ``key, dataset, model, method, kind, status, n_images, seconds``
    and ``models_seconds`` (the cell's time loading or training its models, 0 where the store
    kept none). None when the directory holds no store, or one without cells."""
    path = Path(run_dir) / "store.sqlite"
    if not path.is_file():
        return None
    # read-write mode, never written: a read-only connection to a write-ahead-log database leaves
    # its -wal and -shm files behind, the last ordinary connection removes them on closing
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=60)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(cells)")}
        if not columns:  # a store created but never written
            return None
        model = "model" if "model" in columns else "'default' AS model"
        kind = "kind" if "kind" in columns else "track AS kind"
        df = pd.read_sql_query(
            f"SELECT key, dataset, {model}, method, {kind}, status, n_images, seconds FROM cells",
            conn,
        )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        models = (
            dict(conn.execute("SELECT cell_key, seconds FROM timings WHERE phase = 'models'"))
            if "timings" in tables
            else {}
        )
    finally:
        conn.close()
    df["models_seconds"] = df.key.map(models).fillna(0.0)
    return df


class RunLock:
    """The lock of a run directory: an ``flock`` on ``<run dir>/run.lock``, which holds the pid
    of the process that has it; the OS releases it when that process ends, killed or not.

    :meth:`acquire` waits up to ``wait`` seconds for a live run that holds it, saying so on
    stderr with that run's pid, polling every ``poll`` seconds; a :class:`StoreError` naming the
    pid when it is still held then (``wait=0``: at once)."""

    def __init__(self, run_dir: str | Path, wait: float = 0.0, poll: float = 0.5):
        self.path = Path(run_dir) / "run.lock"
        self.wait, self.poll = wait, poll
        self._handle: Any = None

    def acquire(self) -> RunLock:
        import fcntl
        import sys

        try:
            handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise StoreError(describe_write_error(self.path, exc)) from None
        deadline, told = time.monotonic() + self.wait, None
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                pid = handle.read().strip()
            if time.monotonic() >= deadline:
                handle.close()
                waited = f" after waiting {self.wait:g} s" if self.wait else ""
                raise StoreError(
                    f"run directory {self.path.parent} is in use by a live run (pid "
                    f"{pid or 'unknown'}){waited}; wait for it to finish (--lock-timeout SECONDS "
                    "waits for it), or pass another --out"
                )
            if pid and pid != told:  # each run waited for is named once
                print(
                    f"nicebench: waiting for run pid {pid}, which holds run directory "
                    f"{self.path.parent} (up to {self.wait:g} s; --lock-timeout sets it)",
                    file=sys.stderr,
                    flush=True,
                )
                told = pid
            time.sleep(max(0.0, min(self.poll, deadline - time.monotonic())))
        if told:
            print(
                f"nicebench: run directory {self.path.parent} is free; going on",
                file=sys.stderr,
                flush=True,
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # releases the flock
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunStore:
    """``<run dir>/store.sqlite``; the driver alone writes it (see :meth:`claim`)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path = self.dir / "store.sqlite"
        self._lock: Any = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60)  # waits up to 60 s for a writer
        except (OSError, sqlite3.OperationalError) as exc:
            raise StoreError(
                f"run directory {self.dir} is not usable: " + describe_write_error(self.path, exc)
            ) from None
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
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:  # a read-only folder or file, a full disk
            self.conn.close()
            raise StoreError(
                f"run store {self.path} can't be written: " + describe_write_error(self.path, exc)
            ) from None
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(cells)")}
        if "kind" not in columns and "track" in columns:  # written before cells had a kind
            with self.conn:
                self.conn.execute("ALTER TABLE cells RENAME COLUMN track TO kind")
        if "model" not in columns:  # a store written before models were an axis of a run
            with self.conn:
                self.conn.execute("ALTER TABLE cells ADD COLUMN model TEXT DEFAULT 'default'")
        run_columns = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)")}
        if "cells" not in run_columns:
            with self.conn:  # a store written before runs recorded their cells
                self.conn.execute("ALTER TABLE runs ADD COLUMN cells TEXT")
        if "catalogue" not in run_columns:
            with self.conn:  # a store written before runs recorded their metric catalogue
                self.conn.execute("ALTER TABLE runs ADD COLUMN catalogue TEXT")
        if "timings" not in run_columns:
            with self.conn:  # a store written before runs recorded their phases' times
                self.conn.execute("ALTER TABLE runs ADD COLUMN timings TEXT")

    def claim(self, wait: float = 0.0) -> RunStore:
        """Make this process the run directory's only writer until :meth:`close` (see
        :class:`RunLock`): when a live run holds it, wait up to ``wait`` seconds for that run to
        end, then go on (the cells it finished are in the store and are not recomputed)."""
        self._lock = RunLock(self.dir, wait).acquire()
        return self

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def done_keys(self) -> set[str]:
        """Keys of the cells that finished successfully (a rerun skips them)."""
        return {r[0] for r in self.conn.execute("SELECT key FROM cells WHERE status = 'ok'")}

    def record_run(
        self,
        config: dict[str, Any],
        versions: dict[str, str],
        keys: list[str] | None = None,
        catalogue: dict[str, Any] | None = None,
    ) -> None:
        """Record a run's config, versions, the keys of its cells (its tables, figures and
        report show those cells, see :meth:`latest_keys`) and its ``catalogue`` (what the report
        reads of its metrics and methods: :class:`nicebench.report.columns.Catalogue`)."""
        with self._writing(), self.conn:
            self.conn.execute(
                "INSERT INTO runs (started_at, config, versions, cells, catalogue) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    time.strftime("%Y-%m-%dT%H:%M:%S"),
                    json.dumps(config),
                    json.dumps(versions),
                    json.dumps(keys) if keys is not None else None,
                    json.dumps(catalogue) if catalogue is not None else None,
                ),
            )

    def record_timings(self, seconds: dict[str, float], **counts: int) -> None:
        """Add wall ``seconds`` per phase (:data:`RUN_PHASES`) to the latest run's record, merged
        with what it holds (the runner records its cells' phases and the tables, the command line
        the figures and the report); ``counts``: e.g. ``computed`` and ``stored`` cells."""
        row = self.conn.execute("SELECT rowid, timings FROM runs ORDER BY rowid DESC LIMIT 1")
        row = row.fetchone()
        if row is None:
            return
        held = json.loads(row[1]) if row[1] else {}
        held.setdefault("seconds", {}).update({k: round(float(v), 4) for k, v in seconds.items()})
        held.setdefault("cells", {}).update(counts)
        with self._writing(), self.conn:
            self.conn.execute(
                "UPDATE runs SET timings = ? WHERE rowid = ?", (json.dumps(held), row[0])
            )

    def latest_keys(self) -> set[str] | None:
        """The cell keys of the latest run (None: no run, or one recorded without them)."""
        row = self.conn.execute("SELECT cells FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        return set(json.loads(row[0])) if row and row[0] else None

    def write(self, r: CellResult) -> None:
        """Write one cell and everything it computed in a single transaction (replacing any
        earlier attempt of the same cell). A write that fails (a full disk) is rolled back whole
        and raised as a :class:`StoreError` that says what to free."""
        with self._writing(), self.conn:
            for table in ("image_values", "cell_values", "tables", "artifacts", "timings"):
                self.conn.execute(f"DELETE FROM {table} WHERE cell_key = ?", (r.key,))
            self.conn.execute(
                "INSERT OR REPLACE INTO cells (key, dataset, method, method_name, kind, shard, "
                "status, error, n_images, explain_ms_per_image, peak_mem_mb, seconds, finished_at, "
                "code_version, spec, model) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r.key,
                    r.dataset,
                    r.method,
                    r.method_name,
                    r.kind,
                    r.shard,
                    r.status,
                    r.error,
                    r.n_images,
                    r.explain_ms_per_image,
                    r.peak_mem_mb,
                    r.seconds,
                    time.strftime("%Y-%m-%dT%H:%M:%S"),
                    r.code_version,
                    json.dumps(r.spec),
                    r.model,
                ),
            )
            checkpoint("store")  # a kill here must leave no part of the cell
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
                [(r.key, k, table_blob(v)) for k, v in r.tables.items()],
            )
            self.conn.executemany(
                "INSERT INTO artifacts VALUES (?,?,?,?)",
                [(r.key, int(i), name, pack(a)) for i, name, a in r.artifacts],
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO samples VALUES (?,?,?,?)",
                [(r.dataset, int(i), name, pack(a)) for i, name, a in r.samples],
            )
            self.conn.executemany(
                "INSERT INTO timings VALUES (?,?,?,?)",
                [(r.key, phase, name, float(s)) for (phase, name), s in r.timings.items()],
            )

    def compact(self) -> int:
        """Keep only the latest run's cells (:meth:`latest_keys`) and what they computed: the
        cells of earlier runs, their values, tables and kept arrays, and the sample images of
        datasets no kept cell has, are deleted, then the file is rebuilt (``VACUUM``) and its
        write-ahead log folded in, so ``store.sqlite`` alone holds the run. The runs' records stay
        (a few kB: when each ran, with which config). Returns the number of cells deleted.

        For a run directory that is kept (a committed reference run): its tables, figures and
        report show the latest run only, so they are unchanged. Raises :class:`StoreError` when
        no run recorded its cells (a store older than that record): nothing says which to keep."""
        keys = self.latest_keys()
        if keys is None:
            raise StoreError(
                f"run store {self.path}: its latest run recorded no cell keys (a "
                "store written before runs did), so nothing says which cells to "
                "keep; rerun its config to record them, then compact"
            )
        with self._writing():
            with self.conn:
                self.conn.execute("CREATE TEMP TABLE keep (key TEXT PRIMARY KEY)")
                self.conn.executemany("INSERT INTO keep VALUES (?)", [(k,) for k in keys])
                for table in ("image_values", "cell_values", "tables", "artifacts", "timings"):
                    self.conn.execute(
                        f"DELETE FROM {table} WHERE cell_key NOT IN (SELECT key FROM keep)"
                    )
                dropped = self.conn.execute(
                    "DELETE FROM cells WHERE key NOT IN (SELECT key FROM keep)"
                ).rowcount
                self.conn.execute(
                    "DELETE FROM samples WHERE dataset NOT IN (SELECT DISTINCT dataset FROM cells)"
                )
                self.conn.execute("DROP TABLE keep")
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return dropped

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            raise StoreError(describe_write_error(self.path, exc)) from None

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

    def timings(self, keys: set[str] | None = None) -> pd.DataFrame:
        """Wall seconds of the cells' parts (:attr:`CellResult.timings`), failed cells too: one
        row per ``dataset, model, method, kind, shard, status, cell_key, phase, name, seconds``
        (empty for a store written before cells kept them)."""
        df = pd.read_sql_query(
            "SELECT c.dataset, c.model, c.method, c.kind, c.shard, c.status, t.* FROM timings t "
            "JOIN cells c ON c.key = t.cell_key",
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
            part = pd.DataFrame(json.loads(table_json(data)))
            part.insert(0, "kind", kind)
            part.insert(0, "method_name", method_name)
            part.insert(0, "method", method)
            part.insert(0, "model", model)
            part.insert(0, "dataset", dataset)
            frames.append(part)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def artifacts(self, name: str, keys: set[str] | None = None) -> pd.DataFrame:
        """The kept arrays called ``name`` (a SQL LIKE pattern, e.g. ``"curve/%"``) of the
        finished cells: one row per (cell, image) with ``dataset, model, method, method_name,
        kind, cell_key, image_index, name, array``."""
        rows = self.conn.execute(
            "SELECT c.dataset, c.model, c.method, c.method_name, c.kind, a.cell_key, "
            "a.image_index, a.name, a.data FROM artifacts a JOIN cells c ON c.key = a.cell_key "
            "WHERE c.status = 'ok' AND a.name LIKE ? ORDER BY c.rowid, a.image_index",
            (name,),
        ).fetchall()
        cols = [
            "dataset",
            "model",
            "method",
            "method_name",
            "kind",
            "cell_key",
            "image_index",
            "name",
            "array",
        ]
        records = [(*r[:-1], unpack(r[-1])) for r in rows if keys is None or r[5] in keys]
        return pd.DataFrame(records, columns=cols)

    def samples(self, dataset: str | None = None) -> pd.DataFrame:
        """The sample images' own arrays (``image`` uint8 HWC, ``mask`` uint8 HW where the
        dataset has masks, ``label``): ``dataset, image_index, name, array``."""
        sql = "SELECT dataset, image_index, name, data FROM samples"
        args: tuple[str, ...] = ()
        if dataset is not None:
            sql, args = sql + " WHERE dataset = ?", (dataset,)
        rows = self.conn.execute(sql + " ORDER BY dataset, image_index", args).fetchall()
        return pd.DataFrame(
            [(*r[:-1], unpack(r[-1])) for r in rows],
            columns=["dataset", "image_index", "name", "array"],
        )

    def latest_run(self) -> dict[str, Any]:
        """The latest run's ``started_at``, ``config``, ``versions``, ``catalogue`` and ``timings``
        (:meth:`record_timings`; None for a run recorded before runs kept them); ``{}`` when the
        store has no run."""
        row = self.conn.execute(
            "SELECT started_at, config, versions, catalogue, timings FROM runs "
            "ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return {}
        return {
            "started_at": row[0],
            "config": json.loads(row[1]),
            "versions": json.loads(row[2]),
            "catalogue": json.loads(row[3]) if row[3] else None,
            "timings": json.loads(row[4]) if row[4] else None,
        }
