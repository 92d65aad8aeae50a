"""An ablation study read from a run: every variant row against the run's default row, image by
image (torch-free).

A run that sets ``baseline`` (:data:`nicebench.metric_spec.BASELINE`, e.g. ``baseline = "nice"``
in ``configs/nice-ablation.toml``) names its default method row. On every (dataset, model) that
has it, each other method row that is not a reference (:func:`nicebench.report.style.is_baseline`:
``random``, ``oracle``, … stay out; they are there for the validity audit) is a *variant*, and
:func:`ablation` compares it with the default on every metric of the leaderboard:

- per-image metrics: the paired difference variant − default over the images both scored,
  oriented so that a positive difference means the variant is better (the metric's own
  direction), with its 95% paired-bootstrap interval and P(difference > 0)
  (:func:`nicebench.report.validity.paired_interval`, the validity audit's bootstrap, seeded
  with the run's seed);
- the compression track's headline columns (``compression_ratio``, ``bd_rate``) and the explain
  time, which are not per-image scores: the oriented difference of the two rows' values, no
  interval and no P (``paired`` False); each row's own interval is in the table.

Each row of the table also carries both rows' means with their leaderboard intervals and the
validity audit's verdict on the metric there (:mod:`nicebench.report.validity`).
:func:`write_ablation` writes ``ablation.csv`` and ``ablation.md`` beside the leaderboard; the
forest of paired differences is :func:`nicebench.report.figures.ablation_forest`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import parse_specs
from ..metric_spec import BASELINE, SEED
from ..store import RunStore
from .columns import catalogue
from .scores import memo, per_image
from .style import is_baseline
from .validity import paired_interval, validity

__all__ = [
    "ABLATION_COLUMNS",
    "UNPAIRED_COLUMNS",
    "baseline_label",
    "ablation",
    "ablation_frame",
    "ablation_markdown",
    "write_ablation",
]

#: the leaderboard columns compared as values of the two rows (not per-image scores)
UNPAIRED_COLUMNS = ("compression_ratio", "bd_rate", "explain_ms_per_image")
ABLATION_COLUMNS = [
    "dataset",
    "model",
    "baseline",
    "variant",
    "metric",
    "higher_is_better",
    "verdict",
    "n_images",
    "variant_mean",
    "variant_lo",
    "variant_hi",
    "baseline_mean",
    "baseline_lo",
    "baseline_hi",
    "difference",
    "difference_lo",
    "difference_hi",
    "p_better",
    "paired",
]


def baseline_label(settings: dict) -> str:
    """The leaderboard label (``nice``, ``nice(codec=jpeg,factor=8)``) of the run's ``baseline``
    setting; ``""`` when the run sets none."""
    value = BASELINE.get(settings)
    if not value:
        return ""
    specs = parse_specs(str(value))
    return specs[0].label if len(specs) == 1 else ""


def ablation(store: RunStore, keys: set[str] | None, board: pd.DataFrame) -> pd.DataFrame:
    """The ablation table (:data:`ABLATION_COLUMNS`) of the run in ``store`` (its cells ``keys``;
    the latest run's settings) and its leaderboard ``board``
    (:func:`nicebench.report.tables.leaderboard`); empty when the run sets no ``baseline``."""

    def compute() -> pd.DataFrame:
        run = store.latest_run()
        config = run.get("config", {}) if run else {}
        settings = {"seed": config.get("seed", 0) or 0, **(config.get("settings") or {})}
        label = baseline_label(settings)
        if not label:
            return pd.DataFrame(columns=ABLATION_COLUMNS)
        cat = catalogue(store)
        return ablation_frame(
            board,
            per_image(store, keys),
            validity(store, keys),
            label,
            cat.higher_is_better(),
            list(cat.per_image()),
            seed=int(SEED.get(settings)),
        )

    return memo("ablation", store, keys, compute)


def ablation_frame(
    board: pd.DataFrame,
    img: pd.DataFrame,
    valid: pd.DataFrame,
    baseline: str,
    directions: dict[str, bool],
    per_image_columns: list[str],
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`ablation` from the run's leaderboard ``board``, per-image table ``img`` and validity
    table ``valid``: each variant row of ``board`` against its ``baseline`` row (a leaderboard
    label) on each column of ``per_image_columns`` (paired) and :data:`UNPAIRED_COLUMNS` that
    both rows have; ``directions``: column → higher is better."""
    rows = []
    methods = board[board["kind"] == "method"]
    for (dataset, model), part in methods.groupby(["dataset", "model"], sort=False):
        base = part[part["method"] == baseline]
        if base.empty:
            continue
        base = base.iloc[0]
        scores = img[(img["dataset"] == dataset) & (img["model"] == model)]
        by_method = {m: g.set_index("image_index") for m, g in scores.groupby("method")}
        verdicts = {}
        if len(valid):
            here = valid[(valid["dataset"] == dataset) & (valid["model"] == model)]
            verdicts = dict(zip(here["metric"], here["verdict"], strict=True))
        paired_cols = [c for c in per_image_columns if c in scores.columns and c in directions]
        cols = paired_cols + [c for c in UNPAIRED_COLUMNS if c in board.columns]
        for _, var in part.iterrows():
            if var["method"] == baseline or is_baseline(var["method"], var["kind"]):
                continue
            for col in cols:
                v_mean, b_mean = _num(var.get(col)), _num(base.get(col))
                if math.isnan(v_mean) or math.isnan(b_mean):
                    continue
                sign = 1.0 if directions.get(col, True) else -1.0
                row = {
                    "dataset": dataset,
                    "model": model,
                    "baseline": baseline,
                    "variant": var["method"],
                    "metric": col,
                    "higher_is_better": directions.get(col, True),
                    "verdict": verdicts.get(col, ""),
                    "variant_mean": v_mean,
                    "variant_lo": _num(var.get(f"{col}_lo")),
                    "variant_hi": _num(var.get(f"{col}_hi")),
                    "baseline_mean": b_mean,
                    "baseline_lo": _num(base.get(f"{col}_lo")),
                    "baseline_hi": _num(base.get(f"{col}_hi")),
                }
                if col in paired_cols:
                    a = by_method.get(var["method"])
                    b = by_method.get(baseline)
                    if a is None or b is None:
                        continue
                    both = a[col].to_frame("v").join(b[col].to_frame("b"), how="inner")
                    diff = sign * (both["v"].to_numpy(float) - both["b"].to_numpy(float))
                    mean, lo, hi, p = paired_interval(diff, seed=seed)
                    row.update(
                        n_images=int(np.isfinite(diff).sum()),
                        difference=mean,
                        difference_lo=lo,
                        difference_hi=hi,
                        p_better=p,
                        paired=True,
                    )
                else:
                    row.update(
                        n_images=_num(var.get("n_images")),
                        difference=sign * (v_mean - b_mean),
                        difference_lo=math.nan,
                        difference_hi=math.nan,
                        p_better=math.nan,
                        paired=False,
                    )
                rows.append(row)
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def _num(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return out


def _signed(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.3g}"


def _cell(r: pd.Series) -> str:
    """``+0.012 (P 0.93)``; bold where the 95% interval excludes 0."""
    if not r["paired"]:
        return f"{_signed(r['difference'])} (unpaired)"
    text = f"{_signed(r['difference'])} (P {r['p_better']:.2f})"
    separated = r["difference_lo"] > 0 or r["difference_hi"] < 0
    return f"**{text}**" if separated else text


def ablation_markdown(table: pd.DataFrame) -> str:
    """Per (dataset, model): the default's means, then one row per variant and one column per
    metric with the paired difference (positive: the variant is better) and P(better), bold where
    the 95% interval excludes 0; † marks a metric the validity audit did not find valid there."""
    if table.empty:
        return "No ablation: the run sets no `baseline`, or no dataset has its row.\n"
    out = []
    for (dataset, model), part in table.groupby(["dataset", "model"], sort=False):
        where = dataset if model in ("", "default") else f"{dataset} / {model}"
        baseline = part["baseline"].iloc[0]
        metrics = list(dict.fromkeys(part["metric"]))
        first = part.drop_duplicates("metric").set_index("metric")
        heads = []
        for m in metrics:
            arrow = "↑" if first.loc[m, "higher_is_better"] else "↓"
            bad = first.loc[m, "verdict"] not in ("valid", "")
            heads.append(f"{m} {arrow}{' †' if bad else ''}")
        out.append(f"## {where}: each variant − `{baseline}`\n")
        out.append("| variant | " + " | ".join(heads) + " |")
        out.append("|---" * (len(metrics) + 1) + "|")
        means = [f"{first.loc[m, 'baseline_mean']:.3g}" for m in metrics]
        out.append(f"| `{baseline}` (mean) | " + " | ".join(means) + " |")
        for variant, rows in part.groupby("variant", sort=False):
            cells = rows.set_index("metric")
            out.append(
                f"| `{variant}` | "
                + " | ".join(_cell(cells.loc[m]) if m in cells.index else "" for m in metrics)
                + " |"
            )
        out.append("")
    out.append(
        "Each cell: the mean over images of the paired difference variant − default, in the "
        "metric's better direction (positive: the variant is better; ↑/↓: the metric's own "
        "direction), and P(difference > 0) over 1000 paired bootstrap replicates of the images; "
        "bold: the 95% paired-bootstrap interval excludes 0. † the validity audit did not find the "
        "metric valid on this dataset (`validity.md`). The compression columns and the explain "
        "time are not per-image scores: their difference is that of the two rows' values "
        "(unpaired). Every row's mean, "
        "both intervals and the verdicts: `ablation.csv`."
    )
    return "\n".join(out) + "\n"


def write_ablation(
    store: RunStore, keys: set[str] | None, out: str | Path, board: pd.DataFrame
) -> pd.DataFrame:
    """Write ``ablation.csv`` and ``ablation.md`` into ``out`` when the run sets ``baseline``
    (nothing otherwise); ``board``: the run's leaderboard. Returns the table."""
    table = ablation(store, keys, board)
    if table.empty:
        return table
    out = Path(out)
    table.to_csv(out / "ablation.csv", index=False)
    (out / "ablation.md").write_text("# Ablation\n\n" + ablation_markdown(table))
    return table
