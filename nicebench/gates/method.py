"""``GateMaskMethod``: the base of NICE-style methods, which implement only their gate logits.

A gate method explains with one hard-concrete gate per cell of ``cell × cell`` pixels. It
implements :meth:`GateMaskMethod.gate_logits` (``log α`` on the cell grid); the base derives the
explanation map (the test-time mask, saturated ties broken by the neighbourhood), the binary mask
the compression track codes (``z ≥ 0.5`` ⇔ ``log α ≥ 0``) and the masked input
``z ⊙ x + (1 − z) ⊙ r`` with the method's reference ``r``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..method import Method, MethodError
from .hard_concrete import RANK_WINDOW, check_rank_window, ranked_mask_map, upsample_cells
from .masking import REFERENCES, auto_cell, reference_image

__all__ = ["GateMaskMethod", "TARGETS"]

TARGETS = ("label", "pred")


class GateMaskMethod(Method):
    """A method whose map is a gate mask; subclasses override :meth:`gate_logits` only.

    Parameters every gate method takes (subclasses pass them on to ``super().__init__``):
    ``reference`` (``"zero"``, ``"mean"``: the classifier's normalisation mean, ``"lowres"``: the
    image ×4 area-downsampled and bilinearly brought back up), ``cell`` (gate cell side in pixels
    or ``"auto"``: :func:`nicebench.gates.masking.auto_cell`), ``target`` (``"label"``: the targets
    passed to ``explain``, ``"pred"``: the classifier's prediction), ``rank_window`` (tie-break
    window of the map as a share of the grid's side; 0 = by ``σ(log α)`` alone; it does not change
    which pixels are kept).
    """

    gate_mask: ClassVar[bool] = True
    masked_input: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module | None,
        *,
        reference: str = "mean",
        cell: int | str = "auto",
        target: str = "label",
        rank_window: float = RANK_WINDOW,
    ):
        super().__init__(model)
        name = self.name
        if model is None:
            raise MethodError(f"{name}: needs the classifier it explains")
        if reference not in REFERENCES:
            raise MethodError(f"{name}: reference must be one of {REFERENCES}, got {reference!r}")
        if target not in TARGETS:
            raise MethodError(f"{name}: target must be one of {TARGETS}, got {target!r}")
        if cell != "auto" and (isinstance(cell, bool) or not isinstance(cell, int) or cell < 1):
            raise MethodError(f"{name}: cell must be 'auto' or a positive int, got {cell!r}")
        self.reference, self.cell, self.target = reference, cell, target
        self.rank_window = check_rank_window(rank_window, name)

    # -- the one function a gate method overrides --------------------------------------------------
    def gate_logits(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Gate logits ``log α`` ``[B,1,⌈H/cell⌉,⌈W/cell⌉]`` (cell = :meth:`cell_size`) for
        ``images`` ``[B,C,H,W]`` in [0, 1] on :attr:`device`; ``targets`` may be None (then, or
        with ``target="pred"``, :meth:`targets_for` gives the classifier's predictions)."""
        raise NotImplementedError(f"{type(self).__name__} must override gate_logits()")

    # -- shared parts ------------------------------------------------------------------------------
    def cell_size(self, height: int, width: int) -> int:
        """The gate cell side used for images of this size."""
        return auto_cell(min(height, width)) if self.cell == "auto" else int(self.cell)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The gate grid ``(h, w)`` for images of this size."""
        cell = self.cell_size(height, width)
        return math.ceil(height / cell), math.ceil(width / cell)

    def classifier_mean(self, channels: int) -> torch.Tensor:
        """The classifier's normalisation mean ``[1,C,1,1]`` (0.5 when it has none)."""
        mean = getattr(self.model, "mean", None)
        return mean if isinstance(mean, torch.Tensor) else torch.full((1, channels, 1, 1), 0.5)

    def reference_image(self, images: torch.Tensor) -> torch.Tensor:
        """The reference ``r`` for ``images`` (broadcastable, or full size for ``"lowres"``)."""
        return reference_image(images, self.reference, self.classifier_mean(images.shape[1]))

    def targets_for(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The classes the gates must keep: ``targets`` with ``target="label"``, else (or when
        ``targets`` is None) the classifier's predictions on ``images``."""
        if self.target == "pred" or targets is None:
            with torch.no_grad():
                return self.model(images).argmax(1)
        return torch.as_tensor(targets, device=images.device).long().reshape(-1)

    def _logits(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        images = images.to(self.device, torch.float32)
        la = self.gate_logits(images, targets)
        grid = self.grid_size(*images.shape[-2:])
        if (
            la.dim() != 4
            or la.shape[0] != len(images)
            or la.shape[1] != 1
            or tuple(la.shape[-2:]) != grid
        ):
            raise MethodError(
                f"{self.name}: gate_logits gave {tuple(la.shape)}, expected "
                f"[{len(images)},1,{grid[0]},{grid[1]}]"
            )
        return la.detach()

    def attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The test-time mask ``clamp(σ(log α)·(ζ−γ)+γ, 0, 1)`` upsampled to ``[B,1,H,W]``, its
        saturated ties broken (at 1e-3) by the mean mask of a window of ``rank_window`` of the
        grid's side around each cell (:func:`nicebench.gates.ranked_mask_map`)."""
        size = tuple(images.shape[-2:])
        la = self._logits(images, targets)
        return ranked_mask_map(la, self.cell_size(*size), size, self.rank_window)

    def binary_mask(
        self, images: torch.Tensor, targets: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """The kept pixels, test mask ``≥ 0.5`` ⇔ ``log α ≥ 0`` (bool ``[B,1,H,W]``)."""
        size = tuple(images.shape[-2:])
        keep = self._logits(images, targets) >= 0
        return upsample_cells(keep, self.cell_size(*size), size).to(images.device)

    def composite(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask ⊙ x + (1 − mask) ⊙ r`` with this method's reference ``r``."""
        m = mask.to(images.device, images.dtype)
        return m * images + (1 - m) * self.reference_image(images)
