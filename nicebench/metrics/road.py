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

Two solvers give the same imputation (within 1e-12; the tests hold them to 1e-10 and to
pytorch-grad-cam's ROAD): on the CPU, scipy's sparse LU (:func:`linear_impute`), one image per
thread (``torch.get_num_threads()`` threads); on a GPU, :func:`linear_impute_batch`, a direct
block-tridiagonal Cholesky solve in float64 for every image, percentage and order of a chunk at
once (one batched ``W × W`` factorisation per image row). On this project's 2-core CPU the
sparse LU is the faster (67 ms against 185 ms an image at 64 px: the batched dense blocks cost
``O(H·W³)`` where the LU's fill is far smaller), so ``solver="auto"`` picks scipy on a CPU and the
batched solve on CUDA. The noise is drawn on the CPU from each image's generator in the same order
for both solvers. The classifier sees the imputed images in chunks (one forward pass per chunk,
across images, percentages and both orders) on the model's device.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

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
    "linear_impute_batch",
    "ROAD_SOLVERS",
    "removal_masks",
    "road_curves",
    "road",
]

ROAD_PERCENTAGES: tuple[float, ...] = S.ROAD_PERCENTAGES.default
ROAD_NOISE: float = S.ROAD_NOISE.default
ROAD_SOLVERS = ("auto", "scipy", "torch")
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


def _scipy_solution(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The removed pixels' values ``[n_removed, C]`` (row-major order), float64, by sparse LU."""
    c, h, w = image.shape
    weights, total = neighbour_weights(h, w)
    gone = np.flatnonzero(removed.reshape(-1))
    kept = image.reshape(c, -1).T.astype(np.float64)  # [N, C]
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
    return lu.solve(rhs)


def _noise(removed: np.ndarray, channels: int, noise: float, rng) -> np.ndarray | None:
    """The noise ``[n_removed, C]`` added to the removed pixels (None without noise)."""
    if not noise:
        return None
    n = int(np.count_nonzero(removed))
    return noise * (rng or np.random.default_rng()).standard_normal((n, channels))


def _check_removed(removed: np.ndarray | torch.Tensor, n: int) -> int:
    k = int(removed.sum())
    if k == n:
        raise ValueError("linear imputation needs at least one kept pixel")
    return k


def linear_impute(
    image: np.ndarray,
    removed: np.ndarray,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``image`` ``[C, H, W]`` with the pixels where ``removed`` ``[H, W]`` is true replaced by
    the solution of ``d_i x_i − Σ_{j removed} w_ij x_j = Σ_{j kept} w_ij v_j`` (each removed value
    the weighted mean of its neighbours' values, ``d_i = Σ_j w_ij``), plus ``noise``·N(0, 1)
    (scipy's sparse LU; the reference :func:`linear_impute_batch` is held to)."""
    c, h, w = image.shape
    if _check_removed(removed, h * w) == 0:
        return image.copy()
    values = _scipy_solution(image, removed)
    extra = _noise(removed, c, noise, rng)
    if extra is not None:
        values = values + extra
    out = image.reshape(c, -1).T.astype(np.float64)
    out[np.flatnonzero(removed.reshape(-1))] = values
    return out.T.reshape(c, h, w).astype(image.dtype)


def _row_blocks(
    m: torch.Tensor, d: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image row ``r``'s diagonal block ``[N, W, W]`` of the full-grid system (the removed
    pixels' equations; a kept pixel's row is the identity) and its coupling ``[N, W, W]`` to row
    ``r − 1`` (None for row 0). ``m``: removed as 0/1 ``[N, H, W]``, ``d``: total weights."""
    row = m[:, r]
    diag = torch.where(row > 0, d[r], torch.ones_like(row))
    side = -NEIGHBOUR_WEIGHTS[(0, 1)] * row[:, 1:] * row[:, :-1]
    block = torch.diag_embed(diag) + torch.diag_embed(side, 1) + torch.diag_embed(side, -1)
    if r == 0:
        return block, None
    up = m[:, r - 1]
    below = torch.diag_embed(-NEIGHBOUR_WEIGHTS[(-1, 0)] * row * up)
    right = torch.diag_embed(-NEIGHBOUR_WEIGHTS[(-1, 1)] * row[:, :-1] * up[:, 1:], 1)
    left = torch.diag_embed(-NEIGHBOUR_WEIGHTS[(-1, -1)] * row[:, 1:] * up[:, :-1], -1)
    return block, below + right + left


def linear_impute_batch(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """:func:`linear_impute` without noise for a batch, on the images' device: ``images``
    ``[N, C, H, W]`` and ``removed`` ``[N, H, W]`` (each with at least one kept pixel) give the
    imputed images ``[N, C, H, W]`` in float64.

    The system over the whole grid (a kept pixel's equation is ``x_i = 0``, its value moved to
    the right-hand side) is symmetric positive definite and block tridiagonal in image rows; it
    is solved exactly by block Cholesky, ``S_r = A_rr − X_r X_rᵀ``, ``X_r = A_{r,r−1} L_{r−1}^{−ᵀ}``,
    batched over the ``N`` systems and sequential over the ``H`` rows."""
    n, c, h, w = images.shape
    if removed.shape != (n, h, w):
        raise ValueError(
            f"removed {tuple(removed.shape)} does not match images {tuple(images.shape)}"
        )
    if bool((removed.flatten(1).all(1)).any()):
        raise ValueError("linear imputation needs at least one kept pixel")
    dev, f64 = images.device, torch.float64
    x = images.to(f64)
    m = removed.to(f64)
    kernel = torch.zeros(3, 3, dtype=f64, device=dev)
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        kernel[dy + 1, dx + 1] = weight
    kernel = kernel[None, None]
    d = F.conv2d(torch.ones(1, 1, h, w, dtype=f64, device=dev), kernel, padding=1)[0, 0]
    kept = (x * (1 - m)[:, None]).reshape(n * c, 1, h, w)
    rhs = F.conv2d(kept, kernel, padding=1).reshape(n, c, h, w) * m[:, None]
    b = rhs.permute(0, 2, 3, 1)  # [N, H, W, C]: row r's right-hand sides b[:, r]
    chol, coupling, forward = [], [], []
    lower = None
    for r in range(h):
        block, below = _row_blocks(m, d, r)
        rhs_r = b[:, r]
        if below is not None:
            xr = torch.linalg.solve_triangular(lower, below.transpose(1, 2), upper=False)
            xr = xr.transpose(1, 2)  # A_{r,r−1} L_{r−1}^{−T}
            block = block - xr @ xr.transpose(1, 2)
            rhs_r = rhs_r - xr @ forward[-1]
            coupling.append(xr)
        lower = torch.linalg.cholesky(block)
        chol.append(lower)
        forward.append(torch.linalg.solve_triangular(lower, rhs_r, upper=False))
    sol = [None] * h
    sol[h - 1] = torch.linalg.solve_triangular(chol[-1].transpose(1, 2), forward[-1], upper=True)
    for r in range(h - 2, -1, -1):
        y = forward[r] - coupling[r].transpose(1, 2) @ sol[r + 1]
        sol[r] = torch.linalg.solve_triangular(chol[r].transpose(1, 2), y, upper=True)
    values = torch.stack(sol, 1).permute(0, 3, 1, 2)  # [N, C, H, W]
    return torch.where(removed[:, None], values, x)


def removal_masks(ranks: torch.Tensor, percentages=ROAD_PERCENTAGES) -> torch.Tensor:
    """``[B, 2, P, H·W]`` booleans from pixel ranks ``[B, H·W]`` (0 = most salient): order 0 is
    MoRF (ranks below ``round(p·N)`` removed), order 1 LeRF (ranks at or above ``N − round(p·N)``)."""
    n = ranks.shape[1]
    k = torch.tensor([round(p * n) for p in percentages], device=ranks.device)
    morf = ranks[:, None, :] < k[None, :, None]
    lerf = ranks[:, None, :] >= (n - k)[None, :, None]
    return torch.stack([morf, lerf], 1)


def _resolve_solver(solver: str, device: torch.device) -> str:
    if solver not in ROAD_SOLVERS:
        raise ValueError(f"road: solver must be one of {ROAD_SOLVERS}, got {solver!r}")
    if solver == "auto":
        return "torch" if device.type == "cuda" else "scipy"
    return solver


def _impute_scipy(host: np.ndarray, masks: np.ndarray, noise: float, rngs: list) -> np.ndarray:
    """Images ``host`` ``[n, C, H, W]`` imputed under each of their masks ``[n, M, H, W]``,
    ``[n, M, C, H, W]`` float32, one image per thread."""
    n, m = masks.shape[:2]
    out = np.empty((n, m, *host.shape[1:]), dtype=np.float32)

    def one(i: int) -> None:
        for k in range(m):
            out[i, k] = linear_impute(host[i], masks[i, k], noise, rngs[i])

    with ThreadPoolExecutor(max(1, min(n, torch.get_num_threads()))) as pool:
        list(pool.map(one, range(n)))
    return out


def _impute_torch(
    images: torch.Tensor, masks: np.ndarray, noise: float, rngs: list
) -> torch.Tensor:
    """As :func:`_impute_scipy` by :func:`linear_impute_batch` on the images' device (the noise
    drawn on the CPU in the same order)."""
    n, m, h, w = masks.shape
    c = images.shape[1]
    removed = torch.from_numpy(masks).to(images.device).view(n * m, h, w)
    stacked = images[:, None].expand(n, m, c, h, w).reshape(n * m, c, h, w)
    # the factors hold 2·H·W² float64 numbers a system: solve at most ~256 MiB of them at once
    per_call = max(1, 2**28 // (16 * h * w * w))
    filled = torch.cat(
        [
            linear_impute_batch(stacked[j : j + per_call], removed[j : j + per_call])
            for j in range(0, n * m, per_call)
        ]
    ).view(n, m, c, h, w)
    if noise:
        extra = np.zeros((n, m, h * w, c))
        for i in range(n):
            for k in range(m):
                gone = np.flatnonzero(masks[i, k].reshape(-1))
                extra[i, k, gone] = _noise(masks[i, k], c, noise, rngs[i])
        shaped = torch.from_numpy(extra).to(images.device).view(n, m, h, w, c)
        filled = filled + shaped.permute(0, 1, 4, 2, 3)
    return filled.float()


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
    solver: str = "auto",
) -> torch.Tensor:
    """Target-class probability ``[B, 2, P]`` (order 0: MoRF, 1: LeRF) at each percentage.

    ``start``: the global index of ``images[0]`` (image ``start + j``'s noise is drawn from a
    generator seeded with ``(seed, start + j)``); ``solver``: ``"scipy"`` (sparse LU on the CPU,
    one image per thread), ``"torch"`` (:func:`linear_impute_batch` on the images' device) or
    ``"auto"`` (torch on CUDA, scipy elsewhere)."""
    if saliency.shape[0] != images.shape[0] or saliency.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"saliency of shape {tuple(saliency.shape)} does not match images "
            f"{tuple(images.shape)}; expected [B,1,H,W]"
        )
    solver = _resolve_solver(solver, images.device)
    b, c, h, w = images.shape
    n_p = len(percentages)
    per_image = 2 * n_p
    ranks = pixel_ranks(saliency.to(images.device), seed)
    masks = removal_masks(ranks, percentages).cpu().numpy().reshape(b, per_image, h, w)
    host = images.detach().cpu().float().numpy() if solver == "scipy" else None
    bs = batch_size or auto_batch_size(images[0].numel(), images.device)
    step = max(1, bs // per_image)  # images per forward pass
    probs = torch.empty(b, per_image, device=images.device)
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        rngs = [np.random.default_rng([seed, start + i]) for i in range(lo, hi)]
        if solver == "scipy":
            filled = torch.from_numpy(_impute_scipy(host[lo:hi], masks[lo:hi], noise, rngs))
        else:
            filled = _impute_torch(images[lo:hi].float(), masks[lo:hi], noise, rngs)
        x = filled.to(images.device, images.dtype).view(-1, c, h, w)
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
