"""Deletion and insertion (Petsiuk et al., RISE, BMVC 2018), vectorised across images and steps.

Pixels are ranked by saliency (all channels together; ties broken by one seeded random
permutation of pixel positions, the same for every image so a map's score never depends on the
batch it came in). Each of ``n_steps`` steps changes ``ceil(H·W / n_steps)`` pixels, giving
``n_steps + 1`` points. Deletion goes from the image to the ``substrate``; insertion from a
Gaussian blur of the image to the image. The score is the softmax probability of the target class
(by default the class predicted on the original image) and
``AUC = (Σ p_i − p_0/2 − p_n/2) / n``. Lower deletion and higher insertion are better.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ..batching import auto_batch_size, map_in_chunks
from ..metric_spec import DEFAULT_SETTINGS
from ..models.inference import forward_model

__all__ = [
    "deletion",
    "insertion",
    "pixel_ranks",
    "auc",
    "substrate_image",
    "blurred",
    "resolve_targets",
    "DEFAULT_SETTINGS",
]


def pixel_ranks(saliency: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rank of each pixel (0 = most salient), ``[B, H·W]``; ties broken by a seeded permutation."""
    b = saliency.shape[0]
    flat = saliency.reshape(b, -1).float()
    n = flat.shape[1]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).to(flat.device)
    # stable sort of the permuted values: equal values keep the permutation's order
    order_in_perm = torch.sort(-flat[:, perm], dim=1, stable=True).indices
    order = perm[order_in_perm]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=flat.device).expand(b, n))
    return ranks


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under ``[B, n+1]`` curves on a unit x-axis: (Σp − p0/2 − pn/2)/n."""
    n = curves.shape[1] - 1
    return (curves.sum(1) - 0.5 * curves[:, 0] - 0.5 * curves[:, -1]) / n


def substrate_image(model: nn.Module, images: torch.Tensor, substrate) -> torch.Tensor:
    """The fill of deletion: ``"mean"`` (the model's normalisation mean: 0 in normalised space),
    ``"black"``, ``"blur"``, a number, or a tensor broadcastable to ``images``."""
    if isinstance(substrate, torch.Tensor):
        return substrate.to(images.device, images.dtype).expand_as(images)
    if isinstance(substrate, int | float):
        return torch.full_like(images, float(substrate))
    if substrate == "mean":
        mean = getattr(model, "mean", None)
        if mean is None:
            return torch.zeros_like(images)
        return mean.to(images.device, images.dtype).expand_as(images)
    if substrate == "black":
        return torch.zeros_like(images)
    if substrate == "blur":
        return blurred(images)
    raise ValueError(
        f"substrate must be 'mean', 'black', 'blur', a number or a tensor; got {substrate!r}"
    )


def blurred(images: torch.Tensor, sigma: float | None = None, kernel: int | None = None):
    """Gaussian blur with RISE's kernel 11 / σ 5 at 224 px, scaled with the image size."""
    h = images.shape[-1]
    if sigma is None:
        sigma = 5.0 * h / 224
    if kernel is None:
        kernel = max(3, int(round(11 * h / 224)) | 1)
    return gaussian_blur(images, [kernel, kernel], [sigma, sigma])


@torch.inference_mode()
def resolve_targets(
    model: nn.Module,
    images: torch.Tensor,
    target,
    labels: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(targets, logits on the originals or None): ``"pred"``, ``"label"`` (needs labels) or a
    tensor of classes. The forward pass on the originals runs only for ``"pred"``."""
    if isinstance(target, torch.Tensor | list | tuple):
        t = torch.as_tensor(target, device=images.device).long().reshape(-1)
        if len(t) != len(images):
            raise ValueError(f"target has {len(t)} classes for {len(images)} images")
        return t, None
    if target == "pred":
        logits = map_in_chunks(forward_model(model), images, batch_size)
        return logits.argmax(1), logits
    if target == "label":
        if labels is None:
            raise ValueError("target='label' needs labels=...")
        return labels.to(images.device).long(), None
    raise ValueError(f"target must be 'pred', 'label' or a tensor of classes; got {target!r}")


def _memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last when the model runs so (its flag, or its first conv's weights), else NCHW."""
    if getattr(model, "channels_last", False) is True:
        return torch.channels_last
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            wt = m.weight
            cl = wt.is_contiguous(memory_format=torch.channels_last) and not wt.is_contiguous()
            return torch.channels_last if cl else torch.contiguous_format
    return torch.contiguous_format


def _chunks(b: int, steps: int, rows: int):
    """Blocks ``(image slice, step slice)`` of at most ``rows`` (image, step) pairs: whole images
    × all steps when a chunk holds several images, else one image × a run of steps."""
    if rows >= steps:
        k = rows // steps
        for i in range(0, b, k):
            yield slice(i, min(i + k, b)), slice(0, steps)
    else:
        for i in range(b):
            for j in range(0, steps, rows):
                yield slice(i, i + 1), slice(j, min(j + rows, steps))


@torch.inference_mode()
def _curves(
    model: nn.Module,
    start: torch.Tensor,
    finish: torch.Tensor,
    ranks: torch.Tensor,
    targets: torch.Tensor,
    n_steps: int,
    batch_size: int | None,
    known: tuple[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Probability of ``targets`` along the path that moves pixels from ``start`` to ``finish``
    in rank order: ``[B, n_steps+1]``. ``known = (step, probs[B])`` is a point already computed
    (the original image's, from resolving the targets), which is not evaluated again.

    The perturbed images of a chunk are built by broadcasting (images × steps) into one reused
    buffer on the model's device: one forward pass per chunk, no gathered copies.
    """
    model = forward_model(model)
    b, c, h, w = start.shape
    per_step = math.ceil(h * w / n_steps)
    thresholds = (torch.arange(n_steps + 1, device=start.device) * per_step).clamp(max=h * w)
    probs = torch.empty(b, n_steps + 1, device=start.device)
    steps = torch.arange(n_steps + 1, device=start.device)
    if known is not None:
        probs[:, known[0]] = known[1]
        steps = steps[steps != known[0]]
    bs = batch_size or auto_batch_size(start[0].numel(), start.device)
    buf = torch.empty(
        bs, c, h, w, device=start.device, dtype=start.dtype, memory_format=_memory_format(model)
    )
    flat_ranks = ranks.view(b, 1, h * w)
    for im, st in _chunks(b, len(steps), bs):
        k, s = im.stop - im.start, st.stop - st.start
        moved = (flat_ranks[im] < thresholds[steps[st]].view(1, s, 1)).view(k, s, 1, h, w)
        x = buf[: k * s].view(k, s, c, h, w)
        torch.where(moved, finish[im].unsqueeze(1), start[im].unsqueeze(1), out=x)
        p = F.softmax(model(x.view(k * s, c, h, w)).float(), dim=1).view(k, s, -1)
        t = targets[im].view(k, 1, 1).expand(k, s, 1)
        probs[im, steps[st]] = p.gather(2, t).squeeze(2)
    return probs


def _run(
    model,
    images,
    saliency,
    start,
    finish,
    n_steps,
    target,
    labels,
    seed,
    batch_size,
    return_curves,
    original_step,
):
    if saliency.shape[0] != images.shape[0] or saliency.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"saliency of shape {tuple(saliency.shape)} does not match images "
            f"{tuple(images.shape)}; expected [B,1,H,W]"
        )
    h = images.shape[-2]
    n_steps = int(n_steps or h)
    if n_steps < 1:
        raise ValueError(f"n_steps must be ≥ 1, got {n_steps}")
    targets, logits = resolve_targets(model, images, target, labels, batch_size)
    known = None
    if logits is not None:  # the original image is a point of the curve: reuse its forward pass
        p0 = F.softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        known = (0 if original_step == 0 else n_steps, p0)
    ranks = pixel_ranks(saliency.to(images.device), seed)
    curves = _curves(model, start, finish, ranks, targets, n_steps, batch_size, known)
    scores = auc(curves)
    return (scores, curves) if return_curves else scores


def deletion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    n_steps: int | None = None,
    substrate="mean",
    target="pred",
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    return_curves: bool = False,
):
    """Per-image deletion AUC ``[B]`` (lower is better); with ``return_curves`` also ``[B,n+1]``."""
    fill = substrate_image(model, images, substrate)
    return _run(
        model,
        images,
        saliency,
        images,
        fill,
        n_steps,
        target,
        labels,
        seed,
        batch_size,
        return_curves,
        original_step=0,
    )


def insertion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    n_steps: int | None = None,
    start="blur",
    target="pred",
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    blur_sigma: float | None = None,
    return_curves: bool = False,
):
    """Per-image insertion AUC ``[B]`` (higher is better), from ``start`` (default: the blur)."""
    if isinstance(start, str) and start == "blur":
        origin = blurred(images, blur_sigma)
    else:
        origin = substrate_image(model, images, start)
    return _run(
        model,
        images,
        saliency,
        origin,
        images,
        n_steps,
        target,
        labels,
        seed,
        batch_size,
        return_curves,
        original_step=-1,
    )
