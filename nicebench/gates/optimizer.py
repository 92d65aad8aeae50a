"""The batch gate optimizer: per-image hard-concrete gate logits fitted with Adam against NICE's
loss, for a whole batch at once (``nice-opt`` starts every gate open, ``nice-refined`` from NICE's
generator).

Each image's logits ``log α`` ``[1,h,w]`` (cells of ``cell``×``cell`` pixels) take at most
``steps`` Adam steps on

    CE(f(z ⊙ x + (1 − z) ⊙ r), target) + λ · mean E[L0(z)] + μ · TV(z)

with ``samples`` hard-concrete samples per step (:func:`nicebench.gates.gate_step`: the fused
Triton kernel on CUDA, the PyTorch reference elsewhere). The loss is summed over images and Adam
keeps per-image state, so an image's trajectory does not depend on the others; its noise comes
from a counter-based generator seeded per image (``seeds``). An image stops early once its binary
mask (``log α ≥ 0``) has not changed (up to a share ``tol`` of its cells) for ``patience`` checks,
one every ``check_every`` steps; only the images still running go through the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .fused import gate_step

__all__ = ["ADAM_BETAS", "ADAM_EPS", "GateOptimizer", "optimise_gates"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class GateOptimizer:
    """The optimizer's knobs (see the module docstring)."""

    steps: int
    lam: float
    mu: float
    lr: float
    samples: int = 1
    patience: int = 2
    check_every: int = 5
    tol: float = 0.05
    bf16: bool = False


def optimise_gates(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    reference: torch.Tensor,
    seeds: torch.Tensor,
    init: torch.Tensor,
    cell: int,
    opt: GateOptimizer,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Optimised gate logits ``[B,1,h,w]`` from ``init`` (same shape) and the run's figures
    (``steps_mean``, ``steps_max``, ``stopped_early``). ``reference``: ``[1,C,1,1]``,
    ``[1,C,H,W]`` or one per image ``[B,C,H,W]``."""
    b = images.shape[0]
    dev = images.device
    per_image_ref = reference.shape[0] == b and b > 1
    s, (b1, b2) = opt.samples, ADAM_BETAS
    cuda = dev.type == "cuda"

    la = init.detach().to(dev, torch.float32).clone()
    m, v = torch.zeros_like(la), torch.zeros_like(la)
    prev = la >= 0
    stable = torch.zeros(b, dtype=torch.long, device=dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    n_steps = torch.zeros(b, dtype=torch.long, device=dev)
    idx = torch.arange(b, device=dev)
    with torch.enable_grad():
        for step in range(opt.steps):
            full = len(idx) == b
            x_a = images if full else images[idx]
            r_a = reference[idx] if per_image_ref and not full else reference
            la_a = (la if full else la[idx]).detach().requires_grad_(True)
            x_t, l0, tv = gate_step(la_a, x_a, r_a, seeds[idx], step * s, cell=cell, samples=s)
            if cuda:
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opt.bf16):
                logits = model(x_t)
            ce = F.cross_entropy(logits.float(), targets[idx].repeat(s), reduction="none")
            loss = (ce.view(s, -1).mean(0) + opt.lam * l0 + opt.mu * tv).sum()
            (g,) = torch.autograd.grad(loss, la_a)

            # Adam with per-image state (bias correction by each image's own step count)
            t = step + 1  # every running image has taken all steps so far
            m[idx] = b1 * m[idx] + (1 - b1) * g
            v[idx] = b2 * v[idx] + (1 - b2) * g * g
            upd = (m[idx] / (1 - b1**t)) / ((v[idx] / (1 - b2**t)).sqrt() + ADAM_EPS)
            la[idx] = la[idx] - opt.lr * upd
            n_steps[idx] += 1

            if opt.patience and t % opt.check_every == 0:
                keep = la[idx] >= 0
                same = (keep != prev[idx]).flatten(1).float().mean(1) <= opt.tol
                stable[idx] = torch.where(same, stable[idx] + 1, torch.zeros_like(stable[idx]))
                prev[idx] = keep
                active[idx] = stable[idx] < opt.patience
                idx = active.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
    stats = {
        "cell": cell,
        "steps_mean": n_steps.float().mean().item(),
        "steps_max": int(n_steps.max().item()) if b else 0,
        "stopped_early": int((n_steps < opt.steps).sum().item()),
    }
    return la.detach(), stats
