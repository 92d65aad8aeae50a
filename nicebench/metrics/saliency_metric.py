"""The saliency metric of Dabkowski & Gal (NeurIPS 2017), vectorised across images and thresholds.

Per image: threshold the map, take the tightest axis-aligned box around the kept pixels, crop the
image to that box and resize the crop back to full size (bilinear: torchvision ``roi_align`` with
one sample per output pixel), and score ``s = log(max(a, 0.05)) − log p`` with ``a`` the box's
share of the image area and ``p`` the classifier's softmax probability of the target class on the
resized crop. Lower is better: a small box the classifier still recognises.

Thresholds: D&G thresholded continuous maps at several levels and kept the best box. Here the map
is thresholded at its top ``q`` share of pixels for each ``q`` in ``shares`` (default 0.05, 0.1,
0.2, 0.3, 0.5: keep pixels ``≥`` the value of the ``ceil(q·H·W)``-th largest pixel, so ties at
the threshold are all kept and a constant map gives the whole image) and the per-image score is
the minimum over the sweep (``reduce="min"``; ``reduce="mean"`` averages instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..batching import auto_batch_size, map_in_chunks
from ..models.inference import forward_model
from .faithfulness import resolve_targets

__all__ = ["saliency_metric", "tightest_boxes", "crop_resize", "SALIENCY_METRIC_SETTINGS"]

DEFAULT_SHARES = (0.05, 0.1, 0.2, 0.3, 0.5)
MIN_AREA = 0.05

SALIENCY_METRIC_SETTINGS = {
    "score": "log(max(a, 0.05)) - log p, p = softmax prob of the target on the resized crop",
    "threshold": "top share q of the map's pixels, q in (0.05, 0.1, 0.2, 0.3, 0.5); best box",
    "resize": "bilinear (roi_align, aligned, one sample per output pixel)",
    "target": "pred (class predicted on the original image)",
}


def tightest_boxes(keep: torch.Tensor) -> torch.Tensor:
    """Pixel-edge boxes ``[..., 4]`` = (x0, y0, x1, y1) around the True pixels of ``[..., H, W]``.

    A box covers pixels ``x0 ≤ x < x1``; an all-False mask gives the whole image.
    """
    h, w = keep.shape[-2:]
    rows, cols = keep.any(-1), keep.any(-2)  # [..., H], [..., W]
    empty = ~rows.any(-1)
    y0 = rows.float().argmax(-1)
    y1 = h - rows.flip(-1).float().argmax(-1)
    x0 = cols.float().argmax(-1)
    x1 = w - cols.flip(-1).float().argmax(-1)
    boxes = torch.stack([x0, y0, x1, y1], -1).float()
    full = torch.tensor([0.0, 0.0, w, h], device=keep.device)
    return torch.where(empty[..., None], full, boxes)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Crops of ``images[index[k]]`` to ``boxes[k]`` (pixel edges), resized bilinearly to H×W."""
    h, w = images.shape[-2:]
    rois = torch.cat([index[:, None].to(boxes), boxes], 1)
    return roi_align(
        images, rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True
    )


@torch.no_grad()
def saliency_metric(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target="pred",
    labels: torch.Tensor | None = None,
    shares: Sequence[float] = DEFAULT_SHARES,
    reduce: str = "min",
    min_area: float = MIN_AREA,
    batch_size: int | None = None,
    return_details: bool = False,
):
    """Per-image D&G saliency metric ``[B]`` (lower is better).

    ``target``: ``"pred"`` (default), ``"label"`` (with ``labels``) or a tensor of classes.
    With ``return_details`` also returns a dict of the chosen ``area`` ``[B]``, ``prob`` ``[B]``
    and ``box`` ``[B,4]`` (for ``reduce="min"``), and the full ``scores`` ``[B,T]``.
    """
    b, _, h, w = images.shape
    if saliency.shape[0] != b or saliency.shape[-2:] != (h, w):
        raise ValueError(
            f"saliency of shape {tuple(saliency.shape)} does not match images {tuple(images.shape)}"
        )
    if reduce not in ("min", "mean"):
        raise ValueError(f"reduce must be 'min' or 'mean', got {reduce!r}")
    if not shares or not all(0 < q <= 1 for q in shares):
        raise ValueError(f"shares must be in (0, 1], got {shares}")
    targets, _ = resolve_targets(model, images, target, labels, batch_size)
    fast = forward_model(model)
    flat = saliency.to(images.device).float().sum(1).reshape(b, -1)
    ordered = flat.sort(1, descending=True).values
    ks = torch.tensor([max(1, math.ceil(q * h * w)) - 1 for q in shares], device=images.device)
    thr = ordered[:, ks]  # [B,T]
    keep = flat[:, None, :] >= thr[:, :, None]  # [B,T,HW]
    boxes = tightest_boxes(keep.view(b, len(shares), h, w))  # [B,T,4]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) / (h * w)
    index = torch.arange(b, device=images.device).repeat_interleave(len(shares))
    bs = batch_size or auto_batch_size(images[0].numel(), images.device)
    flat_boxes = boxes.reshape(-1, 4)
    order = torch.arange(len(index), device=images.device)

    def probs(chunk: torch.Tensor) -> torch.Tensor:
        crops = crop_resize(images, flat_boxes[chunk], index[chunk])
        p = F.softmax(fast(crops).float(), dim=1)
        return p.gather(1, targets[index[chunk], None]).squeeze(1)

    prob = map_in_chunks(probs, order, bs).view(b, len(shares))
    scores = torch.log(area.clamp_min(min_area)) - torch.log(prob.clamp_min(1e-12))
    if reduce == "mean":
        out = scores.mean(1)
        best = torch.zeros(b, dtype=torch.long, device=images.device)
    else:
        out, best = scores.min(1)
    if not return_details:
        return out
    pick = best[:, None]
    return out, {
        "area": area.gather(1, pick).squeeze(1),
        "prob": prob.gather(1, pick).squeeze(1),
        "box": boxes[torch.arange(b), best],
        "scores": scores,
    }
