"""``grad-x-input``: gradient × input (Shrikumar et al. 2016), summed over colour channels."""

from __future__ import annotations

import torch
from nicebench import Method


class GradientTimesInput(Method):
    """Gradient × input: each pixel's first-order contribution to the target's logit."""

    needs_gradients = True  # explain() runs attribute() with autograd on, even under no_grad

    def __init__(self, model: torch.nn.Module | None, *, absolute: bool = False):
        super().__init__(model)
        self.absolute = absolute

    def attribute(self, images: torch.Tensor, targets: torch.Tensor, **kw) -> torch.Tensor:
        # images is explain()'s own detached copy: requires_grad_ on it is safe
        images.requires_grad_(True)
        score = self.model(images).gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, images)
        contribution = (grad * images).sum(1, keepdim=True)  # [B,1,H,W]
        return contribution.abs() if self.absolute else contribution
