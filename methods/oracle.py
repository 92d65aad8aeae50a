"""``oracle``: the ground-truth object mask as the map (datasets with masks only).

The upper reference for localisation and for the compression track.
"""

from __future__ import annotations

from nicebench import Method, register_method


@register_method("oracle")
class Oracle(Method):
    """The dataset's object mask (1 inside, 0 outside); needs ``explain(..., masks=...)``."""

    uses_model = False
    needs_masks = True
    gate_mask = True

    def attribute(self, images, targets, masks=None, **kw):
        return masks.float()

    def binary_mask(self, images, targets, masks=None):
        """The object mask itself, as booleans ``[B,1,H,W]``."""
        return masks > 0.5
