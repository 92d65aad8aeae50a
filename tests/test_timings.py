"""Where the time goes: per-(cell, metric) and per-phase wall times kept in the run store, the
report's "Where the time went" section, a store written before them, and ``run --dry-run``."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from nicebench.cli import main
from nicebench.report import html
from nicebench.store import CELL_PHASES, RUN_PHASES, CellResult, RunStore, peek_cells
from nicebench.testing import TINY_SCENES, tiny_run_config

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, mtime in ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_store_keeps_metric_and_phase_timings(tiny_scenes, tmp_path):
    from nicebench.runner import run

    out = tmp_path / "run"
    cfg = tiny_run_config(out, ["random", "center"], ["deletion", "insertion"])
    assert run(cfg, progress=False).ok == 2
    store = RunStore(out)
    timings, cells = store.timings(), store.cells().set_index("key")
    record = store.latest_run()["timings"]
    store.close()
    assert set(timings.cell_key) == set(cells.index)
    metrics = timings[timings.phase == "metrics"]
    assert sorted(metrics.groupby("cell_key").name.apply(sorted).iloc[0]) == [
        "deletion",
        "insertion",
    ]
    assert len(metrics) == 4 and (metrics.seconds > 0).all()
    for key, g in timings.groupby("cell_key"):
        assert set(g.phase) == set(CELL_PHASES) - {"other"}  # "other" is what is left
        assert g.seconds.sum() <= cells.seconds[key] + 1e-9  # the parts fit in the cell's time
    # the run's phases: its cells' parts summed (the rest of their time as "other"), the tables
    seconds = record["seconds"]
    assert list(seconds) == list(RUN_PHASES[:-2])  # no figures or report: run() draws none
    assert record["cells"] == {"computed": 2, "stored": 0}
    assert seconds["metrics"] == pytest.approx(metrics.seconds.sum(), abs=1e-3)
    assert sum(seconds[p] for p in CELL_PHASES) == pytest.approx(cells.seconds.sum(), abs=1e-3)
    assert seconds["tables"] > 0
    # a rerun computes nothing: its cells cost nothing, the stored timings are kept
    run(cfg, progress=False)
    store = RunStore(out)
    again = store.latest_run()["timings"]
    assert len(store.timings()) == len(timings)
    store.close()
    assert again["cells"] == {"computed": 0, "stored": 2}
    assert all(again["seconds"][p] == 0 for p in CELL_PHASES)


def _timed_cell(key: str, method: str, seconds: dict[tuple[str, str], float]) -> CellResult:
    res = CellResult(key=key, dataset="scenes", method=method, method_name=method, shard=0)
    res.n_images, res.seconds, res.timings = 4, 10.0, seconds
    res.explain_ms_per_image, res.peak_mem_mb = 1.0, 100.0
    res.image_rows = [(i, 0, 0, "deletion_auc", 0.5) for i in range(4)]
    return res


def test_report_shows_where_the_time_went(tmp_path):
    from nicebench.report.html import render_report

    store = RunStore(tmp_path)
    store.record_run({"methods": ["a", "b"]}, {"code": "x"}, ["k-a", "k-b"])
    store.write(_timed_cell("k-a", "a", {("metrics", "deletion"): 1.25, ("explain", ""): 2.0}))
    store.write(
        _timed_cell("k-b", "b", {("metrics", "deletion"): 3.5, ("metrics", "pointing"): 0.75})
    )
    store.record_timings({"models": 7.0, "metrics": 5.5, "tables": 1.5}, computed=2, stored=0)
    store.record_timings({"figures": 2.0})  # merged into the same run's record
    store.close()
    text = render_report(tmp_path)
    assert '<a href="#time-spent">Where the time went</a>' in text
    section = text[text.index('<section id="time-spent">') :]
    section = section[: section.index("</section>")]
    assert "2 cells computed, 0 already in the store" in section
    assert ">models</span></td><td>7.0</td><td>44%</td>" in section  # of 16.0 s in all
    assert ">figures</span></td><td>2.0</td>" in section
    assert ">report</span></td><td>—</td>" in section  # stored once the page is written
    assert "<td>total</td><td>16.0</td>" in section
    # per metric: deletion over both cells first; the slowest pair first
    assert "<td>deletion</td><td>2</td><td>4.75</td><td>86%</td>" in section
    assert "<td>pointing</td><td>1</td><td>0.75</td><td>14%</td>" in section
    slowest = section[section.index("Slowest") :]
    assert slowest.index("<td>3.50</td>") < slowest.index("<td>1.25</td>")
    assert slowest.index("<td>1.25</td>") < slowest.index("<td>0.75</td>")


def test_compact_drops_the_timings_of_the_cells_it_drops(tmp_path):
    store = RunStore(tmp_path)
    store.record_run({}, {}, ["k-a", "k-b"])
    store.write(_timed_cell("k-a", "a", {("metrics", "deletion"): 1.0}))
    store.write(_timed_cell("k-b", "b", {("metrics", "deletion"): 2.0}))
    store.record_run({}, {}, ["k-b"])
    assert store.compact() == 1
    assert list(store.timings().cell_key) == ["k-b"]
    store.close()


def test_store_written_before_timings_opens_and_draws(tmp_path):
    """A store from before runs and cells kept their times (no ``timings`` table, no ``runs``
    column): it opens, its report draws with the section saying so, and new times go in."""
    from nicebench.report.html import render_report

    old = sqlite3.connect(tmp_path / "store.sqlite")
    old.executescript(
        "CREATE TABLE cells (key TEXT PRIMARY KEY, dataset TEXT, method TEXT, method_name TEXT, "
        "kind TEXT, shard INTEGER, status TEXT, error TEXT, n_images INTEGER, "
        "explain_ms_per_image REAL, peak_mem_mb REAL, seconds REAL, finished_at TEXT, "
        "code_version TEXT, spec TEXT, model TEXT DEFAULT 'default');"
        "CREATE TABLE runs (started_at TEXT, config TEXT, versions TEXT, cells TEXT, "
        "catalogue TEXT);"
        "INSERT INTO cells VALUES ('k0','scenes','random','random','method',0,'ok','',"
        "2,0.1,1,3.0,'t','c','{}','default');"
        """INSERT INTO runs VALUES ('t', '{}', '{"code": "c"}', '["k0"]', NULL);"""
    )
    old.commit()
    old.close()
    before = peek_cells(tmp_path)  # read as it is, before anything migrates it
    assert list(before.models_seconds) == [0.0] and list(before.seconds) == [3.0]
    text = render_report(tmp_path)
    assert "The latest run recorded no phase times" in text
    assert "No per-metric times stored for these cells" in text
    store = RunStore(tmp_path)
    assert store.latest_run()["timings"] is None and store.timings().empty
    store.record_timings({"tables": 0.5}, computed=0, stored=1)
    assert store.latest_run()["timings"] == {
        "seconds": {"tables": 0.5},
        "cells": {"computed": 0, "stored": 1},
    }
    store.close()


def _cli(out: Path, *extra: str, methods: str = "random,center") -> list[str]:
    return [
        "run",
        "--datasets",
        TINY,
        "--methods",
        methods,
        "--metrics",
        "deletion",
        "--n-images",
        "8",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def test_dry_run_lists_cells_models_and_estimate_and_writes_nothing(
    tiny_scenes, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    # before any run: every cell to compute, nothing known, no run directory made
    assert main(_cli(out, "--dry-run")) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "2 cells into" in text and text.count("  compute  ") == 2 and "unknown" in text
    assert "estimate: unknown" in text
    assert "would train (not in the model cache): none" in text  # the session's classifier
    assert main(_cli(out, "--no-report")) == 0
    capsys.readouterr()
    stored = peek_cells(out).set_index("method")
    files = _files(out)

    # all stored: nothing to compute
    assert main(_cli(out, "--dry-run")) == 0
    text = capsys.readouterr().out
    assert text.count("  stored   ") == 2 and "estimate: 0 s: every cell is in the store" in text

    # shards of 4 images: new cells, each estimated from its method's stored seconds per image
    # (less the time it spent loading models), so the estimate is the stored cells' sum exactly
    from nicebench.plan import _rates

    expected = sum((stored.seconds - stored.models_seconds).clip(lower=0))
    assert sum(r * 8 for r in _rates(peek_cells(out)).values()) == pytest.approx(expected)
    assert main(_cli(out, "--shard-size", "4", "--dry-run")) == 0
    text = capsys.readouterr().out
    assert text.count("  compute  ") == 4 and f"estimate: {expected:.1f} s for 4 cells" in text
    assert "center · shard 1  ~" in text

    # one cell deleted from the store: it is to compute; its method has no timing left
    with sqlite3.connect(out / "store.sqlite") as conn:
        conn.execute("DELETE FROM cells WHERE key = ?", (stored.key["center"],))
    conn.close()
    files = _files(out)
    assert main(_cli(out, "--dry-run")) == 0
    text = capsys.readouterr().out
    lines = {ln.split(" · ")[-2]: ln for ln in text.splitlines() if " · shard " in ln}
    assert lines["random"].startswith("  stored ") and lines["center"].startswith("  compute")
    assert lines["center"].endswith("unknown") and "estimate: unknown" in text
    assert _files(out) == files  # the store and the tables untouched

    # a learned method: trains after a classifier that is not cached; with the classifier
    # cached its own entry is looked up (and is missing until it is fitted)
    nice = "nice:epochs=1,n_train=16,seed=7"  # a cache entry no other test makes
    assert main(_cli(out, "--dry-run", methods=nice)) == 0
    text = capsys.readouterr().out
    assert (
        "would train (not in the model cache): 1" in text
        and "nice(epochs=1,n_train=16,seed=7) on" in text
    )
    assert "(after its classifier)" not in text
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / "empty-cache"))
    assert main(_cli(out, "--dry-run", methods=nice)) == 0
    text = capsys.readouterr().out
    assert "would train (not in the model cache): 2" in text and "  classifier default for" in text
    assert "(after its classifier)" in text
    assert _files(out) == files


def test_learned_method_would_train_until_fitted(tiny_scenes):
    import nicebench as nb

    ds, model = tiny_scenes
    method = nb.create_method("nice", model, epochs=1, n_train=8, seed=3)
    train = ds.train_split()
    assert method.would_train(train)
    method.fit(train)
    assert not nb.create_method("nice", model, epochs=1, n_train=8, seed=3).would_train(train)
    assert not nb.create_method("gradcam", model).would_train(train)  # learns nothing


def test_the_timings_table_skips_cells_that_recorded_no_explain_time():
    """Cells without an explain time (None in the store) are left out of the weighted mean
    instead of failing the report; a group with none shows no time."""
    cells = pd.DataFrame(
        [
            {
                "dataset": "d",
                "model": "default",
                "method": "m",
                "kind": "method",
                "status": "ok",
                "n_images": 4,
                "explain_ms_per_image": None,
                "seconds": 1.0,
                "peak_mem_mb": 10.0,
            },
            {
                "dataset": "d",
                "model": "default",
                "method": "m",
                "kind": "method",
                "status": "ok",
                "n_images": 4,
                "explain_ms_per_image": 3.0,
                "seconds": 1.0,
                "peak_mem_mb": 10.0,
            },
            {
                "dataset": "d",
                "model": "default",
                "method": "n",
                "kind": "method",
                "status": "ok",
                "n_images": 4,
                "explain_ms_per_image": None,
                "seconds": 1.0,
                "peak_mem_mb": 10.0,
            },
        ]
    )
    page = html._timings_section(cells, several_models=False)
    # the two methods' rows, not the total
    rows = re.findall(r"<tr><td data-v=\"d\">.*?</tr>", page, re.S)
    assert len(rows) == 2
    assert '<td class="num" data-v="3.0">3.000</td>' in rows[0]  # m: the one cell that has a time
    assert '<td class="num" data-v=""></td>' in rows[1]  # n: none recorded
