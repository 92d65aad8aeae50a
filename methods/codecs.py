"""Codec-only baselines ``jpeg``, ``webp``, ``avif`` for the compression track (no saliency).

Each codes the whole image at a sweep of qualities (5…95 by default); the compression track draws
that sweep as the rate–accuracy curve every saliency method is measured against. They explain
nothing: the runner skips the explanation metrics for ``codec_only`` methods and calls
``nicebench.compression.quality_sweep_rows(model, images, labels, codec=m.codec,
qualities=m.qualities, subsampling=m.subsampling)`` for them instead of ``compression_rows``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from nicebench import Method, register_method
from nicebench.compression.codecs import check_codec, check_quality, check_subsampling

SWEEP = tuple(range(5, 96, 5))


class CodecOnly(Method):
    """Uniform-quality coding with one codec: its map is uniform (every pixel equally important).

    The uniform map is what uniform-quality coding assumes. Given to
    ``nicebench.compress(..., keep=1)`` it keeps every block, i.e. the plain codec at that
    quality; at ``keep < 1`` its ties are broken at random (the ``random`` baseline). Parameters:
    ``qualities`` (the sweep) and ``subsampling`` (chroma; WebP is always 4:2:0).
    """

    codec: ClassVar[str] = ""
    codec_only = True
    uses_model = False
    deterministic = True

    def __init__(
        self, model=None, *, qualities: tuple[int, ...] = SWEEP, subsampling: str = "4:2:0"
    ):
        super().__init__(model)
        self.qualities = tuple(check_quality(q) for q in qualities)
        if not self.qualities:
            raise ValueError(f"{self.codec}: qualities must name at least one quality")
        self.subsampling = subsampling
        check_subsampling(self.codec, subsampling)

    def check_available(self) -> str:
        """The codec's name; raises ``CodecError`` if this Pillow build can't write it."""
        return check_codec(self.codec)

    def attribute(self, images, targets, **kw):
        b, _, h, w = images.shape
        return torch.ones(b, 1, h, w, device=images.device)


@register_method("jpeg")
class JpegCodec(CodecOnly):
    """JPEG (libjpeg-turbo through Pillow, optimize=True) at a quality sweep."""

    codec = "jpeg"


@register_method("webp")
class WebpCodec(CodecOnly):
    """Lossy WebP (libwebp through Pillow) at a quality sweep."""

    codec = "webp"


@register_method("avif")
class AvifCodec(CodecOnly):
    """AVIF (libavif through Pillow) at a quality sweep."""

    codec = "avif"
