"""The compression track (docs/design.md §6): saliency-driven mixed-resolution images coded with real codecs.

``compress(images, saliency_or_mask, keep=0.2, codec="jpeg", quality=75, factor=4)`` keeps the
salient blocks sharp, replaces the rest by a ``factor``-times downsampled copy, encodes the result
in memory with Pillow and reports bytes, ratios to the reference (the original coded with the same
settings), bpp with and without the codec's header, PSNR and SSIM. This package is the coding math
alone (mixed resolution, codecs, rate curves, the torch-free summary); the half of the track that
runs the classifier (per-image rows of operating points and quality sweeps) is
:mod:`nicebench.metrics.compression_track`.

The package imports its parts on first use (PEP 562): :mod:`.summary` and :mod:`.rate` are
torch-free, so the report reads a run's compression summary without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "MaskError",
    "CompressionResult",
    "compress",
    "bd_rate",
    "headline_ratio",
    "summarise",
    "low_resolution",
    "mix",
    "snap_mask",
    "topk_mask",
]

# public name → the submodule that defines it
_EXPORTS = {
    "MaskError": "mixed",
    "low_resolution": "mixed",
    "mix": "mixed",
    "snap_mask": "mixed",
    "topk_mask": "mixed",
    "CompressionResult": "pipeline",
    "compress": "pipeline",
    "bd_rate": "rate",
    "headline_ratio": "rate",
    "summarise": "summary",
}

if TYPE_CHECKING:
    from .mixed import MaskError, low_resolution, mix, snap_mask, topk_mask
    from .pipeline import CompressionResult, compress
    from .rate import bd_rate, headline_ratio
    from .summary import summarise


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nicebench.compression' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
