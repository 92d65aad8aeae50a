"""RISE (Petsiuk, Das & Saenko, BMVC 2018): randomised input sampling for explanation.

``N`` random binary grids of ``grid × grid`` cells (each cell kept with probability ``p``) are
upsampled bilinearly to ``(grid+1)·cell`` pixels and cropped at a random shift in ``[0, cell)``,
giving smooth masks ``M_i``. The saliency of class ``c`` is the Monte-Carlo estimate
``S = Σ_i f_c(x ⊙ M_i) · M_i / (N · p)`` where ``f_c`` is the softmax probability. Masked-out
pixels take the ``baseline`` fill: ``"mean"`` (the classifier's normalisation mean, i.e. 0 in
normalised space, as the original code masks normalised tensors), ``"black"`` or ``"blur"``. The masks are
generated once per (seed, n_masks, grid, p, H, W) and reused; masks × images are evaluated in
batches of ``batch_size`` model inputs (default: sized by :func:`nicebench.batching.auto_batch_size`
for the device).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nicebench import Method, register_method
from nicebench.batching import auto_batch_size
from nicebench.metrics import substrate_image
from nicebench.models import forward_model


def rise_masks(n_masks: int, grid: int, p: float, size: tuple[int, int], seed: int) -> torch.Tensor:
    """RISE's masks ``[N,1,H,W]`` in [0,1]: random ``grid×grid`` cells, upsampled and shifted."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    cells = (torch.rand(n_masks, 1, grid, grid, generator=gen) < p).float()
    ch, cw = math.ceil(h / grid), math.ceil(w / grid)
    up = F.interpolate(
        cells, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear", align_corners=False
    )
    dy = torch.randint(0, ch, (n_masks,), generator=gen)
    dx = torch.randint(0, cw, (n_masks,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [N,H,1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [N,1,W]
    idx = torch.arange(n_masks)[:, None, None]
    return up[idx, 0, rows, cols].unsqueeze(1).clamp_(0, 1).contiguous()


@register_method("rise")
class Rise(Method):
    """RISE saliency: the probability-weighted average of random smooth masks."""

    deterministic = True
    needs_gradients = False

    def __init__(
        self,
        model,
        *,
        n_masks: int = 1000,
        grid: int = 8,
        p: float = 0.5,
        seed: int = 0,
        batch_size: int | None = None,
        baseline: str = "mean",
    ):
        super().__init__(model)
        if not 0 < p <= 1:
            raise ValueError(f"rise: p must be in (0, 1], got {p}")
        self.n_masks, self.grid, self.p = int(n_masks), int(grid), float(p)
        self.seed, self.baseline = int(seed), baseline
        self.batch_size = None if batch_size is None else int(batch_size)
        self._masks: dict[tuple, torch.Tensor] = {}

    def masks(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """The cached masks for images of ``h × w`` on ``device``."""
        key = (h, w, str(device))
        if key not in self._masks:
            m = rise_masks(self.n_masks, self.grid, self.p, (h, w), self.seed)
            self._masks[key] = m.to(device)
        return self._masks[key]

    @torch.inference_mode()
    def attribute(self, images: torch.Tensor, targets: torch.Tensor, **kw) -> torch.Tensor:
        b, c, h, w = images.shape
        bs = self.batch_size or auto_batch_size(images[0].numel(), images.device)
        masks = self.masks(h, w, images.device)  # [N,1,H,W]
        fill = substrate_image(self.model, images, self.baseline)
        n = masks.shape[0]
        scores = torch.empty(b, n, device=images.device)
        total = b * n
        for lo in range(0, total, bs):
            idx = torch.arange(lo, min(lo + bs, total), device=images.device)
            img, k = idx // n, idx % n
            m = masks[k]
            x = images[img] * m + fill[img] * (1 - m)
            prob = F.softmax(forward_model(self.model)(x).float(), dim=1)
            scores.view(-1)[lo : lo + len(idx)] = prob.gather(1, targets[img, None]).squeeze(1)
        sal = torch.einsum("bn,nhw->bhw", scores, masks[:, 0]) / (n * self.p)
        return sal.unsqueeze(1)
