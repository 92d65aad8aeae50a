"""The compression track's leaderboard summary (docs/design.md §6), from stored rows alone: no torch.

Rows are per image × operating point (:mod:`.track`), from any number of shards; everything here
is computed across them. :func:`analyse` reduces one method's (or codec's) rows, with the codec's
quality-sweep rows, to its **front** (the lowest bytes reaching each accuracy, over all its
operating points), the headline ratio with a bootstrap interval over images, the BD-rate of the
front against the codec's own curve and the operating point where the headline is reached;
:func:`summarise` returns its figures, :func:`summarise_table` does it for every row of a run's
``compression`` table and :func:`points_table` lists every operating point with its ``on_front``
flag. Only pandas, numpy and :mod:`.rate` (scipy, scikit-image) are needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .rate import bd_rate, bootstrap_weights, front_indices, headline_draws

__all__ = [
    "PointMatrices",
    "point_matrices",
    "analyse",
    "summarise",
    "summarise_table",
    "points_table",
    "paired_ratio",
    "versus_table",
    "random_sanity",
    "codec_suffix",
    "sanity_verdict",
    "N_BOOT",
]

N_BOOT = 1000
_PARAMS = ("mask", "keep", "quality", "factor")


@dataclass
class PointMatrices:
    """One leaderboard row's rows as matrices: ``[P, N]`` per operating point × image (images
    sorted, only those present at every point), ``[N]`` per image, ``points`` the points' table
    (``point``, ``mask``, ``keep``, ``quality``, ``factor``, ``area``, ``psnr``, ``ssim``, …)."""

    images: np.ndarray
    points: pd.DataFrame
    nbytes: np.ndarray
    payload: np.ndarray
    correct: np.ndarray
    ref_nbytes: np.ndarray
    ref_payload: np.ndarray
    ref_correct: np.ndarray
    orig_correct: np.ndarray

    def subset(self, images: np.ndarray) -> PointMatrices:
        """The same for ``images`` (a subset of :attr:`images`)."""
        idx = np.searchsorted(self.images, images)
        return PointMatrices(
            images,
            self.points,
            self.nbytes[:, idx],
            self.payload[:, idx],
            self.correct[:, idx],
            self.ref_nbytes[idx],
            self.ref_payload[idx],
            self.ref_correct[idx],
            self.orig_correct[idx],
        )

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct.mean(1)

    @property
    def ratio(self) -> np.ndarray:
        """Σbytes / Σreference-bytes per point."""
        return self.nbytes.sum(1) / self.ref_nbytes.sum()

    @property
    def mean_bytes(self) -> np.ndarray:
        return self.nbytes.mean(1)


def _col(rows: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return rows[name] if name in rows else pd.Series(default, index=rows.index)


def point_matrices(rows: pd.DataFrame | list[dict[str, Any]]) -> PointMatrices:
    """:class:`PointMatrices` of one leaderboard row's per-image rows."""
    rows = pd.DataFrame(rows)
    if rows.empty:
        raise ValueError("no compression rows")
    rows = rows.drop_duplicates(["point", "image"], keep="last").copy()
    rows["payload_bytes"] = _col(rows, "payload_bytes", rows["bytes"])
    rows["ref_payload_bytes"] = _col(rows, "ref_payload_bytes", rows["ref_bytes"])
    for p in _PARAMS:
        if p not in rows:
            rows[p] = np.nan if p != "mask" else ""
    wide = rows.pivot(
        index="point", columns="image", values=["bytes", "payload_bytes", "correct_compressed"]
    )
    complete = wide.notna().all(axis=0).groupby(level=1).all()
    images = np.sort(complete.index[complete.to_numpy()].to_numpy())
    if len(images) == 0:
        raise ValueError("no image has every operating point")
    order = list(dict.fromkeys(rows["point"]))
    wide = wide.reindex(index=order)

    def mat(name: str) -> np.ndarray:
        return wide[name].reindex(columns=images).to_numpy(dtype=float)

    per_image = (
        rows.groupby("image")[
            ["ref_bytes", "ref_payload_bytes", "correct_reference", "correct_original"]
        ]
        .first()
        .reindex(images)
    )
    g = rows[rows["image"].isin(images)].groupby("point", sort=False)
    agg = {p: (p, "first") for p in _PARAMS}
    for k in ("area", "psnr", "ssim", "psnr_mask", "ssim_mask", "psnr_object", "ssim_object"):
        if k in rows:
            agg[k] = (k, "mean")  # pandas' mean skips NaN: SSIM of the shards that computed it
    points = g.agg(**agg).reindex(order).reset_index()
    return PointMatrices(
        images=images,
        points=points,
        nbytes=mat("bytes"),
        payload=mat("payload_bytes"),
        correct=mat("correct_compressed"),
        ref_nbytes=per_image["ref_bytes"].to_numpy(dtype=float),
        ref_payload=per_image["ref_payload_bytes"].to_numpy(dtype=float),
        ref_correct=per_image["correct_reference"].to_numpy(dtype=float),
        orig_correct=per_image["correct_original"].to_numpy(dtype=float),
    )


def _headline(m: PointMatrices, ref_acc: float, tolerance: float) -> int | None:
    ok = np.flatnonzero(m.accuracy >= ref_acc - tolerance - 1e-12)
    if len(ok) == 0:
        return None
    ratio = m.ratio
    # the smallest ratio; ties by the higher accuracy (it is then the front's point)
    return int(ok[np.lexsort((-m.accuracy[ok], ratio[ok]))[0]])


def _interval(draws: np.ndarray) -> tuple[float, float, float]:
    """The (2.5%, 97.5%) percentiles of the draws (inverted CDF: no interpolation, so a draw of
    ``inf`` -- no point qualified in that resample -- makes the bound ``inf`` only when more than
    2.5% of the draws are) and the share of finite draws; NaN draws (undefined) are left out."""
    d = draws[~np.isnan(draws)]
    if len(d) == 0:
        return float("nan"), float("nan"), 0.0
    lo, hi = np.quantile(d, [0.025, 0.975], method="inverted_cdf")
    return float(lo), float(hi), float(np.isfinite(draws).mean())


def _no_point_is_inf(draws: np.ndarray) -> np.ndarray:
    """Headline draws with "no point qualifies" (NaN) as ``inf``: as bad as a ratio gets."""
    return np.where(np.isnan(draws), np.inf, draws)


def sanity_verdict(vs_uniform: float, vs_uniform_hi: float) -> str:
    """The protocol's check on a ``random`` row: ``"ok"`` when the paired interval of its ratio to
    uniform quality reaches 1 (no gain beyond its interval; ``inf``: random never reaches the
    accuracy, no gain either), ``"FAILED"`` when its upper bound is below 1, ``""`` when it can't
    be measured (NaN, or 0: uniform quality itself has no qualifying point)."""
    if vs_uniform is None or vs_uniform_hi is None:
        return ""
    if np.isnan(vs_uniform) or np.isnan(vs_uniform_hi) or vs_uniform == 0:
        return ""
    return "ok" if vs_uniform_hi >= 1.0 else "FAILED"


def analyse(
    points: pd.DataFrame | list[dict[str, Any]],
    sweep: pd.DataFrame | list[dict[str, Any]] | None,
    reference_accuracy: float | None = None,
    tolerance: float = 0.01,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The leaderboard figures of one method (or codec) and the table of its operating points.

    - ``compression_ratio``: the smallest Σbytes/Σreference-bytes on the front whose accuracy is
      ≥ ``reference_accuracy − tolerance`` (default: the accuracy on the decoded reference, one
      point); NaN when no point qualifies. ``compression_ratio_lo``/``_hi``: its 95% bootstrap
      interval (``n_boot`` resamples of the images, each recomputing every point's ratio and
      accuracy, the reference accuracy and so the front; a resample in which no point qualifies
      counts as ``inf``, so ``_hi`` is ``inf`` when over 2.5% of them don't;
      ``qualifying_share``: the share of resamples in which some point qualifies).
    - ``bd_rate``: :func:`~nicebench.compression.rate.bd_rate` of the front (mean bytes vs
      accuracy) against the codec's own curve ``sweep`` on the same images (PCHIP over the
      overlapping accuracy range; negative = fewer bytes at equal accuracy); ``bd_codec`` names
      the sweep's codec.
    - ``vs_uniform`` (``_lo``/``_hi``): the headline ratio over the sweep's own headline ratio, the
      interval from the same resamples of both (paired): below 1 = fewer bytes than uniform
      quality reduction at the 1-point rule; ``inf`` when the method never qualifies, 0 when only
      uniform quality never does.
    - ``front_mask``/``front_share``/``front_quality``/``front_factor``: the headline's operating
      point (the share is the top-k ``keep``, or the mean kept area of a gate mask); ``bpp``,
      ``payload_ratio`` (header left out), ``accuracy_compressed``, ``psnr``, ``ssim`` there (or
      at the most accurate point when none qualifies: ``within_tolerance`` False).
    - ``accuracy_original``/``accuracy_reference``: on the originals and the decoded reference.

    The points' table has one row per operating point: its parameters (``share``: the top-k
    ``keep``, or a gate mask's mean kept area; 1 for the codec's own curve), ``bytes`` (mean),
    ``ratio``, ``payload_ratio``, ``accuracy``, ``bpp``, ``psnr``, ``ssim``, ``on_front`` and
    ``headline``.
    """
    m = point_matrices(points)
    sw = point_matrices(sweep) if sweep is not None and len(pd.DataFrame(sweep)) else None
    ref_acc = (
        float(m.ref_correct.mean()) if reference_accuracy is None else float(reference_accuracy)
    )
    acc, ratio = m.accuracy, m.ratio
    front = front_indices(m.mean_bytes, acc)
    best = _headline(m, ref_acc, tolerance)
    within = best is not None
    at = best if best is not None else int(np.argmax(acc))
    pixels_bpp = _bpp_scale(points)
    w = bootstrap_weights(len(m.images), n_boot, seed)
    draws = headline_draws(w, m.nbytes, m.correct, m.ref_nbytes, m.ref_correct, tolerance)
    lo, hi, share = _interval(_no_point_is_inf(draws))
    out: dict[str, Any] = {
        "compression_ratio": float(ratio[best]) if within else float("nan"),
        "compression_ratio_lo": lo,
        "compression_ratio_hi": hi,
        "qualifying_share": share,
        "bd_rate": float("nan"),
        "bd_codec": "",
        "vs_uniform": float("nan"),
        "vs_uniform_lo": float("nan"),
        "vs_uniform_hi": float("nan"),
    }
    if sw is not None:
        common = np.intersect1d(m.images, sw.images)
        out["bd_codec"] = _codec_name(sweep)
        if len(common):
            mc, sc = m.subset(common), sw.subset(common)
            out["bd_rate"] = bd_rate(mc.mean_bytes, mc.accuracy, sc.mean_bytes, sc.accuracy)
            ra = float(mc.ref_correct.mean()) if reference_accuracy is None else ref_acc
            vs = _paired(mc, sc, ra, tolerance, n_boot, seed)
            out["vs_uniform"], out["vs_uniform_lo"], out["vs_uniform_hi"] = (
                vs["ratio"],
                vs["lo"],
                vs["hi"],
            )
    p = m.points.iloc[at]
    keep = p["keep"]
    share = float(keep) if pd.notna(keep) else float(p.get("area", np.nan))
    payload_ratio = m.payload[at].sum() / m.ref_payload.sum()
    out.update(
        {
            "front_mask": str(p["mask"]),
            "front_share": share,
            "front_quality": float(p["quality"]),
            "front_factor": float(p["factor"]),
            "bpp": float(m.mean_bytes[at] * pixels_bpp),
            "bpp_payload": float(m.payload[at].mean() * pixels_bpp),
            "payload_ratio": float(payload_ratio),
            "psnr": float(p.get("psnr", np.nan)),
            "ssim": float(p.get("ssim", np.nan)),
            "accuracy_original": float(m.orig_correct.mean()),
            "accuracy_reference": ref_acc,
            "accuracy_compressed": float(acc[at]),
            "operating_point": str(p["point"]),
            "within_tolerance": within,
            "n_images": len(m.images),
            "n_points": len(acc),
            "n_front": len(front),
            "reference_bytes": float(m.ref_nbytes.mean()),
        }
    )
    table = m.points.copy()
    area = table["area"] if "area" in table else pd.Series(np.nan, index=table.index)
    table["share"] = table["keep"].where(table["keep"].notna(), area)  # a gate's: its kept area
    table["bytes"] = m.mean_bytes
    table["ratio"] = ratio
    table["payload_ratio"] = m.payload.sum(1) / m.ref_payload.sum()
    table["accuracy"] = acc
    table["accuracy_reference"] = ref_acc
    table["bpp"] = m.mean_bytes * pixels_bpp
    table["n_images"] = len(m.images)
    table["on_front"] = False
    table.loc[table.index[front], "on_front"] = True
    table["headline"] = False
    if within:
        table.loc[table.index[best], "headline"] = True
    return out, table


def _bpp_scale(rows: pd.DataFrame | list[dict[str, Any]]) -> float:
    """bpp per byte: 8 / pixels, from the rows' own ``bpp`` and ``bytes`` (NaN without them)."""
    df = pd.DataFrame(rows)
    if "bpp" not in df or df.empty:
        return float("nan")
    b = df["bytes"].to_numpy(dtype=float)
    ok = b > 0
    return float(np.median(df["bpp"].to_numpy(dtype=float)[ok] / b[ok])) if ok.any() else np.nan


def _codec_name(rows: pd.DataFrame | list[dict[str, Any]]) -> str:
    df = pd.DataFrame(rows)
    return str(df["codec"].iloc[0]) if "codec" in df and len(df) else ""


def summarise(
    points: pd.DataFrame | list[dict[str, Any]],
    sweep: pd.DataFrame | list[dict[str, Any]] | None,
    reference_accuracy: float | None = None,
    tolerance: float = 0.01,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """The leaderboard figures of :func:`analyse` (without the points' table)."""
    return analyse(points, sweep, reference_accuracy, tolerance, n_boot, seed)[0]


def codec_suffix(label: str) -> str:
    """A codec's label as a column suffix: ``webp`` → ``webp``, ``jpeg:subsampling=4:4:4`` →
    ``jpeg_subsampling_4_4_4``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(label)).strip("_")


def _with_track_codec(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows stored before methods were coded with every codec name no ``track_codec``: a method
    row's is then its ``bd_codec``, a codec row's its own label."""
    if "track_codec" in rows and rows["track_codec"].notna().all():
        return rows
    rows = rows.copy()
    own = rows["method"].where(rows["kind"] == "codec", rows["bd_codec"])
    rows["track_codec"] = rows["track_codec"].fillna(own) if "track_codec" in rows else own
    return rows


def _groups(rows: pd.DataFrame):
    rows = _with_track_codec(rows)
    axes = [c for c in ("dataset", "model") if c in rows]  # a codec's sweep per classifier
    for where, part in rows.groupby(axes, sort=False):
        where = where if isinstance(where, tuple) else (where,)
        codec_rows = part[part["kind"] == "codec"]
        keys = ["method", "kind", "track_codec"]
        for (method, kind, track), mrows in part.groupby(keys, sort=False):
            sweep = codec_rows[codec_rows["method"] == track]
            head = {
                **dict(zip(axes, where, strict=True)),
                "method": method,
                "kind": kind,
                "track_codec": track,
                "bd_codec": str(mrows["bd_codec"].iloc[0]),
            }
            yield head, mrows, sweep


def summarise_table(rows: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per dataset (× model, when the rows have one) × leaderboard row × codec that coded it:
    :func:`summarise` of its rows against that codec's own quality sweep.

    ``rows`` are a run's ``compression`` rows with the columns ``dataset``, ``method`` (the row's
    label), ``kind`` (``"method"`` or ``"codec"``), ``track_codec`` (the label of the codec that
    coded the row: a method's rows come once per codec of the run, a codec's own sweep names
    itself) and ``bd_codec`` (the run's reference codec, its first). Each row is measured against
    the sweep of its own ``track_codec`` (WebP against WebP, not JPEG); a codec's row against
    itself has ``bd_rate`` 0. A row whose codec's sweep is missing (its cells failed) gets an
    empty ``bd_rate`` and ``bd_codec``. The result's ``bd_codec`` is the ``track_codec``;
    ``reference_codec`` the run's reference.
    """
    if rows.empty:
        return pd.DataFrame()
    out = []
    for head, mrows, sweep in _groups(rows):
        summary = summarise(mrows, sweep if len(sweep) else None, n_boot=n_boot, seed=seed)
        summary["bd_codec"] = head["track_codec"] if len(sweep) else ""
        if head["kind"] == "codec" and len(sweep):
            summary["bd_rate"] = 0.0  # its own curve, even when that has a single front point
        out.append({**head, "reference_codec": head["bd_codec"], **summary})
    df = pd.DataFrame(out)
    df["bd_codec"] = [s["bd_codec"] for s in out]
    return df


def paired_ratio(
    points: pd.DataFrame | list[dict[str, Any]],
    other: pd.DataFrame | list[dict[str, Any]],
    tolerance: float = 0.01,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, float]:
    """One row's headline ratio over another's (two methods coded with one codec, or a method
    and the codec's own curve) on the images both have: ``ratio``, its 95% interval over the same
    bootstrap resamples of those images for both (``lo``/``hi``, paired) and ``p_below``, the
    share of resamples in which the first needs fewer bytes. A row that never qualifies counts as
    ``inf``, as in :func:`analyse` (whose ``vs_uniform`` is this against the sweep)."""
    a, b = point_matrices(points), point_matrices(other)
    common = np.intersect1d(a.images, b.images)
    if len(common) == 0:
        raise ValueError("the two rows share no image")
    a, b = a.subset(common), b.subset(common)
    out = _paired(a, b, float(a.ref_correct.mean()), tolerance, n_boot, seed)
    return {**out, "n_images": len(common)}


def _paired(
    a: PointMatrices, b: PointMatrices, ref_acc: float, tolerance: float, n_boot: int, seed: int
) -> dict[str, float]:
    """``a``'s headline over ``b``'s (the same images): the ratio, its interval over the same
    resamples of both and the share of resamples in which ``a`` needs fewer bytes. A row that never
    qualifies needs unbounded bytes: ``inf`` when only ``a`` never does, 0 when only ``b`` never
    does (as its resamples), NaN when neither does."""
    ha, hb = _headline(a, ref_acc, tolerance), _headline(b, ref_acc, tolerance)
    if ha is None or hb is None:
        ratio = float("nan") if ha is None and hb is None else (0.0 if hb is None else np.inf)
    else:
        ratio = float(a.ratio[ha] / b.ratio[hb])
    w = bootstrap_weights(len(a.images), n_boot, seed)
    da, db = (
        _no_point_is_inf(
            headline_draws(w, m.nbytes, m.correct, m.ref_nbytes, m.ref_correct, tolerance)
        )
        for m in (a, b)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        paired = da / db  # inf/inf: NaN, left out
    lo, hi, _ = _interval(paired)
    defined = paired[~np.isnan(paired)]
    p_below = float((defined < 1).mean()) if len(defined) else float("nan")
    return {"ratio": ratio, "lo": lo, "hi": hi, "p_below": p_below}


def versus_table(
    rows: pd.DataFrame, against: str, n_boot: int = N_BOOT, seed: int = 0
) -> pd.DataFrame:
    """:func:`paired_ratio` of every row of a run's ``compression`` table against the row labelled
    ``against`` (a method or a codec) coded with the same codec, per dataset (× model): columns
    ``dataset`` (``model``), ``track_codec``, ``method``, ``kind``, ``versus`` and the figures."""
    groups = list(_groups(rows))
    out = []
    for head, mrows, _ in groups:
        base = [
            r
            for h, r, _ in groups
            if h["method"] == against
            and all(h.get(k) == head.get(k) for k in ("dataset", "model", "track_codec"))
        ]
        if head["method"] == against or not base:
            continue
        out.append(
            {
                **{k: v for k, v in head.items() if k != "bd_codec"},
                "versus": against,
                **paired_ratio(mrows, base[0], n_boot=n_boot, seed=seed),
            }
        )
    return pd.DataFrame(out)


def points_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Every operating point of every leaderboard row and codec (:func:`analyse`'s table), with
    ``dataset``, ``model``, ``method``, ``kind``, ``track_codec`` and the ``on_front`` flag."""
    if rows.empty:
        return pd.DataFrame()
    parts = []
    for head, mrows, _ in _groups(rows):
        _, table = analyse(mrows, None, n_boot=1)
        parts.append(table.assign(**{k: v for k, v in head.items() if k != "bd_codec"}))
    df = pd.concat(parts, ignore_index=True)
    first = ["dataset", "model", "method", "kind", "track_codec"]
    first = [c for c in first if c in df]
    return df[first + [c for c in df.columns if c not in first]]


def random_sanity(summary: pd.DataFrame, name: str = "random") -> list[str]:
    """The protocol's sanity check (docs/design.md §6): ``random`` must show no gain over uniform quality
    beyond its interval. One line per (dataset, model, codec) where a ``random`` row was coded:
    whether the paired interval of ``vs_uniform`` reaches 1 (no gain) and whether random's ratio
    lies within uniform's own interval."""
    if summary.empty or "method" not in summary:
        return []
    lines = []
    rows = summary[(summary["method"] == name) & (summary["kind"] == "method")]
    for _, r in rows.iterrows():
        where = " · ".join(str(r[c]) for c in ("dataset", "model", "track_codec") if c in r)
        uni = summary[
            (summary["kind"] == "codec")
            & (summary["method"] == r["track_codec"])
            & (summary["dataset"] == r["dataset"])
        ]
        if "model" in summary:
            uni = uni[uni["model"] == r["model"]]
        ratio, lo, hi = r["vs_uniform"], r["vs_uniform_lo"], r["vs_uniform_hi"]
        verdict = sanity_verdict(ratio, hi)
        if not verdict:
            lines.append(
                f"{where}: random vs uniform quality not measurable (uniform quality has "
                "no qualifying point)"
            )
            continue
        inside = ""
        if len(uni) and np.isfinite(r["compression_ratio"]):
            u = uni.iloc[0]
            within = (
                u["compression_ratio_lo"] <= r["compression_ratio"] <= u["compression_ratio_hi"]
            )
            inside = (
                f"; random {r['compression_ratio']:.3f}× is "
                f"{'within' if within else 'outside'} uniform's interval "
                f"[{u['compression_ratio_lo']:.3f}, {u['compression_ratio_hi']:.3f}]"
            )
        elif not np.isfinite(r["compression_ratio"]):
            inside = "; random never reaches the reference accuracy within the tolerance"
        text = (
            "ok (no gain beyond its interval)"
            if verdict == "ok"
            else "FAILED: random gains over uniform quality"
        )
        lines.append(
            f"{where}: sanity {text}: random/uniform = {ratio:.3f} [{lo:.3f}, {hi:.3f}]{inside}"
        )
    return lines
