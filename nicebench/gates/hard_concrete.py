"""The hard-concrete gate (Louizos, Welling & Kingma 2018) as used by NICE, in plain PyTorch.

A gate with logit ``log_alpha`` is a stretched, clamped binary concrete variable:
``s = σ((logit(u) + log α)/β)``, ``z = clamp(s·(ζ−γ)+γ, 0, 1)`` with ``u ~ U(0,1)``. It is exactly 0
or exactly 1 with non-zero probability, and its expected L0 norm ``P(z ≠ 0)`` has a closed form
that is differentiable in ``log α``. Constants are NICE's: γ = −0.1, ζ = 1.1, β = 2/3.

These functions are the reference that the fused Triton kernel (:mod:`nicebench.gates.fused`) is
compared against; they broadcast over any shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..method import MethodError

__all__ = [
    "GAMMA",
    "ZETA",
    "BETA",
    "EPS",
    "sample",
    "test_mask",
    "expected_l0",
    "prob_zero",
    "prob_one",
    "total_variation",
    "upsample_cells",
    "check_rank_window",
    "rank_window_cells",
    "ranked_test_mask",
    "ranked_mask_map",
]

GAMMA = -0.1
ZETA = 1.1
BETA = 2.0 / 3.0
EPS = 1e-6  # u is clamped to [EPS, 1-EPS] so logit(u) stays finite


def sample(
    log_alpha: torch.Tensor,
    u: torch.Tensor | None = None,
    beta: float = BETA,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A training sample of the gates, differentiable in ``log_alpha``.

    ``u`` (uniform noise of ``log_alpha``'s shape) may be given so other implementations can use
    the same noise; otherwise it is drawn with ``generator`` on ``log_alpha``'s device.
    """
    if u is None:
        u = torch.rand(
            log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype
        )
    u = u.to(log_alpha.dtype).clamp(EPS, 1 - EPS)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def test_mask(log_alpha: torch.Tensor) -> torch.Tensor:
    """The deterministic test-time mask ``clamp(σ(log α)·(ζ−γ)+γ, 0, 1)``."""
    return (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def expected_l0(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """``P(z ≠ 0) = σ(log α − β·log(−γ/ζ))`` per gate (the L0 penalty NICE minimises)."""
    return torch.sigmoid(log_alpha - beta * math.log(-GAMMA / ZETA))


def prob_zero(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """``P(z = 0) = 1 − E[L0]``: the gate is exactly closed."""
    return torch.sigmoid(beta * math.log(-GAMMA / ZETA) - log_alpha)


def prob_one(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """``P(z = 1) = σ(log α − β·log((1−γ)/(ζ−1)))``: the gate is exactly open."""
    return torch.sigmoid(log_alpha - beta * math.log((1 - GAMMA) / (ZETA - 1)))


def total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontal and vertical neighbours, per image.

    ``mask`` is ``[B, ..., h, w]``; returns ``[B]`` (0 for a 1×1 grid).
    """
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().flatten(1)
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().flatten(1)
    n = dy.shape[1] + dx.shape[1]
    if n == 0:
        return mask.new_zeros(mask.shape[0])
    return (dy.sum(1) + dx.sum(1)) / n


def upsample_cells(z: torch.Tensor, cell: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Nearest upsampling of a cell grid ``[B,C,h,w]`` by ``cell``, cropped to ``size`` if given."""
    if cell != 1:
        z = z.repeat_interleave(cell, dim=-2).repeat_interleave(cell, dim=-1)
    if size is not None:
        if z.shape[-2] < size[0] or z.shape[-1] < size[1]:
            z = F.pad(
                z,
                (0, max(size[1] - z.shape[-1], 0), 0, max(size[0] - z.shape[-2], 0)),
                mode="replicate",
            )
        z = z[..., : size[0], : size[1]]
    return z


TIE_BREAK = 1e-3
RANK_WINDOW = 0.22  # default tie-break window: this share of the cell grid's shorter side


def check_rank_window(share: float, owner: str) -> float:
    """``share`` as a float once it is a valid tie-break window (in [0, 1)), else a
    :class:`~nicebench.MethodError` naming ``owner``, the method that was given it."""
    if not 0 <= float(share) < 1:
        raise MethodError(f"{owner}: rank_window must be in [0, 1), got {share!r}")
    return float(share)


def rank_window_cells(h: int, w: int, share: float = RANK_WINDOW) -> int:
    """The odd window side (in cells) of :func:`ranked_test_mask` for an ``h×w`` grid: about
    ``share`` of the shorter side, at least 3 (1 = no window when ``share`` is 0)."""
    if share <= 0:
        return 1
    return max(3, int(round(share * min(h, w))) | 1)


def ranked_test_mask(log_alpha: torch.Tensor, window: int = 1) -> torch.Tensor:
    """The test-time mask with an order inside its saturated plateaus, for ranking metrics.

    The clamp makes most gates exactly 0 or 1 and large logits saturate ``σ(log α)`` to 1.0 in
    float32, so the gate alone leaves whole regions tied. Ties are broken (at a scale of 1e-3,
    so no gate crosses another of a different test mask value by more than that) by the mean
    test mask of the ``window×window`` cells around each gate when ``window > 1`` (the interior
    of large kept regions first, isolated kept cells last), then by ``σ(log α)``:
    ``(1 − ε)·z + ε·tie`` with ``ε = 1e-3`` and ``tie ∈ [0, 1]``, so the map stays in [0, 1].
    Which gates are open does not change. ``log_alpha`` is ``[B,1,h,w]``.
    """
    z = test_mask(log_alpha)
    tie = torch.sigmoid(log_alpha)
    if window > 1:
        local = F.avg_pool2d(z, window, stride=1, padding=window // 2, count_include_pad=False)
        tie = (local + TIE_BREAK * tie) / (1 + TIE_BREAK)
    return (1 - TIE_BREAK) * z + TIE_BREAK * tie


def ranked_mask_map(
    log_alpha: torch.Tensor, cell: int, size: tuple[int, int], share: float = RANK_WINDOW
) -> torch.Tensor:
    """The explanation map of a gate method: :func:`ranked_test_mask` with a window of ``share``
    of the grid's side (:func:`rank_window_cells`), upsampled from cells to ``size``."""
    window = rank_window_cells(*log_alpha.shape[-2:], share=share)
    return upsample_cells(ranked_test_mask(log_alpha, window), cell, size)
