"""Per-image metrics of gate-mask methods (NICE): how much a mask keeps and whether it suffices."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.inference import forward_model

__all__ = ["mask_share", "masked_correct"]


def mask_share(mask: torch.Tensor) -> torch.Tensor:
    """Share of pixels kept per image, ``[B]``, of a ``[B,1,H,W]`` mask (bool or in [0, 1])."""
    return mask.flatten(1).float().mean(1)


@torch.no_grad()
def masked_correct(
    model: nn.Module,
    images: torch.Tensor,
    mask: torch.Tensor,
    composite_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
) -> torch.Tensor:
    """1.0 where the classifier's prediction on ``composite_fn(images, mask)`` is the label, ``[B]``.

    ``composite_fn`` is the method's own compositing (e.g. ``nice.composite``: kept pixels of the
    image, the method's reference elsewhere).
    """
    x = composite_fn(images, mask)
    pred = forward_model(model)(x).argmax(1)
    return (pred == labels.to(pred.device)).float()
