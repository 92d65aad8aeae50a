"""The compact summary ``nicebench run`` prints: a few key columns per dataset, the best method
per metric, and where the full tables, figures and report are."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from ..store import RunStore
from .columns import Catalogue, catalogue
from .tables import MARK
from .validity import at_chance, classifier_rows, classifier_warning, not_valid

__all__ = ["KEY_COLUMNS", "terminal_summary", "best_per_metric"]

# The columns a terminal shows (the leaderboard files hold every column with its interval).
KEY_COLUMNS = [
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "mask_auroc",
    "compression_ratio",
    "explain_ms_per_image",
]
_SHORT = {
    "deletion_auc": "deletion",
    "insertion_auc": "insertion",
    "pointing_game": "pointing",
    "compression_ratio": "bytes_ratio",
    "explain_ms_per_image": "ms/image",
}
_WIDTH = 12


def best_per_metric(
    board: pd.DataFrame,
    columns: list[str] | None = None,
    validity: pd.DataFrame | None = None,
    catalogue: Catalogue | None = None,
) -> pd.DataFrame:
    """Per dataset (and model) and score column: the best explanation method (methods that read
    the ground truth left out) with its value; better directions from the metric specs. With the
    run's ``validity`` table, a metric not valid on a dataset names no best there, nor does any
    column of a dataset whose classifier is at chance. ``catalogue``: the run's
    (:mod:`nicebench.report.columns`; the registered metrics and methods without it)."""
    catalogue = catalogue or Catalogue.from_registry()
    directions = catalogue.higher_is_better()
    bad = not_valid(validity) if validity is not None else {}
    blind = at_chance(validity) if validity is not None else set()
    columns = [c for c in (columns or KEY_COLUMNS) if c in board and c != "explain_ms_per_image"]
    methods = board[board.kind == "method"]
    rows: list[dict[str, object]] = []
    if methods.empty:
        return pd.DataFrame(rows, columns=["dataset", "model", "metric", "method", "value"])
    methods = methods[~methods.method.map(catalogue.reads_ground_truth).astype(bool)]
    for (dataset, model), part in methods.groupby(["dataset", "model"], sort=False):
        if (dataset, model) in blind:
            continue
        for col in columns:
            values = part[col].dropna()
            if values.empty or col not in directions or col in bad.get((dataset, model), {}):
                continue
            best = values.idxmax() if directions[col] else values.idxmin()
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "metric": col,
                    "method": part.method[best],
                    "value": float(values[best]),
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "model", "metric", "method", "value"])


def _stored_catalogue(out: Path) -> Catalogue:
    """The catalogue of the run stored in ``out`` (the registry's without a store there)."""
    if not (out / "store.sqlite").exists():
        return Catalogue.from_registry()
    store = RunStore(out)
    try:
        return catalogue(store)
    finally:
        store.close()


def _cell(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def terminal_summary(
    board: pd.DataFrame,
    out: str | Path,
    files: list[Path] | None = None,
    validity: pd.DataFrame | None = None,
    catalogue: Catalogue | None = None,
) -> str:
    """A summary that fits a terminal: per dataset the key columns that have values, the best
    method per metric, and the files written. With the run's ``validity`` table
    (:mod:`nicebench.report.validity`): a warning first for each classifier at chance, the
    scores of metrics not valid on their dataset marked †, and why. ``catalogue``: the run's
    (by default read from the store in ``out``)."""
    catalogue = catalogue or _stored_catalogue(Path(out))
    bad = not_valid(validity) if validity is not None else {}
    low = [
        _SHORT.get(c, c) for c in catalogue.lower_is_better([c for c in KEY_COLUMNS if c in board])
    ]
    lines = []
    if validity is not None and len(validity):
        for check in classifier_rows(validity):
            lines += [*textwrap.wrap(classifier_warning(check), 96), ""]
    lines += [
        f"means over images (intervals in leaderboard.md); lower is better for {', '.join(low)}"
    ]
    if bad:
        lines.append(f"{MARK}: not valid on this dataset (validity.md)")
    for (dataset, model), part in board.groupby(["dataset", "model"], sort=False):
        cols = [c for c in KEY_COLUMNS if c in part and part[c].notna().any()]
        title = dataset if model == "default" else f"{dataset} · {model}"
        width = max(8, *(len(m) for m in part.method)) + 1
        lines += [
            "",
            title,
            "  "
            + "method".ljust(width)
            + "".join(_SHORT.get(c, c)[: _WIDTH - 1].rjust(_WIDTH) for c in cols),
        ]
        marked = bad.get((dataset, model), {})
        for _, r in part.iterrows():
            cells = [_cell(r[c]) + (MARK if c in marked and _cell(r[c]) else "") for c in cols]
            lines.append(
                "  " + str(r.method).ljust(width) + "".join(cell.rjust(_WIDTH) for cell in cells)
            )
        if marked:
            text = f"{MARK} not valid here (left out of combined_rank; validity.md): " + "; ".join(
                f"{c} {why.split(':')[0]}" for c, why in marked.items()
            )
            lines += textwrap.wrap(text, 96, initial_indent="  ", subsequent_indent="    ")
    best = best_per_metric(board, validity=validity, catalogue=catalogue)
    methods = board[board.kind == "method"]
    if len(best) or len(methods):
        lines += ["", "best method per metric (methods that read the ground truth left out):"]
        for dataset, model in methods.groupby(["dataset", "model"], sort=False).groups:
            title = dataset if model == "default" else f"{dataset} · {model}"
            lines.append(f"  {title}:")
            part = best[(best.dataset == dataset) & (best.model == model)]
            lines += [f"    {r.metric} {r.method} ({r.value:.3f})" for r in part.itertuples()]
            if part.empty:
                lines.append("    none named: no key metric is valid here (validity.md)")
    out = Path(out)
    lines += [
        "",
        f"run directory: {out}",
        "  tables: leaderboard.md, leaderboard.csv, per_image.csv, validity.md",
    ]
    for path in files or []:
        where = path.relative_to(out) if path.is_relative_to(out) else path
        lines.append(f"  {'report' if path.suffix == '.html' else 'figures'}: {where}")
    return "\n".join(lines) + "\n"
