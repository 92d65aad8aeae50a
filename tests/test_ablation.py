"""The ablation report (issue 30): each variant against the run's `baseline` row, paired per image
in the metric's better direction, with its paired-bootstrap interval and P; the table and the
forest are written only where the run sets `baseline`, which no cell's key depends on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nicebench.config import ConfigError, RunConfig, parse_specs
from nicebench.metric_spec import BASELINE, RUN_SETTINGS
from nicebench.preflight import check_run
from nicebench.report import figures as F
from nicebench.report.ablation import ablation_frame, ablation_markdown, baseline_label
from nicebench.report.tables import write_tables
from nicebench.report.trust import bootstrap_counts
from nicebench.report.validity import paired_interval
from nicebench.runner import plan_cells
from nicebench.store import CellResult, RunStore
from nicebench.testing import TINY_SCENES

METHODS = ["nice", "nice(mu=0)", "nice(lam=1)", "random"]


def _frames(n: int = 40):
    """A leaderboard, per-image table and validity table: ``nice(mu=0)`` deletes better (lower
    deletion) on every image, ``nice(lam=1)`` is the default plus noise."""
    rng = np.random.default_rng(0)
    base = rng.random(n)
    scores = {
        "nice": base,
        "nice(mu=0)": base - 0.1,
        "nice(lam=1)": base + rng.normal(0, 0.01, n),
        "random": rng.random(n),
    }
    img = pd.concat(
        pd.DataFrame(
            {
                "dataset": "toy",
                "model": "default",
                "method": m,
                "kind": "method",
                "image_index": np.arange(n),
                "deletion_auc": v,
            }
        )
        for m, v in scores.items()
    )
    board = pd.DataFrame(
        {
            "dataset": "toy",
            "model": "default",
            "method": METHODS,
            "kind": "method",
            "n_images": n,
            "deletion_auc": [scores[m].mean() for m in METHODS],
            "deletion_auc_lo": [scores[m].mean() - 0.05 for m in METHODS],
            "deletion_auc_hi": [scores[m].mean() + 0.05 for m in METHODS],
            "compression_ratio": [0.5, 0.45, 0.6, 0.7],
        }
    )
    valid = pd.DataFrame(
        {"dataset": ["toy"], "model": ["default"], "metric": ["deletion_auc"], "verdict": ["valid"]}
    )
    return board, img, valid, scores


def test_paired_interval_is_the_validity_audits_bootstrap():
    diff = np.random.default_rng(4).normal(0.2, 1.0, size=40)
    mean, lo, hi, p = paired_interval(diff, seed=0)
    counts = bootstrap_counts(40, seed=0)
    boot = counts @ diff / counts.sum(1)
    assert mean == pytest.approx(diff.mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert p == pytest.approx(((boot > 0).sum() + 0.5 * (boot == 0).sum()) / len(boot))
    assert np.isnan(paired_interval(np.array([np.nan]))[0])


def test_each_variant_against_the_default_in_the_metrics_better_direction():
    board, img, valid, scores = _frames()
    directions = {"deletion_auc": False, "compression_ratio": False}
    table = ablation_frame(board, img, valid, "nice", directions, ["deletion_auc"])
    assert set(table.variant) == {"nice(mu=0)", "nice(lam=1)"}  # no baseline, no reference
    paired = table[table.paired].set_index("variant")
    better = paired.loc["nice(mu=0)"]  # lower deletion: better, so a positive difference
    assert better.difference == pytest.approx(0.1)
    assert better.difference_lo == pytest.approx(0.1) and better.p_better == 1.0
    assert better.n_images == 40 and better.verdict == "valid"
    noise = paired.loc["nice(lam=1)"]
    diff = scores["nice"] - scores["nice(lam=1)"]
    assert (noise.difference, noise.difference_lo, noise.difference_hi, noise.p_better) == (
        pytest.approx(paired_interval(diff)[0]),
        pytest.approx(paired_interval(diff)[1]),
        pytest.approx(paired_interval(diff)[2]),
        pytest.approx(paired_interval(diff)[3]),
    )
    unpaired = table[~table.paired].set_index("variant")
    assert unpaired.loc["nice(mu=0)", "difference"] == pytest.approx(0.05)  # 0.5 − 0.45
    assert np.isnan(unpaired.loc["nice(mu=0)", "p_better"])
    text = ablation_markdown(table)
    assert "`nice(mu=0)`" in text and "**+0.1 (P 1.00)**" in text and "deletion_auc ↓" in text
    # a run whose rows lack the baseline has no ablation
    assert ablation_frame(board, img, valid, "gradcam", directions, ["deletion_auc"]).empty


def test_the_baseline_setting_is_declared_and_checked_and_keys_no_cell():
    assert BASELINE in RUN_SETTINGS and BASELINE.default == ""
    assert baseline_label({"baseline": "nice:codec=jpeg,factor=8"}) == "nice(codec=jpeg,factor=8)"
    assert baseline_label({}) == ""
    tiny = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())

    def cfg(**settings):
        return RunConfig(
            datasets=parse_specs(tiny),
            methods=parse_specs(["nice:lam=1", "random"]),
            metrics=["deletion"],
            n_images=4,
            settings=settings,
        )

    check_run(cfg(baseline="nice:lam=1"))
    with pytest.raises(ConfigError, match="not one of the run's methods"):
        check_run(cfg(baseline="nice"))
    keys = [c.key for c in plan_cells(cfg())]
    assert [c.key for c in plan_cells(cfg(baseline="nice:lam=1"))] == keys


def _store(tmp_path, baseline: str | None):
    """A hand-written run: three NICE rows and random on one dataset, deletion per image."""
    store = RunStore(tmp_path)
    settings = {"baseline": baseline} if baseline else {}
    store.record_run({"settings": settings, "seed": 0}, {}, None, None)
    rng = np.random.default_rng(1)
    base = rng.random(30)
    shift = {"nice": 0.0, "nice(mu=0)": -0.05, "nice(lam=1)": 0.08, "random": 0.3}
    for method, d in shift.items():
        rows = [(i, 0, 0, "deletion_auc", float(base[i] + d)) for i in range(30)]
        store.write(
            CellResult(
                key=f"toy-{method}",
                dataset="toy",
                method=method,
                method_name=method.split("(")[0],
                shard=0,
                kind="method",
                n_images=30,
                explain_ms_per_image=1.0,
                image_rows=rows,
                spec={"method": method},
            )
        )
    return store


def test_the_run_writes_the_ablation_table_and_forest_only_with_a_baseline(tmp_path):
    with_base, without = tmp_path / "a", tmp_path / "b"
    for path, baseline in ((with_base, "nice"), (without, None)):
        path.mkdir()
        store = _store(path, baseline)
        write_tables(store, None, path)
        store.close()
    table = pd.read_csv(with_base / "ablation.csv")
    assert set(table.metric) == {"deletion_auc", "explain_ms_per_image"}
    table = table[table.paired]
    assert sorted(table.variant) == ["nice(lam=1)", "nice(mu=0)"]
    row = table.set_index("variant").loc["nice(mu=0)"]
    assert row.difference == pytest.approx(0.05) and row.p_better == 1.0  # deletion: lower better
    assert "# Ablation" in (with_base / "ablation.md").read_text()
    assert not (without / "ablation.csv").exists()
    names = {p.name for p in F.write_figures(with_base, formats=["png"])}
    assert "ablation_toy.png" in names
    assert not any(p.name.startswith("ablation") for p in F.write_figures(without, ["png"]))
    store = RunStore(with_base)
    fig = F.ablation_forest(pd.read_csv(with_base / "ablation.csv"), "toy", "default")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["nice(mu=0)", "nice(lam=1)"]  # the run's order, top down
    # a variant is named by what it changes in the baseline
    assert (
        F._relative_label("nice(codec=jpeg,factor=8,train_quality=30)", "nice(codec=jpeg,factor=8)")
        == "nice(train_quality=30)"
    )
    store.close()
