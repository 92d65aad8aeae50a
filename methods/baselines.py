"""Sanity baselines that ignore the classifier: ``random``, ``center`` and ``edges``.

Every leaderboard shows them: a method that does not beat them explains nothing.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from nicebench import Method, register_method


@register_method("random")
class RandomMap(Method):
    """Uniform random map, seeded per image from its content (so batches don't matter)."""

    uses_model = False

    def __init__(self, model=None, *, seed: int = 0):
        super().__init__(model)
        self.seed = seed

    def attribute(self, images, targets, **kw):
        b, _, h, w = images.shape
        keys = (images * 255).round().to(torch.uint8).cpu().numpy()
        maps = []
        for i in range(b):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(keys[i]))
            maps.append(torch.rand(1, h, w, generator=gen))
        return torch.stack(maps).to(images.device)


@register_method("center")
class CenterGaussian(Method):
    """A centred isotropic Gaussian of standard deviation ``sigma`` × image size."""

    uses_model = False

    def __init__(self, model=None, *, sigma: float = 0.25):
        super().__init__(model)
        self.sigma = sigma

    def attribute(self, images, targets, **kw):
        b, _, h, w = images.shape
        yy = (torch.arange(h, device=images.device) - (h - 1) / 2) / (self.sigma * h)
        xx = (torch.arange(w, device=images.device) - (w - 1) / 2) / (self.sigma * w)
        g = torch.exp(-0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2))
        return g.expand(b, 1, h, w).clone()


@register_method("edges")
class SobelEdges(Method):
    """Sobel gradient magnitude of the grey-level image (an edge detector, not an explanation)."""

    uses_model = False

    def attribute(self, images, targets, **kw):
        grey = images.mean(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=images.device)
        k = torch.stack([kx, kx.T])[:, None]
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k)
        return g.pow(2).sum(1, keepdim=True).sqrt()
