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
import torch.nn.functional as F
from torch import nn

from nicebench import GateMaskMethod, MethodError, register_method
from nicebench.gates import RANK_WINDOW, content_seed, gate_step
from nicebench.models import native_cpu_bf16

PRECISIONS = ("auto", "fp32", "bf16")
INIT_LOGIT = 1.0  # all gates open at the start (test mask ≈ 0.77)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def _bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@register_method("nice-opt")
class NiceOpt(GateMaskMethod):
    """NICE gates optimised per image by the batched (fused on CUDA) gate optimizer.

    Parameters: ``steps`` (T, the most Adam steps), ``lam`` (λ, weight of the mean expected L0),
    ``mu`` (μ, weight of the mask's total variation), ``cell`` (gate cell side in pixels, or
    ``"auto"``: 2 at 64 px), ``reference`` (``"zero"``, ``"mean"``, ``"lowres"``), ``samples``
    (gate samples per step), ``lr`` (Adam), ``target`` (``"label"``: the targets passed to
    ``explain``; ``"pred"``: the classifier's prediction on the clean image), ``patience``
    (checks with an unchanged mask before an image stops; 0 = never stop early), ``check_every``
    (steps between checks), ``tol`` (share of cells that may flip between checks and still count
    as unchanged), ``seed``, ``rank_window`` (tie-break window of the explanation map as a share
    of the grid's side, 0 = by ``σ(log α)`` alone; it does not change the mask), ``precision``
    (the classifier's forward/backward: ``"bf16"`` autocast, ``"fp32"``, or ``"auto"``: bf16 on
    CUDA and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), fp32 elsewhere).
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
        samples: int = 1,
        lr: float = 0.2,
        target: str = "label",
        patience: int = 2,
        check_every: int = 5,
        tol: float = 0.05,
        seed: int = 0,
        rank_window: float = RANK_WINDOW,
        precision: str = "auto",
    ):
        super().__init__(
            model, reference=reference, cell=cell, target=target, rank_window=rank_window
        )
        if steps < 1 or samples < 1 or check_every < 1 or patience < 0:
            raise MethodError("nice-opt: steps, samples, check_every >= 1 and patience >= 0")
        self.steps, self.lam, self.mu = int(steps), float(lam), float(mu)
        self.samples, self.lr = int(samples), float(lr)
        self.patience, self.check_every, self.seed = int(patience), int(check_every), int(seed)
        self.tol = float(tol)
        if precision not in PRECISIONS:
            raise MethodError(f"nice-opt: precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.last_stats: dict[str, Any] = {}
        self._memo: tuple[tuple, torch.Tensor] | None = None

    # -- helpers --------------------------------------------------------------------------------
    def targets_for(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """As :meth:`GateMaskMethod.targets_for`, the predictions at the optimiser's precision."""
        if self.target == "pred" or targets is None:
            with torch.no_grad(), _bf16_autocast(images.device, self.uses_bf16(images.device)):
                return self.model(images).argmax(1)
        return torch.as_tensor(targets, device=images.device).long().reshape(-1)

    def uses_bf16(self, device: torch.device | str) -> bool:
        """Whether the classifier runs under bf16 autocast on ``device``."""
        if self.precision != "auto":
            return self.precision == "bf16"
        return torch.device(device).type == "cuda" or native_cpu_bf16()

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

    def _optimise(self, images: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        b, c, height, width = images.shape
        dev = images.device
        cell = self.cell_size(height, width)
        h, w = math.ceil(height / cell), math.ceil(width / cell)
        ref = self.reference_image(images)
        per_image_ref = ref.shape[0] == b and b > 1
        s, (b1, b2) = self.samples, ADAM_BETAS
        cuda = dev.type == "cuda"
        bf16 = self.uses_bf16(dev)  # decided once, not per step

        la = torch.full((b, 1, h, w), INIT_LOGIT, device=dev)
        m, v = torch.zeros_like(la), torch.zeros_like(la)
        prev = la >= 0
        stable = torch.zeros(b, dtype=torch.long, device=dev)
        active = torch.ones(b, dtype=torch.bool, device=dev)
        n_steps = torch.zeros(b, dtype=torch.long, device=dev)
        idx = torch.arange(b, device=dev)
        for step in range(self.steps):
            full = len(idx) == b
            x_a = images if full else images[idx]
            r_a = ref[idx] if per_image_ref and not full else ref
            la_a = (la if full else la[idx]).detach().requires_grad_(True)
            x_t, l0, tv = gate_step(la_a, x_a, r_a, seeds[idx], step * s, cell=cell, samples=s)
            if cuda:
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            with _bf16_autocast(dev, bf16):
                logits = self.model(x_t)
            ce = F.cross_entropy(logits.float(), y[idx].repeat(s), reduction="none")
            loss = (ce.view(s, -1).mean(0) + self.lam * l0 + self.mu * tv).sum()
            (g,) = torch.autograd.grad(loss, la_a)

            # Adam with per-image state (bias correction by each image's own step count)
            t = step + 1  # every running image has taken all steps so far
            m[idx] = b1 * m[idx] + (1 - b1) * g
            v[idx] = b2 * v[idx] + (1 - b2) * g * g
            upd = (m[idx] / (1 - b1**t)) / ((v[idx] / (1 - b2**t)).sqrt() + ADAM_EPS)
            la[idx] = la[idx] - self.lr * upd
            n_steps[idx] += 1

            if self.patience and t % self.check_every == 0:
                keep = la[idx] >= 0
                same = (keep != prev[idx]).flatten(1).float().mean(1) <= self.tol
                stable[idx] = torch.where(same, stable[idx] + 1, torch.zeros_like(stable[idx]))
                prev[idx] = keep
                active[idx] = stable[idx] < self.patience
                idx = active.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
        self.last_stats = {
            "cell": cell,
            "steps_mean": n_steps.float().mean().item(),
            "steps_max": int(n_steps.max().item()),
            "stopped_early": int((n_steps < self.steps).sum().item()),
        }
        return la.detach()

    def log_alpha(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Optimised gate logits ``[B,1,h,w]`` on the cell grid."""
        return self._logits(images, targets)
