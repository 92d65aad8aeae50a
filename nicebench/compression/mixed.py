"""Mixed-resolution images (docs/design.md §6 steps 1–2): a block-snapped mask keeps pixels sharp, the rest
is the image downsampled by ``factor`` and brought back up. Batched torch, on the images' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "MaskError",
    "as_map",
    "snap_mask",
    "topk_mask",
    "low_resolution",
    "mix",
]


class MaskError(ValueError):
    """A saliency map or mask that can't drive the compression track."""


def as_map(saliency_or_mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``saliency_or_mask`` as ``[B,1,H,W]`` on the images' device; checks shape and NaNs."""
    s = saliency_or_mask
    if not isinstance(s, torch.Tensor):
        raise MaskError(f"saliency_or_mask must be a tensor, got {type(s).__name__}")
    b, _, h, w = images.shape
    if s.dim() == 3:
        s = s.unsqueeze(1)
    if s.dim() != 4 or s.shape[0] != b or s.shape[1] != 1 or tuple(s.shape[-2:]) != (h, w):
        raise MaskError(
            f"saliency_or_mask has shape {tuple(saliency_or_mask.shape)}; expected [{b},1,{h},{w}] "
            f"(or [{b},{h},{w}]) to match images {tuple(images.shape)}"
        )
    if s.dtype != torch.bool and not torch.isfinite(s).all():
        raise MaskError("saliency_or_mask contains NaN or infinite values")
    return s.to(images.device)


def _block_grid(x: torch.Tensor, block: int) -> tuple[int, int]:
    return math.ceil(x.shape[-2] / block), math.ceil(x.shape[-1] / block)


def _to_pixels(grid: torch.Tensor, block: int, h: int, w: int) -> torch.Tensor:
    """Block-level ``[B,1,h',w']`` → pixel-level ``[B,1,H,W]`` (each block repeated)."""
    up = grid.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return up[..., :h, :w]


def _dilate(grid: torch.Tensor, dilate: int) -> torch.Tensor:
    if dilate <= 0:
        return grid
    k = 2 * dilate + 1
    return F.max_pool2d(grid.float(), k, stride=1, padding=dilate) > 0


def snap_mask(mask: torch.Tensor, block: int, dilate: int = 0) -> torch.Tensor:
    """Snap a bool ``[B,1,H,W]`` mask to the ``block`` grid: a block is kept if any of its pixels
    is; then dilate by ``dilate`` blocks (8-connected). Returns a bool mask of the same shape.
    """
    h, w = mask.shape[-2:]
    grid = F.max_pool2d(mask.float(), block, stride=block, ceil_mode=True) > 0
    return _to_pixels(_dilate(grid, dilate), block, h, w)


def topk_mask(
    saliency: torch.Tensor,
    keep: float,
    block: int,
    dilate: int = 0,
    seed: int = 0,
    first_image: int = 0,
) -> torch.Tensor:
    """Keep the top ``keep`` share of the ``block`` grid, ranked by mean saliency per block.

    Exactly ``max(1, round(keep · n_blocks))`` blocks are kept before dilation, so ``keep`` is the
    kept area share whatever the map's scale; ties (e.g. a constant map) are broken by a seeded
    random order per image: row ``first_image + i`` of the seeded stream for image ``i``, so an
    image gets the same order in whichever shard of a dataset it is. Returns a bool ``[B,1,H,W]``
    mask.
    """
    if not 0 < keep <= 1:
        raise MaskError(f"keep must be in (0, 1], got {keep}")
    b, _, h, w = saliency.shape
    scores = F.avg_pool2d(saliency.float(), block, stride=block, ceil_mode=True)
    gh, gw = scores.shape[-2:]
    flat = scores.reshape(b, -1)
    n = flat.shape[1]
    k = min(n, max(1, round(keep * n)))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shuffle = torch.rand(first_image + b, n, generator=gen)[first_image:]
    shuffle = shuffle.argsort(dim=1).to(flat.device)
    order = torch.sort(flat.gather(1, shuffle), dim=1, descending=True, stable=True).indices
    chosen = shuffle.gather(1, order[:, :k])
    grid = torch.zeros(b, n, dtype=torch.bool, device=flat.device)
    grid.scatter_(1, chosen, True)
    return _to_pixels(_dilate(grid.reshape(b, 1, gh, gw), dilate), block, h, w)


UPSAMPLING = ("auto", "bilinear", "nearest")


def low_resolution(images: torch.Tensor, factor: int, upsample: str = "auto") -> torch.Tensor:
    """Downsample by ``factor`` with an area filter and bring back up to the same size.

    ``upsample="auto"``: bilinear for ``factor < 8``, nearest for ``factor ≥ 8`` (flat 8×8 blocks
    cost a JPEG almost nothing: DC only); "bilinear"/"nearest" force one. ``factor = 1`` returns
    the images unchanged.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise MaskError(f"factor must be an integer ≥ 1, got {factor!r}")
    if upsample not in UPSAMPLING:
        raise MaskError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
    if factor == 1:
        return images
    h, w = images.shape[-2:]
    small = F.interpolate(
        images, size=(max(1, math.ceil(h / factor)), max(1, math.ceil(w / factor))), mode="area"
    )
    if upsample == "nearest" or (upsample == "auto" and factor >= 8):
        return F.interpolate(small, size=(h, w), mode="nearest")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def mix(images: torch.Tensor, mask: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """The mixed image ``M·x + (1−M)·x_low`` (``mask`` bool ``[B,1,H,W]``)."""
    return torch.where(mask, images, low)
