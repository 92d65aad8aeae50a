"""ROAD (Rong et al., ICML 2022): remove pixels in saliency order and fill them by noisy linear
imputation, so the shape of the removed region leaks little about the class.

Each removed pixel is set to the weighted mean of its in-image 8-neighbours (weight 1/6 for the 4
direct, 1/12 for the 4 diagonal neighbours, renormalised at the border), where neighbours that are
themselves removed are unknowns too: one sparse linear system per image and removal mask, solved
for all channels at once (:func:`scipy.sparse.linalg.splu`), then Gaussian noise of standard
deviation ``noise`` is added to the removed pixels (seeded per image: a score never depends on the
batch). MoRF removes the most salient pixels first, LeRF the least salient first (pixel order and
ties as in deletion, :func:`~nicebench.metrics.faithfulness.pixel_ranks`), at the paper's
percentages 10%, 20%, ..., 90% of the pixels (``round(p·H·W)`` pixels). The score at each
percentage is the softmax probability of the target class; a curve's area is its mean over the
percentages. Lower MoRF and higher LeRF are better.

The imputation runs on the CPU in scipy; the classifier sees the imputed images in chunks (one
forward pass per chunk, across images, percentages and both orders) on the model's device.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import splu
from torch import nn

from ..batching import auto_batch_size
from ..metric_spec import ROAD_SETTINGS
from ..models.inference import forward_model
from . import settings as S
from .faithfulness import pixel_ranks

__all__ = [
    "ROAD_PERCENTAGES",
    "ROAD_NOISE",
    "ROAD_SETTINGS",
    "NEIGHBOUR_WEIGHTS",
    "neighbour_weights",
    "linear_impute",
    "removal_masks",
    "road_curves",
    "road",
]

ROAD_PERCENTAGES: tuple[float, ...] = S.ROAD_PERCENTAGES.default
ROAD_NOISE: float = S.ROAD_NOISE.default
# (dy, dx) → weight: the paper's imputer
NEIGHBOUR_WEIGHTS: dict[tuple[int, int], float] = {
    (-1, 0): 1 / 6,
    (1, 0): 1 / 6,
    (0, -1): 1 / 6,
    (0, 1): 1 / 6,
    (-1, -1): 1 / 12,
    (-1, 1): 1 / 12,
    (1, -1): 1 / 12,
    (1, 1): 1 / 12,
}


@functools.lru_cache(maxsize=8)
def neighbour_weights(h: int, w: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The ``[H·W, H·W]`` matrix of neighbour weights of an ``h × w`` grid (row-major pixels)
    and each pixel's total weight of in-image neighbours."""
    ys, xs = np.mgrid[0:h, 0:w]
    rows, cols, vals = [], [], []
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        rows.append((ys * w + xs)[ok])
        cols.append((ny * w + nx)[ok])
        vals.append(np.full(int(ok.sum()), weight))
    n = h * w
    mat = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return mat, np.asarray(mat.sum(1)).ravel()


def linear_impute(
    image: np.ndarray,
    removed: np.ndarray,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``image`` ``[C, H, W]`` with the pixels where ``removed`` ``[H, W]`` is true replaced by
    the solution of ``d_i x_i − Σ_{j removed} w_ij x_j = Σ_{j kept} w_ij v_j`` (each removed value
    the weighted mean of its neighbours' values, ``d_i = Σ_j w_ij``), plus ``noise``·N(0, 1)."""
    c, h, w = image.shape
    weights, total = neighbour_weights(h, w)
    gone = np.flatnonzero(removed.reshape(-1))
    flat = image.reshape(c, -1).T.astype(np.float64)  # [N, C]
    out = flat.copy()
    if len(gone) == 0:
        return image.copy()
    if len(gone) == h * w:
        raise ValueError("linear imputation needs at least one kept pixel")
    kept = flat.copy()
    kept[gone] = 0.0
    rhs = (weights @ kept)[gone]  # Σ_{j kept} w_ij v_j
    a = sp.diags(total[gone]) - weights[gone][:, gone]
    # A is symmetric and diagonally dominant: a symmetric fill-reducing order, no pivoting
    lu = splu(
        a.tocsc(),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    values = lu.solve(rhs)
    if noise:
        values = values + noise * (rng or np.random.default_rng()).standard_normal(values.shape)
    out[gone] = values
    return out.T.reshape(c, h, w).astype(image.dtype)


def removal_masks(ranks: torch.Tensor, percentages=ROAD_PERCENTAGES) -> torch.Tensor:
    """``[B, 2, P, H·W]`` booleans from pixel ranks ``[B, H·W]`` (0 = most salient): order 0 is
    MoRF (ranks below ``round(p·N)`` removed), order 1 LeRF (ranks at or above ``N − round(p·N)``)."""
    n = ranks.shape[1]
    k = torch.tensor([round(p * n) for p in percentages], device=ranks.device)
    morf = ranks[:, None, :] < k[None, :, None]
    lerf = ranks[:, None, :] >= (n - k)[None, :, None]
    return torch.stack([morf, lerf], 1)


@torch.no_grad()
def road_curves(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    percentages=ROAD_PERCENTAGES,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    start: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Target-class probability ``[B, 2, P]`` (order 0: MoRF, 1: LeRF) at each percentage.

    ``start``: the global index of ``images[0]`` (image ``start + j``'s noise is drawn from a
    generator seeded with ``(seed, start + j)``)."""
    if saliency.shape[0] != images.shape[0] or saliency.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"saliency of shape {tuple(saliency.shape)} does not match images "
            f"{tuple(images.shape)}; expected [B,1,H,W]"
        )
    b, c, h, w = images.shape
    n_p = len(percentages)
    per_image = 2 * n_p
    ranks = pixel_ranks(saliency.to(images.device), seed)
    masks = removal_masks(ranks, percentages).cpu().numpy().reshape(b, per_image, h, w)
    host = images.detach().cpu().float().numpy()
    bs = batch_size or auto_batch_size(images[0].numel(), images.device)
    step = max(1, bs // per_image)  # images per forward pass
    probs = torch.empty(b, per_image, device=images.device)
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        filled = np.empty((hi - lo, per_image, c, h, w), dtype=np.float32)
        for i in range(lo, hi):
            rng = np.random.default_rng([seed, start + i])
            for m in range(per_image):
                filled[i - lo, m] = linear_impute(host[i], masks[i, m], noise, rng)
        x = torch.from_numpy(filled).to(images.device, images.dtype).view(-1, c, h, w)
        p = F.softmax(forward_model(model)(x).float(), dim=1).view(hi - lo, per_image, -1)
        probs[lo:hi] = p.gather(2, targets[lo:hi, None, None].expand(-1, per_image, 1))[..., 0]
    return probs.view(b, 2, n_p)


def road(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ROAD areas ``(morf [B], lerf [B])``: each order's mean probability over the
    percentages (keyword arguments: :func:`road_curves`)."""
    curves = road_curves(model, images, saliency, targets, **kwargs)
    return curves[:, 0].mean(1), curves[:, 1].mean(1)
