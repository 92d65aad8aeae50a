"""Rate–accuracy figures (docs/design.md §6 steps 4–5): image quality, operating points, the headline ratio
and the Bjøntegaard-style delta against a codec's quality-sweep curve.

Accuracies are fractions in [0, 1]; "one point" is 0.01.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "image_quality",
    "operating_points",
    "pareto_front",
    "front_indices",
    "bd_rate",
    "headline_ratio",
    "bootstrap_weights",
    "headline_draws",
    "psnr_batch",
    "ssim_batch",
]


def _ssim_window(h: int, w: int) -> int:
    side = min(7, h, w)
    return side if side % 2 else side - 1


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(peak_signal_noise_ratio(a, b, data_range=255))


def image_quality(
    original: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """PSNR (dB) and SSIM of ``decoded`` against ``original`` (both ``uint8 [B,H,W,C]``).

    With ``mask`` (bool ``[B,H,W]``) also ``psnr_mask`` (PSNR over the masked pixels) and
    ``ssim_mask`` (the mean of scikit-image's SSIM map over them); NaN where a mask is empty.
    Identical images give ``inf`` PSNR. SSIM uses a 7-px window (smaller on tinier images).
    """
    b, h, w, c = original.shape
    win = _ssim_window(h, w)
    out = {k: np.full(b, np.nan) for k in ("psnr", "ssim", "psnr_mask", "ssim_mask")}
    for i in range(b):
        x, y = original[i], decoded[i]
        out["psnr"][i] = _psnr(x, y)
        if win < 3:
            continue
        score, smap = structural_similarity(
            x, y, data_range=255, channel_axis=-1, win_size=win, full=True
        )
        out["ssim"][i] = score
        if mask is not None and mask[i].any():
            m = mask[i]
            out["psnr_mask"][i] = _psnr(x[m], y[m])
            out["ssim_mask"][i] = float(smap[m].mean())
    if mask is None:
        del out["psnr_mask"], out["ssim_mask"]
    return out


def operating_points(rows: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Aggregate per-image rows into operating points (one row per value of ``by``).

    ``ratio`` and ``payload_ratio`` are ratios of totals (Σ bytes / Σ reference bytes), ``bpp``
    and ``bytes`` means, accuracies the share of correct predictions.
    """
    g = rows.groupby(by, sort=True, dropna=False)
    agg = g.agg(
        n_images=("bytes", "size"),
        bytes=("bytes", "mean"),
        ref_bytes=("ref_bytes", "mean"),
        payload_bytes=("payload_bytes", "mean"),
        ref_payload_bytes=("ref_payload_bytes", "mean"),
        bpp=("bpp", "mean"),
        bpp_payload=("bpp_payload", "mean"),
        accuracy=("correct_compressed", "mean"),
        accuracy_reference=("correct_reference", "mean"),
        accuracy_original=("correct_original", "mean"),
        agreement=("agree_original", "mean"),
        psnr=("psnr", "mean"),
        ssim=("ssim", "mean"),
    )
    agg["ratio"] = agg["bytes"] / agg["ref_bytes"]
    agg["payload_ratio"] = agg["payload_bytes"] / agg["ref_payload_bytes"]
    return agg.reset_index()


def front_indices(nbytes: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the front: the lowest bytes reaching each accuracy, by increasing bytes.

    A point is on the front when every point with fewer bytes (or as many, listed first when more
    accurate) is strictly less accurate; non-finite or non-positive bytes are left out. Bytes and
    accuracy both strictly increase along the returned indices.
    """
    b = np.asarray(nbytes, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    idx = np.flatnonzero(np.isfinite(b) & np.isfinite(a) & (b > 0))
    if len(idx) == 0:
        return idx
    idx = idx[np.lexsort((-a[idx], b[idx]))]  # by bytes, then most accurate first
    acc = a[idx]
    prev_best = np.concatenate(([-np.inf], np.maximum.accumulate(acc)[:-1]))
    return idx[acc > prev_best]


def pareto_front(nbytes: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats on both bytes and accuracy, by increasing accuracy.

    Both returned arrays are strictly increasing, so log-bytes is a function of accuracy that PCHIP
    can interpolate monotonically.
    """
    b = np.asarray(nbytes, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    keep = front_indices(b, a)
    return b[keep], a[keep]


def bd_rate(
    nbytes: np.ndarray, accuracy: np.ndarray, ref_nbytes: np.ndarray, ref_accuracy: np.ndarray
) -> float:
    """Bjøntegaard-style delta rate of a curve against a reference curve at equal accuracy.

    Each curve is reduced to its :func:`pareto_front`; log-bytes is interpolated as a function of
    accuracy with scipy's ``PchipInterpolator`` and integrated over the overlapping accuracy range.
    Returns ``exp(mean Δ log bytes) − 1``: **negative = fewer bytes than the reference curve**
    (−0.2 means 20% of the bytes saved at equal accuracy), positive = more. NaN when a front has
    fewer than two points or the accuracy ranges do not overlap.
    """
    b1, a1 = pareto_front(nbytes, accuracy)
    b2, a2 = pareto_front(ref_nbytes, ref_accuracy)
    if len(a1) < 2 or len(a2) < 2:
        return float("nan")
    lo, hi = max(a1[0], a2[0]), min(a1[-1], a2[-1])
    if not hi > lo:
        return float("nan")
    i1 = PchipInterpolator(a1, np.log(b1)).integrate(lo, hi)
    i2 = PchipInterpolator(a2, np.log(b2)).integrate(lo, hi)
    return float(np.expm1((i1 - i2) / (hi - lo)))


def headline_ratio(
    ratio: np.ndarray, accuracy: np.ndarray, reference_accuracy: float, tolerance: float = 0.01
) -> tuple[float, int | None]:
    """The smallest ``ratio`` whose ``accuracy`` ≥ ``reference_accuracy − tolerance``.

    Returns ``(ratio, index)``, or ``(nan, None)`` when no operating point qualifies.
    """
    r = np.asarray(ratio, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    ok = np.flatnonzero(a >= reference_accuracy - tolerance - 1e-12)
    if len(ok) == 0:
        return float("nan"), None
    best = int(ok[np.argmin(r[ok])])
    return float(r[best]), best


def bootstrap_weights(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` counts: how often each of ``n`` images is drawn in each resample (each row
    sums to ``n``). The same ``(n, n_boot, seed)`` give the same draws, so two rows of a
    leaderboard over the same images are resampled in pairs."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = draws + n * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def headline_draws(
    weights: np.ndarray,
    nbytes: np.ndarray,
    correct: np.ndarray,
    ref_nbytes: np.ndarray,
    ref_correct: np.ndarray,
    tolerance: float = 0.01,
) -> np.ndarray:
    """The headline ratio recomputed on each resample of images.

    ``weights``: ``[R, N]`` image counts (:func:`bootstrap_weights`); ``nbytes``/``correct``:
    ``[P, N]`` per operating point and image; ``ref_nbytes``/``ref_correct``: ``[N]`` of the
    reference. Per resample, each point's ratio Σbytes/Σreference-bytes and accuracy and the
    reference accuracy are recomputed, and the smallest ratio of a point within ``tolerance`` of
    the reference accuracy is taken (the front's, since the smallest qualifying ratio is always
    on the front). Returns ``[R]``, NaN where no point qualifies in a resample.
    """
    w = np.asarray(weights, dtype=float)
    n = w.sum(1, keepdims=True)
    ratio = (w @ np.asarray(nbytes, dtype=float).T) / (w @ np.asarray(ref_nbytes, dtype=float))[
        :, None
    ]
    acc = (w @ np.asarray(correct, dtype=float).T) / n
    ref_acc = (w @ np.asarray(ref_correct, dtype=float))[:, None] / n
    ok = acc >= ref_acc - tolerance - 1e-12
    best = np.where(ok, ratio, np.inf).min(1)
    return np.where(np.isfinite(best), best, np.nan)


def psnr_batch(
    original: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Per-image PSNR (dB, peak 255) of ``uint8 [B,H,W,C]`` arrays, vectorised; with a bool
    ``mask`` ``[B,H,W]`` over the masked pixels only (NaN where a mask is empty). Identical images
    give ``inf``, as :func:`image_quality`."""
    d = original.astype(np.float32) - decoded.astype(np.float32)
    sq = (d * d).sum(-1)  # [B,H,W]
    c = original.shape[-1]
    if mask is None:
        mse = sq.reshape(len(sq), -1).mean(1) / c
    else:
        m = mask.reshape(sq.shape)
        cnt = m.reshape(len(m), -1).sum(1) * c
        tot = (sq * m).reshape(len(sq), -1).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mse = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mse > 0, 10 * np.log10(255.0**2 / np.where(mse > 0, mse, 1)), np.inf)
    return np.where(np.isnan(mse), np.nan, out)


def ssim_batch(
    original: np.ndarray,
    decoded: np.ndarray,
    masks: dict[str, np.ndarray] | None = None,
    chunk: int = 32,
) -> dict[str, np.ndarray]:
    """Per-image SSIM of ``uint8 [B,H,W,C]`` arrays, batched: the same figures as
    :func:`image_quality` (scikit-image's ``structural_similarity``: 7-px uniform window, sample
    covariance, K1 = 0.01, K2 = 0.03, data range 255, borders reflected, the mean taken over the
    image less a 3-px border, channels averaged) with one filter call per chunk of images instead
    of one per image. ``masks``: name → bool ``[B,H,W]``; each adds ``name`` = the mean of the SSIM
    map over the masked pixels (NaN where empty). Returns ``{"ssim": [B], **{name: [B]}}``; all
    NaN when a side is under 3 px."""
    from scipy.ndimage import uniform_filter1d

    b, h, w, c = original.shape
    win = _ssim_window(h, w)
    out = {"ssim": np.full(b, np.nan)}
    for name in masks or {}:
        out[name] = np.full(b, np.nan)
    if win < 3:
        return out
    pad = (win - 1) // 2
    cov_norm = win * win / (win * win - 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def box(a: np.ndarray) -> np.ndarray:  # the 2-D uniform filter of each image and channel
        return uniform_filter1d(
            uniform_filter1d(a, win, axis=1, mode="reflect"), win, axis=2, mode="reflect"
        )

    for s in range(0, b, chunk):
        x = original[s : s + chunk].astype(np.float64)
        y = decoded[s : s + chunk].astype(np.float64)
        n = len(x)
        ux, uy = box(x), box(y)
        vx = cov_norm * (box(x * x) - ux * ux)
        vy = cov_norm * (box(y * y) - uy * uy)
        vxy = cov_norm * (box(x * y) - ux * uy)
        smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        out["ssim"][s : s + n] = smap[:, pad : h - pad, pad : w - pad].mean((1, 2)).mean(1)
        pix = smap.mean(-1)  # [n, H, W], channels averaged
        for name, m in (masks or {}).items():
            mm = m[s : s + n].reshape(n, h, w)
            cnt = mm.reshape(n, -1).sum(1)
            tot = (pix * mm).reshape(n, -1).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name][s : s + n] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return out
