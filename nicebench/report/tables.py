"""Leaderboard and per-image tables (CSV and Markdown) from a run store.

Every row names its ``kind``: ``method`` (an explanation method) or ``codec`` (a codec's own
quality sweep); ``method`` holds the method's or the codec's label. The compression summary
(:func:`compression_summary`) imports no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import RunStore

__all__ = [
    "LEADERBOARD_COLUMNS", "leaderboard", "per_image", "write_tables", "to_markdown",
    "compression_summary", "compression_points",
]  # fmt: skip

LEADERBOARD_COLUMNS = [
    "dataset", "method", "kind", "n_images", "deletion_auc", "insertion_auc", "pointing_game",
    "mask_auroc", "saliency_metric", "sanity_spearman", "explain_ms_per_image",
    "compression_ratio", "bd_rate", "bd_codec", "bpp", "accuracy_original", "accuracy_compressed",
    "status",
]  # fmt: skip
# Per-image columns that are not scores of the map (kept out of the score columns' CIs).
_RENAME = {"correct": "accuracy_original"}
LOWER_IS_BETTER = {"deletion_auc", "saliency_metric", "sanity_spearman", "explain_ms_per_image",
                   "compression_ratio", "bd_rate", "bpp"}  # fmt: skip


_IMAGE_INDEX = ["dataset", "method", "kind", "image_index", "label", "pred"]


def per_image(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """One row per (dataset, method or codec, image) with a column per metric."""
    long = store.image_values(keys)
    if long.empty:
        return pd.DataFrame(columns=_IMAGE_INDEX)
    wide = long.pivot_table(
        index=_IMAGE_INDEX, columns="metric",
        values="value", aggfunc="first",
    ).reset_index()  # fmt: skip
    wide.columns.name = None
    return wide.rename(columns=_RENAME)


def _status(group: pd.DataFrame) -> str:
    failed = group[group.status != "ok"]
    if failed.empty:
        return "ok"
    return f"failed {len(failed)}/{len(group)} cells: {failed.error.iloc[0][:200]}"


def compression_summary(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """Per dataset × method or codec: the compression track's headline figures (SPEC §6), each
    row's operating points measured against the quality sweep of its ``bd_codec`` (the run's
    reference codec) on the same images. Torch-free."""
    from ..compression.summary import summarise_table

    return summarise_table(store.tables("compression", keys))


def compression_points(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """Every method's and codec's operating points (bytes, ratio, accuracy per keep / quality /
    gate), with their ``kind``."""
    from ..compression.rate import operating_points

    rows = store.tables("compression", keys)
    if rows.empty:
        return pd.DataFrame()
    return operating_points(rows, ["dataset", "method", "kind", "point"])


_COMPRESSION_COLUMNS = ["compression_ratio", "bd_rate", "bd_codec", "bpp", "accuracy_compressed",
                        "payload_ratio", "accuracy_reference", "operating_point",
                        "within_tolerance"]  # fmt: skip


def leaderboard(store: RunStore, keys: set[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per dataset × method or codec: mean of every per-image score with a 95% bootstrap
    CI, and the compression summary."""
    from ..metrics.bootstrap import bootstrap_ci

    cells = store.cells(keys)
    if cells.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    img = per_image(store, keys)
    scalars = store.cell_values(keys)
    rows = []
    order = list(dict.fromkeys(zip(cells.dataset, cells.method, cells.kind, strict=True)))
    for dataset, method, kind in order:
        group = cells[(cells.dataset == dataset) & (cells.method == method)]
        row: dict[str, object] = {"dataset": dataset, "method": method, "kind": kind}
        ok = group[group.status == "ok"]
        sel = img[(img.dataset == dataset) & (img.method == method)] if len(img) else img
        row["n_images"] = int(sel.image_index.nunique()) if len(sel) else 0
        for col in sel.columns:
            if col in _IMAGE_INDEX:
                continue
            mean, lo, hi, n = bootstrap_ci(sel[col].to_numpy(), seed=seed)
            if n == 0:
                continue
            row[col], row[f"{col}_lo"], row[f"{col}_hi"] = mean, lo, hi
        if len(ok):
            w = ok.n_images.to_numpy(dtype=float)
            row["explain_ms_per_image"] = float(np.average(ok.explain_ms_per_image, weights=w))
        if len(scalars):
            part = scalars[(scalars.dataset == dataset) & (scalars.method == method)]
            for name, value in part.groupby("name").value.mean().items():
                row[name] = value
        row["status"] = _status(group)
        rows.append(row)
    df = pd.DataFrame(rows)
    comp = compression_summary(store, keys)
    if len(comp):
        comp = comp[["dataset", "method", "kind", *_COMPRESSION_COLUMNS, "accuracy_original"]]
        comp = comp.rename(columns={"accuracy_original": "_acc"})
        df = df.drop(columns=[c for c in _COMPRESSION_COLUMNS if c in df]).merge(
            comp, on=["dataset", "method", "kind"], how="left"
        )
        if "accuracy_original" not in df:
            df["accuracy_original"] = df["_acc"]
        df["accuracy_original"] = df["accuracy_original"].fillna(df["_acc"])
        df = df.drop(columns="_acc")
    for col in LEADERBOARD_COLUMNS:
        if col not in df:
            df[col] = np.nan
    extras = [c for c in df.columns if c not in LEADERBOARD_COLUMNS]
    main = [c for c in LEADERBOARD_COLUMNS if c != "status"]
    ci = [c for c in extras if c.endswith(("_lo", "_hi"))]
    other = [c for c in extras if c not in ci]
    return df[main + other + ["status"] + ci]


def _fmt(value: float, lo: float | None, hi: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" ±{(hi - lo) / 2:.3f}"
    return text


def to_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table (mean ± half the 95% interval), empty columns dropped."""
    cols = [c for c in board.columns if not c.endswith(("_lo", "_hi"))]
    cols = [c for c in cols if c in ("dataset", "method", "kind", "status")
            or board[c].notna().any()]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in board.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, str):
                cells.append(v)
            elif c == "n_images":
                cells.append(str(int(v)))
            else:
                cells.append(_fmt(v, r.get(f"{c}_lo"), r.get(f"{c}_hi")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(store: RunStore, keys: set[str] | None, out: str | Path) -> pd.DataFrame:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``per_image.csv`` into ``out``."""
    from ..metrics import DEFAULT_SETTINGS

    out = Path(out)
    board = leaderboard(store, keys)
    board.to_csv(out / "leaderboard.csv", index=False)
    per_image(store, keys).to_csv(out / "per_image.csv", index=False)
    points = compression_points(store, keys)
    if len(points):
        from .figures import rate_accuracy_figures

        points.to_csv(out / "compression_points.csv", index=False)
        rate_accuracy_figures(points, out / "figures")
    run = store.latest_run()
    notes = ["", "Scores: mean over images ± half the 95% bootstrap interval (1000 resamples).",
             "Lower is better for " + ", ".join(sorted(LOWER_IS_BETTER)) + "; higher for the rest.",
             "Deletion/insertion settings: "
             + "; ".join(f"{k}: {v}" for k, v in DEFAULT_SETTINGS.items())
             + (f"; overrides: {run['config'].get('settings')}" if run.get("config", {}).get(
                 "settings") else "") + "."]  # fmt: skip
    if run:
        v = run["versions"]
        notes.append(f"Code {v.get('code')}, torch {v.get('torch')}, captum {v.get('captum')}, "
                     f"{v.get('threads')} threads on {v.get('machine')}.")  # fmt: skip
    (out / "leaderboard.md").write_text("# nicebench leaderboard\n\n" + to_markdown(board)
                                        + "\n".join(notes) + "\n")  # fmt: skip
    return board
