"""What the compression metric computes per cell: per-image rows for a method's operating points
and per-image rows for a codec's quality sweep (the leaderboard summary of both is in the
torch-free :mod:`.summary`).

Rows of both kinds share their columns, so :func:`nicebench.compression.rate.operating_points`
aggregates either. Pass the same images to both so the curves are comparable. ``first_image`` is
the global index of the batch's first image (the ``image`` column), so that the rows of the
shards of one dataset don't collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models import predict
from . import compress
from .codecs import Coded, check_quality, to_uint8
from .rate import image_quality
from .summary import summarise

if TYPE_CHECKING:
    from ..codec import Codec

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
    y: np.ndarray,
    pred_orig: np.ndarray,
    pred_ref: np.ndarray,
    ref: Coded,
    pixels: int,
    first_image: int,
) -> dict[str, np.ndarray]:
    return {
        "image": first_image + np.arange(len(y)), "label": y,
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
    codec: str | Codec = "jpeg",
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
    first_image: int = 0,
) -> list[dict[str, Any]]:
    """Per image × operating point: one row of rate, quality and accuracy figures.

    Operating points: the top-``keep`` share of ``saliency`` for each ``keep`` (``point`` =
    ``"keep=0.2"``), plus, when ``binary_mask`` is given (a method's own gate mask, z ≥ 0.5), the
    point ``"gate"`` with ``keep`` NaN (an image whose gates are all closed is coded wholly at low
    resolution: area 0, ``psnr_mask`` NaN). ``saliency`` may be None when only ``binary_mask`` is
    used.
    ``codec``: a registered codec's name (with ``subsampling``) or a :class:`nicebench.Codec`.
    ``gt_masks`` (``[B,1,H,W]``, 0/1) adds ``psnr_object``/``ssim_object`` inside the ground-truth
    object, the same region for every method. The reference (originals, same settings) and the
    predictions on it are computed once. Columns: image, label, point, keep, area, codec, quality,
    subsampling, factor, dilate, block, bytes, ref_bytes, header_bytes, payload_bytes, ratio,
    payload_ratio, bpp, bpp_payload, ref_bpp, psnr, ssim, psnr_mask, ssim_mask, pred_*, correct_*
    (original, reference, compressed), agree_original, agree_reference.
    """
    from ..codec import as_codec

    codec = as_codec(codec, subsampling)
    quality = check_quality(quality)
    arr = to_uint8(images)
    n, h, w = arr.shape[:3]
    y = _labels(labels, n)
    ref = codec.roundtrip(arr, quality)
    base = _base(y, _predict(model, arr, batch_size), _predict(model, ref.decoded, batch_size),
                 ref, h * w, first_image)  # fmt: skip
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
            factor=factor, dilate=dilate, block=block, seed=seed,
            upsample=upsample, allow_empty=name == "gate", reference=ref, first_image=first_image,
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
    codec: str | Codec = "jpeg",
    qualities: Iterable[int] | None = SWEEP,
    *,
    subsampling: str = "4:2:0",
    reference_quality: int = 75,
    batch_size: int = 256,
    first_image: int = 0,
) -> list[dict[str, Any]]:
    """Per image × quality: the whole image coded at each quality (the codec's own curve).

    ``ratio`` is relative to the same images at ``reference_quality``; the columns match
    :func:`compression_rows` (``point`` = ``"q=50"``, a label only; ``keep`` = 1, ``area`` = 1).
    ``qualities=None``: the codec's own sweep (``codec.qualities``).
    """
    from ..codec import as_codec

    codec = as_codec(codec, subsampling)
    qs = [check_quality(q) for q in (codec.qualities if qualities is None else qualities)]
    reference_quality = check_quality(reference_quality)
    arr = to_uint8(images)
    n, h, w = arr.shape[:3]
    y = _labels(labels, n)
    coded = {q: codec.roundtrip(arr, q) for q in sorted(set(qs))}
    ref = coded.get(reference_quality)
    if ref is None:
        ref = codec.roundtrip(arr, reference_quality)
    pred_ref = _predict(model, ref.decoded, batch_size)
    base = _base(y, _predict(model, arr, batch_size), pred_ref, ref, h * w, first_image)
    rows: list[dict[str, Any]] = []
    for q in qs:
        c = coded[q]
        iq = image_quality(arr, c.decoded)
        pred = pred_ref if q == reference_quality else _predict(model, c.decoded, batch_size)
        cols: dict[str, Any] = {
            **base, "point": f"q={q}", "keep": 1.0, "area": 1.0, "codec": codec.name,
            "quality": q, "subsampling": codec.subsampling, "factor": 1, "upsample": "none",
            "dilate": 0, "block": 0,
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
