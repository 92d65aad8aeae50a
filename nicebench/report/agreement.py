"""Rank agreement between fills: Kendall τ between the method rankings that deletion with the
mean fill, deletion with the blur fill, ROAD MoRF and the symmetric relevance gains give, per
dataset and classifier (torch-free)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

__all__ = ["FILL_COLUMNS", "fill_agreement", "fill_ranks", "write_fill_agreement"]

# leaderboard column → whether higher is better
FILL_COLUMNS: dict[str, bool] = {
    "deletion_auc": False,
    "deletion_blur_auc": False,
    "road_morf": False,
    "srg_mean": True,
    "srg_blur": True,
    "srg_road": True,
}
_GROUP = ["dataset", "model"]


def _methods(board: pd.DataFrame) -> pd.DataFrame:
    return board[board["kind"] == "method"] if "kind" in board else board


def fill_ranks(board: pd.DataFrame, columns: dict[str, bool] | None = None) -> pd.DataFrame:
    """Each method's rank (1 = best, ties share the mean rank) under each fill column present,
    per dataset and classifier: columns ``dataset, model, method`` and one per fill column."""
    columns = columns or FILL_COLUMNS
    board = _methods(board)
    present = [c for c in columns if c in board and board[c].notna().any()]
    out = board[[*_GROUP, "method"]].copy()
    for col in present:
        out[col] = board.groupby(_GROUP)[col].rank(ascending=not columns[col], method="average")
    return out.reset_index(drop=True)


def fill_agreement(board: pd.DataFrame, columns: dict[str, bool] | None = None) -> pd.DataFrame:
    """Kendall τ-b between the method rankings of every pair of fill columns present, per
    dataset and classifier, over the methods scored by both: columns ``dataset, model, metric_a,
    metric_b, tau, p_value, n_methods``. τ is taken on the scores oriented so that higher is better
    for both (1: the same ranking, −1: reversed)."""
    columns = columns or FILL_COLUMNS
    board = _methods(board)
    present = [c for c in columns if c in board and board[c].notna().any()]
    rows = []
    for (dataset, model), group in board.groupby(_GROUP, sort=False):
        for a, b in combinations(present, 2):
            both = group[[a, b]].dropna()
            va = both[a].to_numpy(float) * (1 if columns[a] else -1)
            vb = both[b].to_numpy(float) * (1 if columns[b] else -1)
            tau, p = kendalltau(va, vb) if len(both) >= 2 else (np.nan, np.nan)
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "metric_a": a,
                    "metric_b": b,
                    "tau": float(tau),
                    "p_value": float(p),
                    "n_methods": len(both),
                }
            )
    return pd.DataFrame(
        rows, columns=[*_GROUP, "metric_a", "metric_b", "tau", "p_value", "n_methods"]
    )


def _matrix_md(part: pd.DataFrame, cols: list[str]) -> list[str]:
    tau = {(r.metric_a, r.metric_b): r.tau for r in part.itertuples()}
    lines = ["| τ | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for a in cols:
        cells = []
        for b in cols:
            v = 1.0 if a == b else tau.get((a, b), tau.get((b, a), np.nan))
            cells.append("" if np.isnan(v) else f"{v:.2f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def write_fill_agreement(board: pd.DataFrame, out: str | Path) -> pd.DataFrame | None:
    """Write ``fill_agreement.csv`` (:func:`fill_agreement`) and ``fill_agreement.md`` (the τ
    matrix and each method's rank under each fill, per dataset) into ``out``; ``None`` (nothing
    written) when fewer than two fill columns were scored."""
    agree = fill_agreement(board)
    if agree.empty:
        return None
    out = Path(out)
    agree.to_csv(out / "fill_agreement.csv", index=False)
    ranks = fill_ranks(board)
    cols = [c for c in FILL_COLUMNS if c in ranks]
    lines = [
        "# Rank agreement between fills",
        "",
        "Kendall τ-b between the method rankings (methods ranked by each column's mean; "
        "lower is better for deletion_auc, deletion_blur_auc and road_morf, higher for the "
        "SRGs). Ranks: 1 = best.",
        "",
    ]
    for (dataset, model), part in agree.groupby(_GROUP, sort=False):
        lines += [f"## {dataset} / {model}", "", *_matrix_md(part, cols), ""]
        r = ranks[(ranks.dataset == dataset) & (ranks.model == model)]
        lines += ["| method | " + " | ".join(cols) + " | spread |", "|" + "---|" * (len(cols) + 2)]
        for row in r.itertuples():
            values = [getattr(row, c) for c in cols]
            spread = np.nanmax(values) - np.nanmin(values)
            lines.append(
                f"| {row.method} | " + " | ".join(f"{v:g}" for v in values) + f" | {spread:g} |"
            )
        lines.append("")
    (out / "fill_agreement.md").write_text("\n".join(lines))
    return agree
