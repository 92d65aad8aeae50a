"""What the compression metric computes per cell: per-image rows for a method's operating points
and per-image rows for a codec's quality sweep (the leaderboard summary of both is in the
torch-free :mod:`nicebench.compression.summary`).

A method's operating points are the product of its mask choices (the top-``keep`` shares of its
map and, for gate methods, its own binary mask), the codec's quality sweep and the background
factors (docs/design.md §6 step 6); the codec's own curve is the whole image at each quality. Rows of both
kinds share their columns, so :mod:`nicebench.compression.summary` computes fronts, headline ratios and bootstrap
intervals of either. Pass the same images to both so the curves are comparable. ``first_image``
is the global index of the batch's first image (the ``image`` column), so that the rows of the
shards of one dataset don't collide.

Speed: each batch is coded on a thread pool (:func:`nicebench.codec_base.codec_threads`),
the decoded images of all qualities of one mask and factor are classified in one large batch, PSNR
is computed for every point (vectorised) and SSIM, the costly figure, only for the points on the
batch's own front (``ssim="front"``; NaN elsewhere) unless ``ssim="all"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..codec import SWEEP, Codec, Coded, as_codec, check_quality, to_uint8
from ..compression.mixed import MaskError, as_map, low_resolution, mix, snap_mask, topk_mask
from ..compression.rate import front_indices, psnr_batch, ssim_batch
from ..compression.summary import summarise
from ..models import forward_model, predict

__all__ = [
    "compression_rows",
    "quality_sweep_rows",
    "summarise",
    "DEFAULT_KEEPS",
    "TRACK_QUALITIES",
    "SSIM_MODES",
]

DEFAULT_KEEPS = (0.05, 0.1, 0.2, 0.3, 0.5)
#: The quality sweep of a method's operating points (the codec's own curve uses :data:`SWEEP`).
TRACK_QUALITIES = (10, 20, 30, 40, 50, 60, 75, 90)
SSIM_MODES = ("front", "all", "none")
PREDICT_BATCH = 1024


def _labels(labels: torch.Tensor | Sequence[int], n: int) -> np.ndarray:
    y = torch.as_tensor(labels).reshape(-1).cpu().numpy().astype(np.int64)
    if len(y) != n:
        raise ValueError(f"labels: {len(y)} labels for {n} images")
    return y


def _predict(model: nn.Module, arr: np.ndarray, batch_size: int) -> np.ndarray:
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return predict(forward_model(model), x, batch_size=batch_size).numpy()


def _base(
    y: np.ndarray,
    pred_orig: np.ndarray,
    pred_ref: np.ndarray,
    ref: Coded,
    pixels: int,
    first_image: int,
) -> dict[str, np.ndarray]:
    return {
        "image": first_image + np.arange(len(y)),
        "label": y,
        "ref_bytes": ref.nbytes,
        "ref_header_bytes": ref.header,
        "ref_payload_bytes": ref.nbytes - ref.header,
        "ref_bpp": 8.0 * ref.nbytes / pixels,
        "pred_original": pred_orig,
        "pred_reference": pred_ref,
        "correct_original": pred_orig == y,
        "correct_reference": pred_ref == y,
    }


def _outcome(pred: np.ndarray, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "pred_compressed": pred,
        "correct_compressed": pred == base["label"],
        "agree_original": pred == base["pred_original"],
        "agree_reference": pred == base["pred_reference"],
    }


def _check_ints(name: str, values: Iterable[int], lo: int) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be integers ≥ {lo}, got {v!r}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name}: name at least one")
    return tuple(dict.fromkeys(out))


def _check_ssim(ssim: str) -> str:
    if ssim not in SSIM_MODES:
        raise ValueError(f"ssim must be one of {SSIM_MODES}, got {ssim!r}")
    return ssim


class _Points:
    """Columns of the rows of one batch, point by point, made into records at the end."""

    def __init__(self, base: dict[str, np.ndarray], n: int):
        self.base, self.n = base, n
        self.parts: list[dict[str, Any]] = []
        self.decode: list[tuple[list[bytes], Any]] = []  # streams and the point's quality masks

    def add(self, cols: dict[str, Any], streams: list[bytes], masks: Any = None) -> None:
        self.parts.append(cols)
        self.decode.append((streams, masks))

    def fill_ssim(self, arr: np.ndarray, decode, gt: np.ndarray | None, mode: str) -> None:
        """SSIM (whole image, inside the point's mask, inside the object) of the points on this
        batch's front (``mode="front"``) or of every point (``"all"``)."""
        for part in self.parts:
            for k in ("ssim", "ssim_mask") + (("ssim_object",) if gt is not None else ()):
                part[k] = np.full(self.n, np.nan)
        if mode == "none" or not self.parts:
            return
        if mode == "all":
            chosen = range(len(self.parts))
        else:
            nbytes = [float(np.sum(p["bytes"])) for p in self.parts]
            acc = [float(np.mean(p["correct_compressed"])) for p in self.parts]
            chosen = front_indices(np.array(nbytes), np.array(acc)).tolist()
        channels = arr.shape[-1]
        for i in chosen:
            streams, mask = self.decode[i]
            dec = np.stack([decode(st, channels) for st in streams])
            regions = {} if mask is None else {"ssim_mask": mask}
            if gt is not None:
                regions["ssim_object"] = gt
            q = ssim_batch(arr, dec, regions)
            self.parts[i]["ssim"] = q["ssim"]
            self.parts[i]["ssim_mask"] = q["ssim"] if mask is None else q["ssim_mask"]
            if gt is not None:
                self.parts[i]["ssim_object"] = q["ssim_object"]

    def export_streams(self, coded_out: dict[str, list[bytes]] | None) -> None:
        """Each point's coded files into ``coded_out`` (point name → one file per image)."""
        if coded_out is not None:
            for part, (streams, _) in zip(self.parts, self.decode, strict=True):
                coded_out[str(part["point"])] = list(streams)

    def records(self) -> list[dict[str, Any]]:
        if not self.parts:
            return []
        frames = [
            pd.DataFrame(
                {**self.base, **{k: (v if np.ndim(v) else [v] * self.n) for k, v in part.items()}}
            )
            for part in self.parts
        ]
        return pd.concat(frames, ignore_index=True).to_dict("records")


def _rate_cols(c: Coded, ref: Coded, pixels: int) -> dict[str, Any]:
    return {
        "bytes": c.nbytes,
        "header_bytes": c.header,
        "payload_bytes": c.nbytes - c.header,
        "ratio": c.nbytes / ref.nbytes,
        "payload_ratio": (c.nbytes - c.header) / (ref.nbytes - ref.header),
        "bpp": 8.0 * c.nbytes / pixels,
        "bpp_payload": 8.0 * (c.nbytes - c.header) / pixels,
    }


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
    qualities: Iterable[int] | None = None,
    factors: Iterable[int] | None = None,
    factor: int = 4,
    dilate: int = 0,
    subsampling: str = "4:2:0",
    block: int | None = None,
    upsample: str = "auto",
    binary_mask: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = PREDICT_BATCH,
    first_image: int = 0,
    ssim: str = "front",
    coded_out: dict[str, list[bytes]] | None = None,
) -> list[dict[str, Any]]:
    """Per image × operating point: one row of rate, quality and accuracy figures.

    Operating points: every mask choice × ``qualities`` × ``factors``. Mask choices: the
    top-``keep`` share of ``saliency`` for each ``keep`` (``mask`` = ``"keep=0.2"``), plus, when
    ``binary_mask`` is given (a method's own gate mask, z ≥ 0.5), ``mask`` = ``"gate"`` with
    ``keep`` NaN (an image whose gates are all closed is coded wholly at low resolution: area 0,
    ``psnr_mask`` NaN). ``qualities`` default to ``(quality,)`` and ``factors`` to ``(factor,)``
    (the single operating point per mask of old); ``point`` names the three, e.g.
    ``"keep=0.2 q=40 x8"``. ``saliency`` may be None when only ``binary_mask`` is used.
    The reference is the original coded at ``quality`` (the ratio's denominator); it and the
    predictions on it are computed once.
    ``codec``: a registered codec's name (with ``subsampling``) or a :class:`nicebench.Codec`.
    ``gt_masks`` (``[B,1,H,W]``, 0/1) adds ``psnr_object``/``ssim_object`` inside the ground-truth
    object, the same region for every method. ``ssim``: ``"front"`` (SSIM only on the batch's
    front points, NaN elsewhere), ``"all"`` or ``"none"``. ``coded_out``: filled with each
    point's coded files (point → one file per image, the bytes the rows count) for figures.
    Columns: image, label, point, mask,
    keep, area, codec, quality, subsampling, factor, upsample, dilate, block, bytes, ref_bytes,
    header_bytes, ref_header_bytes, payload_bytes, ref_payload_bytes, ratio, payload_ratio, bpp,
    bpp_payload, ref_bpp, psnr, ssim, psnr_mask, ssim_mask, pred_*, correct_* (original,
    reference, compressed), agree_original, agree_reference.
    """
    coder = as_codec(codec, subsampling)
    quality = check_quality(quality)
    qs = tuple(check_quality(q) for q in (qualities or (quality,)))
    fs = _check_ints("factors", factors or (factor,), 1)
    dilate = _check_ints("dilate", (dilate,), 0)[0]
    ssim = _check_ssim(ssim)
    block = coder.block if block is None else _check_ints("block", (block,), 1)[0]
    arr = to_uint8(images)
    n, h, w = arr.shape[:3]
    pixels = h * w
    y = _labels(labels, n)
    ref = coder.roundtrip(arr, quality)
    base = _base(
        y,
        _predict(model, arr, batch_size),
        _predict(model, ref.decoded, batch_size),
        ref,
        pixels,
        first_image,
    )
    gt = None if gt_masks is None else (gt_masks.reshape(n, h, w) > 0.5).cpu().numpy()
    x = torch.from_numpy(arr).to(images.device).permute(0, 3, 1, 2).float().div_(255)
    choices: list[tuple[str, float, torch.Tensor]] = []
    if saliency is not None:
        smap = as_map(saliency, images)
        for k in keeps:
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
                raise MaskError(f"keep must be a share in (0, 1], got {k!r}")
            mask = topk_mask(smap, float(k), block, dilate, seed=seed, first_image=first_image)
            choices.append((f"keep={k:g}", float(k), mask))
    if binary_mask is not None:
        gate = binary_mask.reshape(n, 1, h, w).to(images.device) > 0.5
        choices.append(("gate", float("nan"), snap_mask(gate, block, dilate)))
    if not choices:
        raise ValueError("compression_rows: pass saliency (with keeps) or binary_mask")
    lows = {f: low_resolution(x, f, upsample) for f in fs}
    out = _Points(base, n)
    for name, keep, mask in choices:
        m_np = mask[:, 0].cpu().numpy()
        area = m_np.reshape(n, -1).mean(1)
        for f in fs:
            mixed = to_uint8(mix(x, mask, lows[f]))
            coded = [coder.roundtrip(mixed, q) for q in qs]
            preds = _predict(model, np.concatenate([c.decoded for c in coded]), batch_size)
            for j, (q, c) in enumerate(zip(qs, coded, strict=True)):
                cols: dict[str, Any] = {
                    "point": f"{name} q={q} x{f}",
                    "mask": name,
                    "keep": keep,
                    "area": area,
                    "codec": coder.name,
                    "quality": q,
                    "subsampling": coder.subsampling,
                    "factor": f,
                    "upsample": upsample,
                    "dilate": dilate,
                    "block": block,
                    **_rate_cols(c, ref, pixels),
                    "psnr": psnr_batch(arr, c.decoded),
                    "psnr_mask": psnr_batch(arr, c.decoded, m_np),
                }
                if gt is not None:
                    cols["psnr_object"] = psnr_batch(arr, c.decoded, gt)
                cols.update(_outcome(preds[j * n : (j + 1) * n], base))
                out.add(cols, c.streams, m_np)
    out.fill_ssim(arr, coder.decode, gt, ssim)
    out.export_streams(coded_out)
    return out.records()


def quality_sweep_rows(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    codec: str | Codec = "jpeg",
    qualities: Iterable[int] | None = SWEEP,
    *,
    subsampling: str = "4:2:0",
    reference_quality: int = 75,
    batch_size: int = PREDICT_BATCH,
    first_image: int = 0,
    gt_masks: torch.Tensor | None = None,
    ssim: str = "front",
    coded_out: dict[str, list[bytes]] | None = None,
) -> list[dict[str, Any]]:
    """Per image × quality: the whole image coded at each quality (the codec's own curve).

    ``ratio`` is relative to the same images at ``reference_quality``; the columns match
    :func:`compression_rows` (``point`` = ``"q=50"``, ``mask`` = ``"uniform"``, ``keep`` = 1,
    ``area`` = 1, ``factor`` = 1). ``qualities=None``: the codec's own sweep
    (``codec.qualities``). ``ssim`` and ``coded_out`` as in :func:`compression_rows`.
    """
    coder = as_codec(codec, subsampling)
    qs = [check_quality(q) for q in (coder.qualities if qualities is None else qualities)]
    reference_quality = check_quality(reference_quality)
    ssim = _check_ssim(ssim)
    arr = to_uint8(images)
    n, h, w = arr.shape[:3]
    pixels = h * w
    y = _labels(labels, n)
    coded = {q: coder.roundtrip(arr, q) for q in sorted(set(qs))}
    ref = coded.get(reference_quality)
    if ref is None:
        ref = coder.roundtrip(arr, reference_quality)
    gt = None if gt_masks is None else (gt_masks.reshape(n, h, w) > 0.5).cpu().numpy()
    order = sorted(coded)
    preds_all = _predict(
        model, np.concatenate([arr, *(coded[q].decoded for q in order)]), batch_size
    )
    pred_q = {q: preds_all[(i + 1) * n : (i + 2) * n] for i, q in enumerate(order)}
    pred_ref = pred_q.get(reference_quality)
    if pred_ref is None:
        pred_ref = _predict(model, ref.decoded, batch_size)
    base = _base(y, preds_all[:n], pred_ref, ref, pixels, first_image)
    out = _Points(base, n)
    for q in qs:
        c = coded[q]
        psnr = psnr_batch(arr, c.decoded)
        cols: dict[str, Any] = {
            "point": f"q={q}",
            "mask": "uniform",
            "keep": 1.0,
            "area": 1.0,
            "codec": coder.name,
            "quality": q,
            "subsampling": coder.subsampling,
            "factor": 1,
            "upsample": "none",
            "dilate": 0,
            "block": 0,
            **_rate_cols(c, ref, pixels),
            "psnr": psnr,
            "psnr_mask": psnr,
        }
        if gt is not None:
            cols["psnr_object"] = psnr_batch(arr, c.decoded, gt)
        cols.update(_outcome(pred_q[q], base))
        out.add(cols, c.streams, None)
    out.fill_ssim(arr, coder.decode, gt, ssim)
    out.export_streams(coded_out)
    return out.records()
