"""Localisation against ground-truth object masks: pointing game, energy pointing game, AUROC."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

__all__ = ["pointing_game", "energy_pointing_game", "mask_auroc", "dilate"]


def _check(saliency: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if masks is None:
        raise ValueError("this metric needs ground-truth masks; the dataset has none")
    if saliency.shape[0] != masks.shape[0] or saliency.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"saliency {tuple(saliency.shape)} and masks {tuple(masks.shape)} differ in shape"
        )
    b = saliency.shape[0]
    return saliency.reshape(b, -1).float(), masks.reshape(b, -1).to(saliency.device) > 0.5


def dilate(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """Binary dilation of ``[B,1,H,W]`` masks by a disk of ``radius`` pixels."""
    r = int(np.floor(radius))
    if r < 1:
        return masks > 0.5
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disk = ((yy**2 + xx**2) <= radius**2).float().to(masks.device)[None, None]
    return F.conv2d((masks > 0.5).float(), disk, padding=r) > 0


def pointing_game(
    saliency: torch.Tensor, masks: torch.Tensor, tolerance: float | None = None
) -> torch.Tensor:
    """Hit (1) or miss (0) of the map's arg-max in the mask dilated by ``tolerance`` pixels.

    ``tolerance`` defaults to 15 px at 224 px, scaled with the image size. Tied maxima count
    fractionally (the share of them that hit), so a constant map is not a free hit.
    """
    h = saliency.shape[-1]
    tol = 15.0 * h / 224 if tolerance is None else tolerance
    flat, _ = _check(saliency, masks)
    inside = dilate(masks.reshape(saliency.shape[0], 1, *saliency.shape[-2:]), tol)
    inside = inside.reshape(flat.shape[0], -1).to(flat.device)
    is_max = flat == flat.max(1, keepdim=True).values
    return (is_max & inside).sum(1).float() / is_max.sum(1).float()


def energy_pointing_game(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the (negative-clipped) saliency mass that falls inside the mask.

    A map with no positive mass counts as uniform (its score is the mask's area share).
    """
    flat, inside = _check(saliency, masks)
    pos = flat.clamp(min=0)
    total = pos.sum(1)
    share = (pos * inside).sum(1) / total.clamp(min=1e-12)
    return torch.where(total > 0, share, inside.float().mean(1))


def mask_auroc(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image ROC AUC of the map as a detector of mask pixels (Mann–Whitney, tied ranks
    averaged); NaN for an image whose mask is empty or full."""
    flat, inside = _check(saliency, masks)
    ranks = torch.from_numpy(rankdata(flat.cpu().numpy(), axis=1)).to(flat.device)
    pos = inside.sum(1).double()
    neg = inside.shape[1] - pos
    u = (ranks * inside).sum(1) - pos * (pos + 1) / 2
    out = u / (pos * neg)
    return torch.where((pos > 0) & (neg > 0), out, torch.full_like(out, float("nan"))).float()
