"""``nice-opt``: NICE's hard-concrete gates optimised per image, for a whole batch at once.

Each image gets its own gate logits ``log α`` ``[1,h,w]`` (cells of ``cell``×``cell`` pixels),
optimised with Adam for at most ``steps`` steps against NICE's loss

    CE(f(z ⊙ x + (1 − z) ⊙ r), target) + λ · mean E[L0(z)] + μ · TV(z)

with ``samples`` hard-concrete samples per step. The gate step (noise, nearest upsampling,
compositing, L0, TV) is :func:`nicebench.gates.gate_step`: the fused Triton kernel on CUDA, the
PyTorch reference elsewhere. The loss is summed over images and Adam keeps per-image state, so an
image's trajectory does not depend on the others; its noise comes from a counter-based generator
seeded by its content (:func:`nicebench.gates.content_seed`), so explaining a batch equals
explaining its images one by one. An image stops early once its binary test mask (``log α ≥ 0``)
has not changed for ``patience`` checks (one check every ``check_every`` steps); only the images
still running go through the classifier. On a GPU the classifier runs under bf16 autocast on
channels_last inputs, and on a CPU with native bf16 arithmetic under bf16 autocast too (about 2×
the fp32 throughput of a batch on this project's Zen 4 cores; ``precision`` overrides).

``explain`` returns the test-time mask ``clamp(σ(log α)·(ζ−γ)+γ, 0, 1)`` upsampled to the image
(as ``nice``); :meth:`NiceOpt.binary_mask` and :meth:`NiceOpt.composite` serve the compression
track. References ``r``: ``"zero"``, ``"mean"`` (the dataset's mean colour, the classifier's
normalisation mean), ``"lowres"`` (×4 area-downsampled and bilinearly brought back up).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nicebench import GateMaskMethod, MethodError, register_method
from nicebench.gates import RANK_WINDOW, GateOptimizer, content_seed, optimise_gates
from nicebench.models import BF16_PRECISIONS, uses_bf16

PRECISIONS = BF16_PRECISIONS
INIT_LOGIT = 1.0  # all gates open at the start (test mask ≈ 0.77)
# cell="auto": 2-px cells up to 32 px, else a grid of AUTO_GRID cells a side (8 px cells at
# 64 px, 28 px at 224 px). With 2-px cells at 64 px (32 × 32 gates) and one gate sample a step
# the masks scattered into ~10 pieces of dots; 8 × 8 gates and 4 samples a step give ~2 pieces at
# a deletion within the old default's interval; on 28-px Fashion-MNIST 2-px cells and 4 samples
# join its 1-px dots (11 pieces → 3.5) within the same bound (bench/nice_opt_masks.py on held-out
# images, issue 30)
AUTO_GRID = 8
SMALL_IMAGE, SMALL_CELL = 32, 2


def _bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@register_method("nice-opt")
class NiceOpt(GateMaskMethod):
    """NICE gates optimised per image by the batched (fused on CUDA) gate optimizer.

    Parameters: ``steps`` (T, the most Adam steps), ``lam`` (λ, weight of the mean expected L0),
    ``mu`` (μ, weight of the mask's total variation), ``cell`` (gate cell side in pixels, or
    ``"auto"``: 2 px up to 32 px, else a grid of :data:`AUTO_GRID` cells a side, 8 px at 64 px),
    ``reference``
    (``"zero"``, ``"mean"``, ``"lowres"``), ``samples``
    (gate samples per step), ``lr`` (Adam), ``target`` (``"label"``: the targets passed to
    ``explain``; ``"pred"``: the classifier's prediction on the clean image), ``patience``
    (checks with an unchanged mask before an image stops; 0 = never stop early), ``check_every``
    (steps between checks), ``tol`` (share of cells that may flip between checks and still count
    as unchanged), ``seed``, ``rank_window`` (tie-break window of the explanation map as a share
    of the grid's side, 0 = by ``σ(log α)`` alone; it does not change the mask), ``precision``
    (the classifier's forward/backward: ``"bf16"`` autocast, ``"fp32"``, or ``"auto"``: bf16 on
    CUDA and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), fp32 elsewhere),
    ``init`` (every gate's starting logit; :meth:`initial_logits` is the hook to start elsewhere).
    """

    needs_gradients = True
    deterministic = True
    quick_params = {"steps": 6, "check_every": 2}

    def __init__(
        self,
        model: nn.Module | None,
        *,
        steps: int = 40,
        lam: float = 2.0,
        mu: float = 0.1,
        cell: int | str = "auto",
        reference: str = "mean",
        samples: int = 4,
        lr: float = 0.2,
        target: str = "label",
        patience: int = 2,
        check_every: int = 5,
        tol: float = 0.05,
        seed: int = 0,
        rank_window: float = RANK_WINDOW,
        precision: str = "auto",
        init: float = INIT_LOGIT,
    ):
        super().__init__(
            model, reference=reference, cell=cell, target=target, rank_window=rank_window
        )
        if steps < 1 or samples < 1 or check_every < 1 or patience < 0:
            raise MethodError("nice-opt: steps, samples, check_every >= 1 and patience >= 0")
        self.steps, self.lam, self.mu = int(steps), float(lam), float(mu)
        self.samples, self.lr = int(samples), float(lr)
        self.patience, self.check_every, self.seed = int(patience), int(check_every), int(seed)
        self.tol, self.init = float(tol), float(init)
        if precision not in PRECISIONS:
            raise MethodError(f"nice-opt: precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.last_stats: dict[str, Any] = {}
        self._memo: tuple[tuple, torch.Tensor] | None = None

    # -- helpers --------------------------------------------------------------------------------
    def cell_size(self, height: int, width: int) -> int:
        """``cell``, or for ``"auto"`` :data:`SMALL_CELL` px up to :data:`SMALL_IMAGE` px, else the
        side that makes a grid of :data:`AUTO_GRID` cells."""
        if self.cell == "auto":
            side = min(height, width)
            return SMALL_CELL if side <= SMALL_IMAGE else math.ceil(side / AUTO_GRID)
        return int(self.cell)

    def targets_for(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """As :meth:`GateMaskMethod.targets_for`, the predictions at the optimiser's precision."""
        if self.target == "pred" or targets is None:
            with torch.no_grad(), _bf16_autocast(images.device, self.uses_bf16(images.device)):
                return self.model(images).argmax(1)
        return torch.as_tensor(targets, device=images.device).long().reshape(-1)

    def uses_bf16(self, device: torch.device | str) -> bool:
        """Whether the classifier runs under bf16 autocast on ``device``."""
        return uses_bf16(self.precision, device)

    # -- the optimizer --------------------------------------------------------------------------
    def gate_logits(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Optimised gate logits ``[B,1,h,w]`` (the last batch's result is memoised)."""
        y = self.targets_for(images, targets)
        seeds = content_seed(images, self.seed)
        key = (tuple(images.shape), tuple(seeds.tolist()), tuple(y.tolist()))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        with torch.enable_grad():
            la = self._optimise(images, y, seeds)
        self._memo = (key, la)
        return la

    def initial_logits(
        self, images: torch.Tensor, targets: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """The gate logits ``[B,1,h,w]`` the optimizer starts from: every gate at ``init``."""
        return torch.full((images.shape[0], 1, *grid), self.init, device=images.device)

    def optimizer(self, device: torch.device) -> GateOptimizer:
        """The optimizer's knobs for a batch on ``device``."""
        return GateOptimizer(
            steps=self.steps,
            lam=self.lam,
            mu=self.mu,
            lr=self.lr,
            samples=self.samples,
            patience=self.patience,
            check_every=self.check_every,
            tol=self.tol,
            bf16=self.uses_bf16(device),
        )

    def _optimise(self, images: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        cell = self.cell_size(height, width)
        grid = (math.ceil(height / cell), math.ceil(width / cell))
        init = self.initial_logits(images, y, grid)
        la, self.last_stats = optimise_gates(
            self.model,
            images,
            y,
            self.reference_image(images),
            seeds,
            init,
            cell,
            self.optimizer(images.device),
        )
        return la

    def log_alpha(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Optimised gate logits ``[B,1,h,w]`` on the cell grid."""
        return self._logits(images, targets)
