"""A run's scores as tables, read from the store once per state of the store: the per-image
table and the compression track's summary and points (the bottom of the report: the leaderboard,
the validity audit, the trust tables and the figures read these)."""

from __future__ import annotations

import pandas as pd

from ..compression.summary import points_table, summarise_table
from ..store import RunStore

__all__ = ["ROW", "memo", "per_image", "compression_summary", "compression_points"]

ROW = ["dataset", "model", "method", "kind"]  # a leaderboard row
# Per-image columns that are not scores of the map (kept out of the score columns' CIs).
_RENAME = {"correct": "accuracy_original"}


# -- one computation per store state ---------------------------------------------------------------
# A run writes its tables, then its figures, then its report, and each reads the leaderboard, the
# per-image table and the compression summary (a bootstrap per method): computed once per state of
# the store and returned as copies.
_MEMO: dict[tuple, pd.DataFrame] = {}
_MEMO_SIZE = 12


def _store_state(store: RunStore) -> tuple:
    """What the tables are computed from: the store's file, its cells (key, status, when
    finished) and the count and sum of its values and the size of its tables (a value edited in
    place changes the sum)."""
    conn = store.conn
    cells = hash(tuple(conn.execute("SELECT key, status, finished_at FROM cells ORDER BY key")))
    sums = tuple(
        conn.execute(
            "SELECT (SELECT count(*) FROM image_values), (SELECT total(value) FROM image_values), "
            "(SELECT count(*) FROM cell_values), (SELECT total(value) FROM cell_values), "
            "(SELECT count(*) FROM tables), (SELECT total(length(data)) FROM tables)"
        ).fetchone()
    )
    return str(store.path.resolve()), cells, sums


def memo(name: str, store: RunStore, keys: set[str] | None, compute, *extra) -> pd.DataFrame:
    key = (name, _store_state(store), None if keys is None else frozenset(keys), *extra)
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = compute()
    return _MEMO[key].copy()


def per_image(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """One row per (dataset, model, method, image) with a column per metric."""
    return memo("per_image", store, keys, lambda: _per_image(store, keys))


def _per_image(store: RunStore, keys: set[str] | None) -> pd.DataFrame:
    long = store.image_values(keys)
    if long.empty:
        return pd.DataFrame(columns=[*ROW, "image_index", "label", "pred"])
    wide = long.pivot_table(
        index=[*ROW, "image_index", "label", "pred"],
        columns="metric",
        values="value",
        aggfunc="first",
    ).reset_index()
    wide.columns.name = None
    return wide.rename(columns=_RENAME)


def compression_summary(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """Per dataset × model × method or codec × codec that coded it (``track_codec``): the
    compression track's headline figures (docs/design.md §6), each measured against the quality sweep of its
    own codec on the same images, with bootstrap intervals. Torch-free."""
    return memo(
        "compression_summary",
        store,
        keys,
        lambda: summarise_table(store.tables("compression", keys)),
    )


def compression_points(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """Every method's and codec's operating points per (dataset, model, method, kind,
    track_codec): ``point``, ``mask``, ``keep`` (the top-k share; NaN for a gate mask), ``share``
    (``keep``, or a gate mask's mean kept area),
    ``quality``, ``factor`` (1 for the codec's own curve), ``area``, ``bytes`` (mean), ``ratio``,
    ``payload_ratio``, ``accuracy``, ``bpp``, ``psnr``, ``ssim`` (where computed), ``on_front``
    (the point is on the row's front: the lowest bytes reaching its accuracy) and ``headline``
    (the front's point of the headline ratio)."""
    return points_table(store.tables("compression", keys))
