"""``nicebench verify RUN_DIR``: the reproducibility audit of a run directory.

1. The store's integrity (SQLite ``integrity_check``), read-only: nothing in the run directory is
   written.
2. Every cell's key against the spec stored with it: the key is the hash of the cell's config and
   code version (:meth:`nicebench.runner.Cell.key_for`), so a cell whose spec does not give its
   key was altered or written by something else; a cell whose code version is not the installed
   code's is reported as "computed by other code" (a failed check: its values are not the
   installed code's).
3. A seeded random sample of the finished cells recomputed on the CPU with the installed code,
   each stored value compared bit for bit: per-image values, per-cell values, tables and the
   arrays kept for figures (timings are not compared).

The audit covers the cells of the run directory's latest run (the cells its tables, figures and
report show); cells that only earlier runs in the same directory computed are history, counted
and named as such but not audited (an older store that recorded no run's cells: every cell).

It also checks every weight file shipped with the package against its SHA-256 in the package's
``weights/MANIFEST.json`` (a damaged one fails the audit: cells computed with it could not be
trusted).

Cells are rebuilt from their stored spec: its ``cell`` entry (written since this module exists)
holds the exact plugin specs, the reference codec and the batch size; for older stores the spec's
strings are parsed and the reference codec is the run config's codec whose key matches.
"""

from __future__ import annotations

import ast
import json
import math
import random
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PluginSpec, parse_value
from .models.shipped import check_shipped
from .runner import Cell, code_version, run_cell
from .store import pack, table_json

__all__ = ["VerifyReport", "verify_run", "cell_from_spec", "spec_from_str"]


@dataclass
class VerifyReport:
    """What :func:`verify_run` found; :attr:`passed` when every check passed."""

    run_dir: Path
    integrity: list[str] = field(default_factory=list)  # SQLite's messages; [] when ok
    n_cells: int = 0
    n_finished: int = 0
    code: str = ""
    other_code: list[tuple[str, str, str]] = field(default_factory=list)  # key, cell, its code
    bad_keys: list[tuple[str, str, str]] = field(default_factory=list)  # key, cell, why
    history: int = 0  # cells only earlier runs computed (not audited)
    sampled: list[tuple[str, str, bool, str]] = field(default_factory=list)  # key, cell, same, note
    shipped: list[tuple[str, str]] = field(default_factory=list)  # shipped file, "" or the problem

    @property
    def passed(self) -> bool:
        return (
            not self.integrity
            and not self.other_code
            and not self.bad_keys
            and all(same for _, _, same, _ in self.sampled)
            and not any(problem for _, problem in self.shipped)
        )

    def lines(self) -> list[str]:
        out = [
            f"run store {self.run_dir / 'store.sqlite'}: "
            + (
                "integrity ok"
                if not self.integrity
                else "DAMAGED: " + "; ".join(self.integrity[:3])
            )
        ]
        if self.integrity:
            return out
        good = self.n_cells - len(self.bad_keys) - len(self.other_code)
        out.append(
            f"cell keys: {good} of {self.n_cells} cells match their spec and the installed "
            f"code ({self.code}); {self.n_finished} finished ok"
        )
        if self.history:
            out.append(
                f"  {self.history} cells of earlier runs in this directory, not in its "
                "latest run, are not audited"
            )
        for key, label, why in self.bad_keys:
            out.append(f"  KEY MISMATCH {label} [{key}]: {why}")
        for key, label, code in self.other_code:
            out.append(f"  computed by other code: {label} [{key}] (code {code})")
        for key, label, same, note in self.sampled:
            out.append(
                f"  {'identical' if same else 'DIFFERS  '} {label} [{key}]"
                + (f": {note}" if note else "")
            )
        bad = [problem for _, problem in self.shipped if problem]
        out.append(
            f"shipped weights: {len(self.shipped) - len(bad)} of {len(self.shipped)} files "
            "match their SHA-256 in nicebench/weights/MANIFEST.json"
        )
        out += [f"  DAMAGED {problem}" for problem in bad]
        out.append("verify: " + ("passed" if self.passed else "FAILED"))
        return out


# -- rebuilding a cell from its stored spec --------------------------------------------------------
def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]


def _value(text: str) -> Any:
    text = text.strip()
    if text[:1] in "([{":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return parse_value(text)


def spec_from_str(text: str) -> PluginSpec:
    """The :class:`PluginSpec` whose ``str()`` is ``text``; unlike :func:`parse_specs` it reads
    tuple values such as ``jpeg:qualities=(10, 30, 50)`` back."""
    tokens = _split_top(text)
    first = tokens[0]
    if "=" in first:
        name = first.split("=", 1)[0].rsplit(":", 1)[0]
        tokens = [first[len(name) + 1 :], *tokens[1:]]
    else:
        name, tokens = first, tokens[1:]
    params = {}
    for token in tokens:
        key, value = token.split("=", 1)
        params[key.strip()] = _value(value)
    return PluginSpec.make(name, params)


def _exact(entry: list | None) -> PluginSpec | None:
    return None if entry is None else PluginSpec.make(entry[0], {k: v for k, v in entry[1]})


def cell_from_spec(
    row: dict[str, Any], configs: Iterable[dict[str, Any]] = ()
) -> tuple[Any | None, str]:
    """The :class:`~nicebench.runner.Cell` a stored cell row (``key``, ``kind``, ``shard``,
    ``code_version``, ``spec``) was computed for, on the CPU, and "" — or None and why not.
    ``configs``: the run configs recorded in the store (older stores: the reference codec and the
    batch size come from them)."""
    spec = json.loads(row["spec"] or "{}")
    try:
        start, stop = spec["images"]
        common = dict(
            start=int(start),
            stop=int(stop),
            shard=int(row["shard"]),
            metrics=tuple(spec["metrics"]),
            settings=tuple(sorted(spec["settings"].items())),
            device="cpu",
            kind=row.get("kind") or row.get("track") or "method",
        )
        exact = spec.get("cell")
        if exact:
            candidates = [
                (_exact(exact["reference"]), tuple(_exact(c) for c in exact.get("codecs", [])))
            ]
            common.update(
                dataset=_exact(exact["dataset"]),
                method=_exact(exact["method"]),
                model=_exact(exact["model"]),
                batch_size=int(exact["batch_size"]),
            )
        else:
            configs = list(configs)
            candidates = [(None, ())]
            for cfg in configs:
                codecs = cfg.get("codecs") or [
                    str((cfg.get("settings") or {}).get("codec", "jpeg"))
                ]
                first = spec_from_str(codecs[0]) if codecs[0] else None
                for option in ((first, ()), (first, tuple(spec_from_str(c) for c in codecs if c))):
                    if option not in candidates:
                        candidates.append(option)
            batch = int(configs[-1].get("batch_size", 50)) if configs else 50
            common.update(
                dataset=spec_from_str(spec["dataset"]),
                method=spec_from_str(spec["method"]),
                model=spec_from_str(spec.get("model", "default")),
                batch_size=batch,
            )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        return None, f"its stored spec can't be read ({type(exc).__name__}: {exc})"
    for reference, codecs in candidates:
        cell = Cell(reference=reference, codecs=codecs, **common)
        if cell.key_for(row["code_version"]) == row["key"]:
            return cell, ""
    return None, "its spec and code version hash to another key (the spec or key was altered)"


# -- comparing a recomputed cell with the stored one -----------------------------------------------
def _missing(x: Any) -> bool:
    """NaN, or the NULL SQLite stores a NaN as."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def _same(a: Any, b: Any) -> bool:
    if _missing(a) and _missing(b):
        return True
    return a == b


def _compare(conn: sqlite3.Connection, key: str, res: Any) -> str:
    """ "" when every stored value of cell ``key`` equals the recomputed result ``res`` bit for
    bit; else the first difference."""
    if res.status != "ok":
        return f"the recomputation failed: {res.error}"
    stored = {
        (i, m): (lab, pred, v)
        for i, lab, pred, m, v in conn.execute(
            "SELECT image_index, label, pred, metric, value FROM image_values WHERE cell_key = ?",
            (key,),
        )
    }
    fresh = {(i, m): (lab, pred, float(v)) for i, lab, pred, m, v in res.image_rows}
    if stored.keys() != fresh.keys():
        missing = sorted(stored.keys() ^ fresh.keys())[:3]
        return f"per-image values differ in which (image, metric) exist: {missing}"
    for k in sorted(stored):
        if not all(_same(a, b) for a, b in zip(stored[k], fresh[k], strict=True)):
            return f"{k[1]} of image {k[0]}: stored {stored[k]}, recomputed {fresh[k]}"
    stored_cv = dict(conn.execute("SELECT name, value FROM cell_values WHERE cell_key = ?", (key,)))
    fresh_cv = {k: float(v) for k, v in res.cell_values.items()}
    if stored_cv.keys() != fresh_cv.keys() or not all(
        _same(stored_cv[k], fresh_cv[k]) for k in stored_cv
    ):
        return f"per-cell values differ: stored {stored_cv}, recomputed {fresh_cv}"
    stored_t = {
        name: table_json(data)
        for name, data in conn.execute("SELECT name, data FROM tables WHERE cell_key = ?", (key,))
    }
    fresh_t = {k: json.dumps(v, default=float) for k, v in res.tables.items()}
    for name in sorted(stored_t.keys() | fresh_t.keys()):
        if stored_t.get(name) != fresh_t.get(name):
            return f"table {name!r} differs"
    stored_a = {
        (i, n): d
        for i, n, d in conn.execute(
            "SELECT image_index, name, data FROM artifacts WHERE cell_key = ?", (key,)
        )
    }
    fresh_a = {(int(i), n): pack(a) for i, n, a in res.artifacts}
    for k in sorted(stored_a.keys() | fresh_a.keys()):
        if stored_a.get(k) != fresh_a.get(k):
            return f"kept array {k[1]!r} of image {k[0]} differs"
    return ""


def verify_run(run_dir: str | Path, sample: int = 5, seed: int = 0) -> VerifyReport:
    """Check ``run_dir``'s store (see the module docstring); recompute ``sample`` finished cells
    drawn with ``seed``. Opens the store read-only."""
    import torch

    run_dir = Path(run_dir)
    path = run_dir / "store.sqlite"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no run store (store.sqlite): pass the --out "
            "directory of a `nicebench run`"
        )
    report = VerifyReport(run_dir, code=code_version())
    report.shipped = [(entry.label, problem) for entry, problem in check_shipped()]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            report.integrity = problems
            return report
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM cells ORDER BY rowid")]
        runs = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY rowid")]
        latest = runs[-1].get("cells") if runs else None
        if latest:  # audit the latest run's cells; earlier runs' are history
            keep = set(json.loads(latest))
            report.history = sum(r["key"] not in keep for r in rows)
            rows = [r for r in rows if r["key"] in keep]
        conn.row_factory = None
        configs = [json.loads(r["config"]) for r in runs]
        report.n_cells = len(rows)
        finished: dict[str, tuple[Any, str]] = {}
        for row in rows:
            label = f"{row['dataset']} · {row['method']} · shard {row['shard']}"
            if row.get("model", "default") != "default":
                label = (
                    f"{row['dataset']} · {row['model']} · {row['method']} · shard {row['shard']}"
                )
            cell, why = cell_from_spec(row, configs)
            if cell is None:
                report.bad_keys.append((row["key"], label, why))
            elif row["code_version"] != report.code:
                report.other_code.append((row["key"], label, row["code_version"]))
            if row["status"] == "ok":
                report.n_finished += 1
                if cell is not None:
                    finished[row["key"]] = (cell, label)
        keys = sorted(finished)
        picked = random.Random(seed).sample(keys, min(sample, len(keys)))
        versions = json.loads(runs[-1]["versions"]) if runs else {}
        threads = torch.get_num_threads()
        if str(versions.get("threads", "")).isdigit():  # the run's thread count
            torch.set_num_threads(int(versions["threads"]))
        try:
            for key in picked:
                cell, label = finished[key]
                difference = _compare(conn, key, run_cell(cell))
                report.sampled.append((key, label, not difference, difference))
        finally:
            torch.set_num_threads(threads)
    finally:
        conn.close()
    return report
