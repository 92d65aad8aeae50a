"""``nice-refined``: NICE's amortized gates as the start, a few steps of the batch gate optimizer
as the finish.

NICE's generator gives every image its gate logits in one forward pass; the batch gate optimizer
(:func:`nicebench.gates.optimise_gates`, the one ``nice-opt`` runs from all-open gates) then
refines them for each image on its own, for ``steps`` Adam steps against the loss the generator
was trained on (NICE's λ, μ, reference and cell). ``steps=0`` is ``nice``; more steps move the
mask from the amortized towards the per-image optimum, at one forward and backward pass of the
classifier per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nicebench import MethodError, register_method
from nicebench.gates import GateOptimizer, content_seed, optimise_gates
from nicebench.models import BF16_PRECISIONS, uses_bf16

from .nice import EXPLAIN_ONLY, Nice

PRECISIONS = BF16_PRECISIONS
REFINE_ONLY = ("steps", "refine_lr", "patience", "check_every", "tol", "precision")


@register_method("nice-refined")
class NiceRefined(Nice):
    """NICE's generator's gate logits refined per image by the batch gate optimizer.

    Parameters: NICE's (the generator is ``nice``'s with the same parameters, from the same
    cache), and for the refinement ``steps`` (Adam steps; 0 = ``nice``), ``refine_lr`` (Adam's
    step size), ``patience``, ``check_every``, ``tol`` (early stop, as ``nice-opt``; ``patience=0``
    runs every step), ``precision`` (the classifier's forward/backward during the refinement:
    ``"bf16"``, ``"fp32"`` or ``"auto"``, as ``nice-opt``).
    """

    needs_gradients = True
    quick_params = {**Nice.quick_params, "steps": 3}
    explain_only = EXPLAIN_ONLY + REFINE_ONLY

    def __init__(
        self,
        model: nn.Module | None,
        *,
        steps: int = 10,
        refine_lr: float = 0.3,
        patience: int = 0,
        check_every: int = 5,
        tol: float = 0.05,
        precision: str = "auto",
        **params: Any,
    ):
        super().__init__(model, **params)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise MethodError(f"nice-refined: steps must be an integer ≥ 0, got {steps!r}")
        if patience < 0 or check_every < 1:
            raise MethodError("nice-refined: patience ≥ 0 and check_every ≥ 1")
        if precision not in PRECISIONS:
            raise MethodError(
                f"nice-refined: precision must be one of {PRECISIONS}, got {precision!r}"
            )
        self.steps, self.refine_lr = steps, float(refine_lr)
        self.patience, self.check_every, self.tol = int(patience), int(check_every), float(tol)
        self.precision = precision
        self.last_stats: dict[str, Any] = {}

    def uses_bf16(self, device: torch.device | str) -> bool:
        """Whether the classifier runs under bf16 autocast during the refinement."""
        return uses_bf16(self.precision, device)

    def gate_logits(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The generator's logits after ``steps`` refinement steps."""
        start = super().gate_logits(images, targets)
        if self.steps == 0:
            return start
        opt = GateOptimizer(
            steps=self.steps,
            lam=float(self.lam),
            mu=self.mu,
            lr=self.refine_lr,
            patience=self.patience,
            check_every=self.check_every,
            tol=self.tol,
            bf16=self.uses_bf16(images.device),
        )
        la, self.last_stats = optimise_gates(
            self.model,
            images,
            self.targets_for(images, targets),
            self.reference_image(images),
            content_seed(images, self.seed),
            start,
            self.cell_size(*images.shape[-2:]),
            opt,
        )
        return la
