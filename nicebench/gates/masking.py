"""What NICE-style gate methods share: the gate cell size and the reference image r.

The masked input is ``x̃ = z ⊙ x + (1 − z) ⊙ r``: ``r = 0`` in the authors' code ("zero"), the
dataset's mean colour ("mean"), or the image at low resolution as in the paper's
mixed-resolution pipeline ("lowres": area-downsampled ×4, bilinearly brought back up).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["REFERENCES", "LOWRES_FACTOR", "auto_cell", "reference_image"]

REFERENCES = ("zero", "mean", "lowres")
LOWRES_FACTOR = 4


def auto_cell(size: int) -> int:
    """Gate cell side for an image side: 1 up to 32 px (28-px digits, as the authors' code),
    2 below 128 px, 4 below 224 px, 8 from 224 px (docs/design.md §4.1: 4–8 at 224)."""
    return 1 if size <= 32 else 2 if size < 128 else 4 if size < 224 else 8


def reference_image(images: torch.Tensor, reference: str, mean: torch.Tensor) -> torch.Tensor:
    """``r`` for ``images`` ``[B,C,H,W]``; "zero" and "mean" come back broadcastable
    (``[1,C,1,1]``), "lowres" full size. ``mean`` is the classifier's normalisation mean."""
    c = images.shape[1]
    if reference == "zero":
        return images.new_zeros((1, c, 1, 1))
    if reference == "mean":
        return mean.to(images).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    if reference == "lowres":
        h, w = images.shape[-2:]
        small = (math.ceil(h / LOWRES_FACTOR), math.ceil(w / LOWRES_FACTOR))
        low = F.interpolate(images, size=small, mode="area")
        return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
