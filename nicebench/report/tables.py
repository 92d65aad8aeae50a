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

from ..bootstrap import bootstrap_ci
from ..compression.summary import (
    codec_suffix,
    random_sanity,
    sanity_verdict,
)
from ..metric_spec import DEFAULT_SETTINGS, ROAD_SETTINGS, SRG_SETTINGS
from ..store import RunStore
from .ablation import write_ablation
from .agreement import write_fill_agreement
from .columns import Catalogue, catalogue
from .scores import ROW, compression_points, compression_summary, memo, per_image
from .trust import combined_rank_note, combined_ranks, write_trust_tables
from .validity import not_valid, rank_exclusions, validity, validity_notes, write_validity

__all__ = [
    "LEADERBOARD_COLUMNS",
    "leaderboard",
    "per_image",
    "write_tables",
    "to_markdown",
    "compression_summary",
    "compression_points",
    "higher_is_better",
    "lower_is_better",
]

LEADERBOARD_COLUMNS = [
    "dataset",
    "model",
    "method",
    "kind",
    "n_images",
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "mask_auroc",
    "saliency_metric",
    "sanity_spearman",
    "explain_ms_per_image",
    "compression_ratio",
    "bd_rate",
    "bd_codec",
    "bpp",
    "accuracy_original",
    "accuracy_compressed",
    "status",
]
_ROW = ROW
# the reference codec's figures, under these names in the leaderboard
_COMPRESSION_COLUMNS = [
    "compression_ratio",
    "bd_rate",
    "bd_codec",
    "bpp",
    "accuracy_compressed",
    "payload_ratio",
    "accuracy_reference",
    "operating_point",
    "within_tolerance",
    "compression_ratio_lo",
    "compression_ratio_hi",
    "vs_uniform",
    "vs_uniform_lo",
    "vs_uniform_hi",
    "front_mask",
    "front_share",
    "front_quality",
    "front_factor",
]
# every other codec's, with the codec's label as a suffix (compression_ratio_webp, ...)
_OTHER_CODEC_COLUMNS = [
    "compression_ratio",
    "compression_ratio_lo",
    "compression_ratio_hi",
    "bd_rate",
    "payload_ratio",
    "vs_uniform",
]


def higher_is_better(store: RunStore | None = None) -> dict[str, bool]:
    """Column → whether higher is better: the run's metrics (its stored catalogue,
    :mod:`nicebench.report.columns`), then the report's own columns."""
    return _catalogue(store).higher_is_better()


def lower_is_better(columns, store: RunStore | None = None) -> list[str]:
    """The sorted columns among ``columns`` for which lower is better."""
    return _catalogue(store).lower_is_better(columns)


def _catalogue(store: RunStore | None) -> Catalogue:
    return catalogue(store) if store is not None else Catalogue.from_registry()


def _status(group: pd.DataFrame) -> str:
    failed = group[group.status != "ok"]
    if failed.empty:
        return "ok"
    return f"failed {len(failed)}/{len(group)} cells: {failed.error.iloc[0][:200]}"


def _suffixed(column: str, suffix: str) -> str:
    """``compression_ratio_lo`` + ``webp`` → ``compression_ratio_webp_lo`` (intervals stay last)."""
    for end in ("_lo", "_hi"):
        if column.endswith(end):
            return f"{column[: -len(end)]}_{suffix}{end}"
    return f"{column}_{suffix}"


def _compression_columns(comp: pd.DataFrame) -> pd.DataFrame:
    """One row per leaderboard row: the reference codec's figures (a codec row: its own), then
    ``<figure>_<codec>`` for every other codec that coded a method row, and ``sanity`` on the
    ``random`` rows (the protocol's check, :func:`~nicebench.compression.summary.random_sanity`)."""
    own = comp["track_codec"] == comp["reference_codec"]
    own |= (comp["kind"] == "codec") & (comp["track_codec"] == comp["method"])
    main = comp[own][[*_ROW, *_COMPRESSION_COLUMNS, "accuracy_original"]]
    main = main.drop_duplicates(_ROW, keep="first")
    others = comp[~own & (comp["kind"] == "method")]
    for track, part in others.groupby("track_codec", sort=False):
        suffix = codec_suffix(track)
        names = {c: _suffixed(c, suffix) for c in _OTHER_CODEC_COLUMNS}
        cols = part[[*_ROW, *_OTHER_CODEC_COLUMNS]].rename(columns=names)
        main = main.merge(cols, on=_ROW, how="outer")
    random = (main["method"] == "random") & (main["kind"] == "method")
    main["sanity"] = [
        sanity_verdict(float(v), float(h)) if is_random else ""
        for is_random, v, h in zip(random, main["vs_uniform"], main["vs_uniform_hi"], strict=True)
    ]
    return main


def leaderboard(store: RunStore, keys: set[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per dataset × model × method: mean of every per-image score with a 95% bootstrap
    CI, and the ``combined_rank`` over the metrics (:func:`nicebench.report.trust.analyse`)."""
    return memo("leaderboard", store, keys, lambda: _leaderboard(store, keys, seed), seed)


def _leaderboard(store: RunStore, keys: set[str] | None, seed: int) -> pd.DataFrame:
    cells = store.cells(keys)
    if cells.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    img = per_image(store, keys)
    scalars = store.cell_values(keys)
    rows = []
    order = list(
        dict.fromkeys(zip(cells.dataset, cells.model, cells.method, cells.kind, strict=True))
    )
    for dataset, model, method, kind in order:
        row: dict[str, object] = {
            "dataset": dataset,
            "model": model,
            "method": method,
            "kind": kind,
        }
        group = cells[_is_row(cells, row)]
        ok = group[group.status == "ok"]
        sel = img[_is_row(img, row)] if len(img) else img
        row["n_images"] = int(sel.image_index.nunique()) if len(sel) else 0
        for col in sel.columns:
            if col in (*_ROW, "image_index", "label", "pred"):
                continue
            mean, lo, hi, n = bootstrap_ci(sel[col].to_numpy(), seed=seed)
            if n == 0:
                continue
            row[col], row[f"{col}_lo"], row[f"{col}_hi"] = mean, lo, hi
        if len(ok):
            w = ok.n_images.to_numpy(dtype=float)
            ms = pd.to_numeric(ok.explain_ms_per_image).to_numpy(dtype=float)  # NULL → NaN
            row["explain_ms_per_image"] = float(np.average(ms, weights=w))
        if len(scalars):
            part = scalars[_is_row(scalars, row)]
            for name, value in part.groupby("name").value.mean().items():
                row[name] = value
        row["status"] = _status(group)
        rows.append(row)
    df = pd.DataFrame(rows)
    comp = compression_summary(store, keys)
    if len(comp):
        comp = _compression_columns(comp).rename(columns={"accuracy_original": "_acc"})
        df = df.drop(columns=[c for c in comp.columns if c in df and c not in _ROW]).merge(
            comp, on=_ROW, how="left"
        )
        if "accuracy_original" not in df:
            df["accuracy_original"] = df["_acc"]
        df["accuracy_original"] = df["accuracy_original"].fillna(df["_acc"])
        df = df.drop(columns="_acc")
    exclude = rank_exclusions(validity(store, keys))  # metrics not valid on a dataset
    df = df.merge(
        combined_ranks(img, seed=seed, exclude=exclude, catalogue=catalogue(store)),
        on=_ROW,
        how="left",
    )
    for col in LEADERBOARD_COLUMNS:
        if col not in df:
            df[col] = np.nan
    extras = [c for c in df.columns if c not in LEADERBOARD_COLUMNS]
    main = [c for c in LEADERBOARD_COLUMNS if c != "status"]
    ci = [c for c in extras if c.endswith(("_lo", "_hi"))]
    other = [c for c in extras if c not in ci]
    return df[main + other + ["status"] + ci]


def _is_row(df: pd.DataFrame, row: dict[str, object]) -> pd.Series:
    """The rows of ``df`` that belong to leaderboard row ``row`` (same dataset, model, method
    or codec)."""
    return (
        (df.dataset == row["dataset"])
        & (df.model == row["model"])
        & (df.method == row["method"])
        & (df.kind == row["kind"])
    )


def _fmt(value: float, lo: float | None, hi: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" ±{(hi - lo) / 2:.3f}"
    return text


MARK = "†"  # a score of a metric that is not valid on its dataset (validity.md)


def to_markdown(
    board: pd.DataFrame, marks: dict[tuple[str, str], dict[str, str]] | None = None
) -> str:
    """The leaderboard as a Markdown table (mean ± half the 95% interval), empty columns dropped;
    ``marks``: (dataset, model) → the metric columns not valid there, whose values get
    :data:`MARK` (:func:`nicebench.report.validity.not_valid`)."""
    marks = marks or {}
    cols = [c for c in board.columns if not c.endswith(("_lo", "_hi"))]
    cols = [c for c in cols if c in (*_ROW, "status") or board[c].notna().any()]
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
                text = _fmt(v, r.get(f"{c}_lo"), r.get(f"{c}_hi"))
                bad = marks.get((r["dataset"], r["model"]), {})
                cells.append(f"{text} {MARK}" if text and c in bad else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(store: RunStore, keys: set[str] | None, out: str | Path) -> pd.DataFrame:
    """Write ``leaderboard.csv``, ``leaderboard.md``, ``per_image.csv``, the ranking-trust tables
    (:func:`nicebench.report.trust.write_trust_tables`), with the compression track
    ``compression_points.csv`` and, with two or more fill columns (deletion, ROAD, SRG),
    ``fill_agreement.csv``/``.md`` (:mod:`nicebench.report.agreement`) and, where the run sets
    ``baseline``, ``ablation.csv``/``.md`` (:mod:`nicebench.report.ablation`) into ``out`` (the figures:
    :func:`nicebench.report.figures.write_figures`)."""
    out = Path(out)
    board = leaderboard(store, keys)
    board.to_csv(out / "leaderboard.csv", index=False)
    img = per_image(store, keys)
    img.to_csv(out / "per_image.csv", index=False)
    valid = write_validity(store, keys, out)  # validity.csv, validity.md
    cat = catalogue(store)
    trust = write_trust_tables(
        img, out, exclude=rank_exclusions(valid), catalogue=cat
    )  # rank_probability.*, ...
    points = compression_points(store, keys)
    sanity: list[str] = []
    if len(points):  # drawn by nicebench.report.figures.write_figures
        sanity = random_sanity(compression_summary(store, keys))
        points.to_csv(out / "compression_points.csv", index=False)
    run = store.latest_run()
    notes = [
        "",
        *validity_notes(store, keys, valid),
        "Scores: mean over images ± half the 95% bootstrap interval (1000 resamples).",
        "Lower is better for "
        + ", ".join(cat.lower_is_better(board.columns))
        + "; higher for the rest.",
        "Deletion/insertion settings: "
        + "; ".join(f"{k}: {v}" for k, v in DEFAULT_SETTINGS.items())
        + (
            f"; overrides: {run['config'].get('settings')}"
            if run.get("config", {}).get("settings")
            else ""
        )
        + ".",
        combined_rank_note(trust),
        "How far each ranking can be trusted: `rank_probability.md` (P(method ranks "
        "above method) per metric) and `metric_agreement.md` (Kendall τ between the "
        "metrics' rankings).",
    ]
    notes += _road_srg_notes(board)
    notes += cat.notes(board.columns)
    if sanity:
        notes.append(
            "Compression track: ratios are the front's smallest bytes / bytes of the "
            "codec at q75 on the originals with accuracy within 1 point of it (95% "
            "bootstrap interval over images); `random` must show no gain over uniform "
            "quality (the codec's own curve) beyond its interval:"
        )
        notes += [f"- {line}" for line in sanity]
    if run:
        v = run["versions"]
        notes.append(
            f"Code {v.get('code')}, torch {v.get('torch')}, captum {v.get('captum')}, "
            f"{v.get('threads')} threads on {v.get('machine')}."
        )
    (out / "leaderboard.md").write_text(
        "# nicebench leaderboard\n\n"
        + to_markdown(board, not_valid(valid))
        + "\n".join(notes)
        + "\n"
    )
    write_fill_agreement(board, out)
    write_ablation(store, keys, out, board)  # with a `baseline` setting: ablation.csv, .md
    return board


def _road_srg_notes(board: pd.DataFrame) -> list[str]:
    """The footnote lines naming the ROAD and SRG settings, when the board has their columns."""
    notes = []
    if any(c in board and board[c].notna().any() for c in ("road_morf", "road_lerf", "srg_road")):
        notes.append(
            "ROAD settings: " + "; ".join(f"{k}: {v}" for k, v in ROAD_SETTINGS.items()) + "."
        )
    if any(
        c in board and board[c].notna().any()
        for c in ("srg_mean", "srg_blur", "srg_road", "deletion_blur_auc")
    ):
        notes.append(
            "SRG settings: "
            + "; ".join(f"{k}: {v}" for k, v in SRG_SETTINGS.items())
            + "; rank agreement between fills: fill_agreement.md."
        )
    return notes
