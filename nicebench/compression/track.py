"""What the runner calls for the compression track: per-image rows for a method's operating points,
per-image rows for a codec's quality sweep, and the per-method summary for the leaderboard.

Rows of both kinds share their columns, so :func:`nicebench.compression.rate.operating_points`
aggregates either. Pass the same images to both so the curves are comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models import predict
from . import compress
from .codecs import (
    Coded,
    check_codec,
    check_quality,
    check_subsampling,
    roundtrip,
    to_uint8,
)
from .rate import bd_rate, headline_ratio, image_quality, operating_points

__all__ = ["compression_rows", "quality_sweep_rows", "summarise", "DEFAULT_KEEPS", "SWEEP"]

DEFAULT_KEEPS = (0.05, 0.1, 0.2, 0.3, 0.5)
SWEEP = tuple(range(5, 96, 5))


def _labels(labels: torch.Tensor | Sequence[int], n: int) -> np.ndarray:
    y = torch.as_tensor(labels).reshape(-1).cpu().numpy().astype(np.int64)
    if len(y) != n:
        raise ValueError(f"labels: {len(y)} labels for {n} images")
    return y


def _predict(model: nn.Module, arr: np.ndarray, batch_size: int) -> np.ndarray:
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return predict(model, x, batch_size=batch_size).numpy()


def _base(
    y: np.ndarray, pred_orig: np.ndarray, pred_ref: np.ndarray, ref: Coded, pixels: int
) -> dict[str, np.ndarray]:
    return {
        "image": np.arange(len(y)), "label": y,
        "ref_bytes": ref.nbytes, "ref_header_bytes": ref.header,
        "ref_payload_bytes": ref.nbytes - ref.header, "ref_bpp": 8.0 * ref.nbytes / pixels,
        "pred_original": pred_orig, "pred_reference": pred_ref,
        "correct_original": pred_orig == y, "correct_reference": pred_ref == y,
    }  # fmt: skip


def _outcome(pred: np.ndarray, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "pred_compressed": pred,
        "correct_compressed": pred == base["label"],
        "agree_original": pred == base["pred_original"],
        "agree_reference": pred == base["pred_reference"],
    }


def _records(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    frame = pd.DataFrame({k: (v if np.ndim(v) else [v] * n) for k, v in columns.items()})
    return frame.to_dict("records")


def compression_rows(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    saliency: torch.Tensor | None,
    *,
    gt_masks: torch.Tensor | None = None,
    codec: str = "jpeg",
    quality: int = 75,
    keeps: Iterable[float] = DEFAULT_KEEPS,
    factor: int = 4,
    dilate: int = 0,
    subsampling: str = "4:2:0",
    block: int | None = None,
    upsample: str = "auto",
    binary_mask: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Per image × operating point: one row of rate, quality and accuracy figures.

    Operating points: the top-``keep`` share of ``saliency`` for each ``keep`` (``point`` =
    ``"keep=0.2"``), plus, when ``binary_mask`` is given (a method's own gate mask, z ≥ 0.5), the
    point ``"gate"`` with ``keep`` NaN (an image whose gates are all closed is coded wholly at low
    resolution: area 0, ``psnr_mask`` NaN). ``saliency`` may be None when only ``binary_mask`` is
    used.
    ``gt_masks`` (``[B,1,H,W]``, 0/1) adds ``psnr_object``/``ssim_object`` inside the ground-truth
    object, the same region for every method. The reference (originals, same settings) and the
    predictions on it are computed once. Columns: image, label, point, keep, area, codec, quality,
    subsampling, factor, dilate, block, bytes, ref_bytes, header_bytes, payload_bytes, ratio,
    payload_ratio, bpp, bpp_payload, ref_bpp, psnr, ssim, psnr_mask, ssim_mask, pred_*, correct_*
    (original, reference, compressed), agree_original, agree_reference.
    """
    codec = check_codec(codec)
    quality = check_quality(quality)
    subsampling = check_subsampling(codec, subsampling)
    arr = to_uint8(images)
    n, h, w = arr.shape[:3]
    y = _labels(labels, n)
    ref = roundtrip(arr, codec, quality, subsampling)
    base = _base(y, _predict(model, arr, batch_size), _predict(model, ref.decoded, batch_size),
                 ref, h * w)  # fmt: skip
    gt = None if gt_masks is None else (gt_masks.reshape(n, h, w) > 0.5).cpu().numpy()
    points: list[tuple[str, float, torch.Tensor]] = []
    if saliency is not None:
        points += [(f"keep={k:g}", float(k), saliency) for k in keeps]
    if binary_mask is not None:
        points.append(("gate", float("nan"), binary_mask.reshape(n, 1, h, w) > 0.5))
    if not points:
        raise ValueError("compression_rows: pass saliency (with keeps) or binary_mask")
    rows: list[dict[str, Any]] = []
    for name, keep, drive in points:
        res = compress(
            images, drive, keep=keep if name != "gate" else 0.2, codec=codec, quality=quality,
            factor=factor, dilate=dilate, subsampling=subsampling, block=block, seed=seed,
            upsample=upsample, allow_empty=name == "gate", reference=ref,
        )  # fmt: skip
        dec = to_uint8(res.decoded)
        cols: dict[str, Any] = {**base, "point": name, **res.settings, "keep": keep}
        cols.update(res.to_frame().drop(columns=["ref_bytes", "ref_header_bytes",
                                                 "ref_payload_bytes"]).to_dict("list"))  # fmt: skip
        if gt is not None:
            q = image_quality(arr, dec, gt)
            cols["psnr_object"], cols["ssim_object"] = q["psnr_mask"], q["ssim_mask"]
        cols.update(_outcome(_predict(model, dec, batch_size), base))
        rows += _records(cols, n)
    return rows


def quality_sweep_rows(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    codec: str = "jpeg",
    qualities: Iterable[int] = SWEEP,
    *,
    subsampling: str = "4:2:0",
    reference_quality: int = 75,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Per image × quality: the whole image coded at each quality (the codec-only baseline).

    ``ratio`` is relative to the same images at ``reference_quality``; the columns match
    :func:`compression_rows` (``point`` = ``"q=50"``, ``keep`` = 1, ``area`` = 1).
    """
    codec = check_codec(codec)
    subsampling = check_subsampling(codec, subsampling)
    qs = [check_quality(q) for q in qualities]
    reference_quality = check_quality(reference_quality)
    arr = to_uint8(images)
    n, h, w = arr.shape[:3]
    y = _labels(labels, n)
    coded = {q: roundtrip(arr, codec, q, subsampling) for q in sorted(set(qs))}
    ref = coded.get(reference_quality)
    if ref is None:
        ref = roundtrip(arr, codec, reference_quality, subsampling)
    pred_ref = _predict(model, ref.decoded, batch_size)
    base = _base(y, _predict(model, arr, batch_size), pred_ref, ref, h * w)
    rows: list[dict[str, Any]] = []
    for q in qs:
        c = coded[q]
        iq = image_quality(arr, c.decoded)
        pred = pred_ref if q == reference_quality else _predict(model, c.decoded, batch_size)
        cols: dict[str, Any] = {
            **base, "point": f"q={q}", "keep": 1.0, "area": 1.0, "codec": codec, "quality": q,
            "subsampling": subsampling, "factor": 1, "upsample": "none", "dilate": 0, "block": 0,
            "bytes": c.nbytes, "header_bytes": c.header, "payload_bytes": c.nbytes - c.header,
            "ratio": c.nbytes / ref.nbytes,
            "payload_ratio": (c.nbytes - c.header) / (ref.nbytes - ref.header),
            "bpp": 8.0 * c.nbytes / (h * w), "bpp_payload": 8.0 * (c.nbytes - c.header) / (h * w),
            "psnr": iq["psnr"], "ssim": iq["ssim"],
            "psnr_mask": iq["psnr"], "ssim_mask": iq["ssim"],
            **_outcome(pred, base),
        }  # fmt: skip
        rows += _records(cols, n)
    return rows


def summarise(
    points: pd.DataFrame | list[dict[str, Any]],
    sweep: pd.DataFrame | list[dict[str, Any]],
    reference_accuracy: float | None = None,
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """The leaderboard figures of one method from its rows and the codec's quality-sweep rows.

    - ``compression_ratio``: the smallest Σbytes/Σreference-bytes among the operating points whose
      accuracy is ≥ ``reference_accuracy − tolerance`` (default: the accuracy on the decoded
      reference, one point); **NaN when no operating point qualifies**.
    - ``bd_rate_vs_jpeg``: :func:`~nicebench.compression.rate.bd_rate` of the operating points
      (mean bytes vs accuracy) against the sweep; negative = fewer bytes than uniform-quality coding
      at equal accuracy, positive = uniform quality reduction beats the method. The sweep's codec
      is in ``bd_codec``.
    - ``bpp``, ``payload_ratio``, ``accuracy_compressed``, ``psnr``, ``ssim``: at the headline
      operating point (named in ``operating_point``), or at the most accurate point when none
      qualifies (``within_tolerance`` False).
    - ``accuracy_original``/``accuracy_reference``: on the originals and the decoded reference.
    """
    pts_rows = pd.DataFrame(points)
    sweep_rows = pd.DataFrame(sweep)
    pts = operating_points(pts_rows, "point")
    sw = operating_points(sweep_rows, "quality")
    ref_acc = (
        float(pts_rows["correct_reference"].mean())
        if reference_accuracy is None
        else float(reference_accuracy)
    )
    ratio, best = headline_ratio(pts["ratio"], pts["accuracy"], ref_acc, tolerance)
    within = best is not None
    if best is None:
        best = int(np.argmax(pts["accuracy"].to_numpy()))
    at = pts.iloc[best]
    return {
        "compression_ratio": ratio,
        "bd_rate_vs_jpeg": bd_rate(pts["bytes"], pts["accuracy"], sw["bytes"], sw["accuracy"]),
        "bd_codec": str(sweep_rows["codec"].iloc[0]) if len(sweep_rows) else "",
        "bpp": float(at["bpp"]),
        "bpp_payload": float(at["bpp_payload"]),
        "payload_ratio": float(at["payload_ratio"]),
        "psnr": float(at["psnr"]),
        "ssim": float(at["ssim"]),
        "accuracy_original": float(pts_rows["correct_original"].mean()),
        "accuracy_reference": ref_acc,
        "accuracy_compressed": float(at["accuracy"]),
        "operating_point": str(at["point"]),
        "within_tolerance": within,
        "n_images": int(pts_rows["image"].nunique()),
        "reference_bytes": float(pts_rows.groupby("image")["ref_bytes"].first().mean()),
    }
