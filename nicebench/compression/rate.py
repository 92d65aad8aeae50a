"""Rate–accuracy figures (SPEC §6 steps 4–5): image quality, operating points, the headline ratio
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
    "bd_rate",
    "headline_ratio",
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


def pareto_front(nbytes: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats on both bytes and accuracy, by increasing accuracy.

    Both returned arrays are strictly increasing, so log-bytes is a function of accuracy that PCHIP
    can interpolate monotonically.
    """
    b = np.asarray(nbytes, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    ok = np.isfinite(b) & np.isfinite(a) & (b > 0)
    b, a = b[ok], a[ok]
    order = np.lexsort((-a, b))  # by bytes, then most accurate first
    keep, best = [], -np.inf
    for i in order:
        if a[i] > best:
            keep.append(i)
            best = a[i]
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
