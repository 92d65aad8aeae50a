"""``extremal``: extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019), batched.

For each image and each target area ``a`` a smooth mask ``m`` is optimised to *preserve* the
target's logit ``f_c(m ⊗ x)`` while its sorted values match the template ``r_a`` (a share ``1 − a``
of zeros, then ones): the energy is

    − f_c(m ⊗ x) + λ_t · mean((sort(m) − r_a)²),      λ_t = regul · growth^t

with ``growth`` chosen so that λ rises ×16.4 over ``steps`` (the paper's 1.0035 per step over 800
steps) and λ₀ the paper's 300 at 224 px scaled with the image's area. ``m ⊗ x`` is the blur perturbation: pixel ``u`` is taken from a pyramid of ``levels``
Gaussian blurs of ``x`` (σ from ``max_blur`` down to 0) at level ``m(u)·(levels − 1)``, linearly
interpolated. The mask is TorchRay's smooth mask: parameters ``p ∈ [0,1]`` on a grid of spacing
``step`` px, each pixel taking the smooth maximum (softmax pooling, coldness 20) of the nearby
parameters weighted by the bump ``exp(−2·max(d/σ − ½, 0)²)`` of their distance ``d`` (``sigma``
px). Optimiser as the paper's code: SGD with momentum 0.9 and dampening 0.9 on ``p``, clamped to
[0, 1] after each step, the input flipped left–right on even steps (jitter).

Batched the way ``nice-opt``'s gate optimiser is: every (image, area) pair of the batch is one row
of a single optimisation; the energy is a sum over rows, and the momentum is per row, so a row's
trajectory does not depend on the others (an image gets the same map alone or in a batch). The
map is the sum of the final masks over the areas, as the paper's saliency. Spatial sizes
(``step``, ``sigma``, ``max_blur``) default to the paper's 7, 21 and 20 px at 224 px, scaled to
the image size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from nicebench import Method, MethodError, register_method
from nicebench.metrics import blurred
from nicebench.models import native_cpu_bf16

__all__ = ["Extremal", "smooth_mask", "blur_pyramid", "perturb", "area_loss", "mask_weights"]

COLDNESS = 20.0
LAMBDA_RISE = 1.0035**800  # the paper's area weight grows ×16.4 over its 800 steps
PRECISIONS = ("auto", "fp32", "bf16")


def _kernel(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-2 * (z - 0.5).clamp(min=0) ** 2)


@lru_cache(maxsize=16)
def mask_weights(size: tuple[int, int], step: int, sigma: float) -> tuple[torch.Tensor, int]:
    """Weights ``[(2r+1)², H, W]`` of each pixel's nearby grid parameters (grid point ``i`` sits
    at pixel ``step·i``; neighbour ``k`` of pixel ``u`` is grid point ``⌊u/step⌋ + k − r``) and r."""
    r = 1 + math.ceil(sigma / step)
    h, w = size
    uy, ux = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    ks = torch.arange(-r, r + 1, dtype=torch.float32)
    cy = (torch.floor(uy / step)[None, None] + ks[:, None, None, None]) * step  # [2r+1,1,H,W]
    cx = (torch.floor(ux / step)[None, None] + ks[None, :, None, None]) * step  # [1,2r+1,H,W]
    d = torch.sqrt((uy - cy) ** 2 + (ux - cx) ** 2)
    return _kernel(d / sigma).reshape(-1, h, w), r


def smooth_mask(p: torch.Tensor, size: tuple[int, int], step: int, sigma: float) -> torch.Tensor:
    """TorchRay's smooth mask ``[N,1,H,W]`` from parameters ``p`` ``[N,1,⌈H/step⌉,⌈W/step⌉]``:
    the softmax-pooled maximum of the bump-weighted neighbouring parameters, clamped to [0, 1]."""
    weight, r = mask_weights(tuple(size), int(step), float(sigma))
    n, _, gh, gw = p.shape
    h, w = size
    nb = F.unfold(p, 2 * r + 1, padding=r).view(n, (2 * r + 1) ** 2, gh, gw)
    nb = F.interpolate(nb, scale_factor=step, mode="nearest")[..., :h, :w]
    v = weight.to(p) * nb
    return (v * F.softmax(COLDNESS * v, dim=1)).sum(1, keepdim=True).clamp(0, 1)


def blur_pyramid(images: torch.Tensor, levels: int, max_blur: float) -> torch.Tensor:
    """``[B,L,C,H,W]``: level ``l`` is ``images`` blurred with σ = (1 − l/(L−1))·max_blur (the
    last level is the image itself)."""
    out = []
    for lev in range(levels):
        s = (1 - lev / (levels - 1)) * max_blur
        if s <= 0:
            out.append(images)
            continue
        k = min(2 * math.ceil(3 * s) + 1, 2 * (min(images.shape[-2:]) // 2) - 1)
        out.append(blurred(images, sigma=s, kernel=k))
    return torch.stack(out, 1)


def perturb(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The blur perturbation ``m ⊗ x`` ``[N,C,H,W]`` of pyramids ``[N,L,C,H,W]`` by masks
    ``[N,1,H,W]``: level ``m·(L−1)``, linearly interpolated between the two nearest levels."""
    n, levels = pyramid.shape[:2]
    pos = mask * (levels - 1)
    lo = pos.detach().floor().clamp(max=levels - 2)
    frac = pos - lo
    idx = lo.long().unsqueeze(1).expand(n, 1, *pyramid.shape[2:])
    a = pyramid.gather(1, idx).squeeze(1)
    b = pyramid.gather(1, idx + 1).squeeze(1)
    return a + frac * (b - a)


def area_loss(mask: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
    """``mean((sort(m) − r_a)²)`` per mask ``[N]``: ``r_a`` is ⌊(1−a)·HW⌋ zeros, then ones."""
    flat = mask.flatten(1)
    hw = flat.shape[1]
    ranks = torch.arange(hw, device=mask.device)
    ref = (ranks[None] >= (hw * (1 - areas[:, None])).floor()).to(flat.dtype)
    return ((flat.sort(1).values - ref) ** 2).mean(1)


def _areas(spec) -> tuple[float, ...]:
    if isinstance(spec, int | float):
        vals = (float(spec),)
    elif isinstance(spec, str):
        vals = tuple(float(v) for v in spec.split("+") if v.strip())
    else:
        vals = tuple(float(v) for v in spec)
    if not vals or not all(0 < a < 1 for a in vals):
        raise MethodError(f"extremal: areas must be shares in (0, 1) ('+'-joined), got {spec!r}")
    return vals


@register_method("extremal")
class Extremal(Method):
    """Extremal perturbations, preserve variant (see the module's doc); the map is the sum over
    ``areas`` (``"+"``-joined shares, or a list) of the optimised masks.

    Parameters: ``areas``, ``steps`` (SGD steps; the paper: 800), ``lr`` (the paper: 0.01 for 800
    steps at 224 px), ``regul`` (λ₀; None: the paper's 300 at 224 px scaled with the image's
    area, as the area term is a mean over pixels and the reward is not: 24.5 at 64 px; the
    unscaled 300 there lets the area term win and the masks keep no evidence),
    ``step``/``sigma``/``max_blur`` (px; None: the paper's 7/21/20 px at 224 scaled), ``levels``
    (blur pyramid levels, 8), ``jitter``, ``precision``
    (``"auto"``: bf16 autocast on CUDA and on CPUs with native bf16, as ``nice-opt``).
    """

    needs_gradients = True
    quick_params = {"steps": 3, "areas": "0.1", "regul": 300.0, "precision": "fp32"}

    def __init__(
        self,
        model,
        *,
        areas: str | float | tuple = "0.05+0.1+0.2",
        steps: int = 300,
        lr: float = 0.1,
        regul: float | None = None,
        step: int | None = None,
        sigma: float | None = None,
        max_blur: float | None = None,
        levels: int = 8,
        jitter: bool = True,
        precision: str = "auto",
    ):
        super().__init__(model)
        self._areas = _areas(areas)
        self.areas = areas if isinstance(areas, str | int | float) else "+".join(map(str, areas))
        if steps < 1 or levels < 2 or lr <= 0 or (regul is not None and regul < 0):
            raise MethodError("extremal: steps >= 1, levels >= 2, lr > 0, regul >= 0")
        if precision not in PRECISIONS:
            raise MethodError(f"extremal: precision must be one of {PRECISIONS}")
        self.steps, self.lr, self.regul, self.levels = int(steps), float(lr), regul, levels
        self.step, self.sigma, self.max_blur = step, sigma, max_blur
        self.jitter, self.precision = bool(jitter), precision

    def sizes(self, size: int) -> tuple[int, float, float]:
        """(grid step, bump σ, largest blur σ) in pixels for images of side ``size``."""
        f = size / 224
        step = self.step or max(1, round(7 * f))
        return int(step), float(self.sigma or 21 * f), float(self.max_blur or 20 * f)

    def _bf16(self, device: torch.device) -> bool:
        if self.precision != "auto":
            return self.precision == "bf16"
        return device.type == "cuda" or native_cpu_bf16()

    def masks(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The optimised masks ``[B, A, H, W]`` (one per area)."""
        b, _, h, w = images.shape
        na = len(self._areas)
        step, sigma, max_blur = self.sizes(min(h, w))
        dev = images.device
        pyramid = blur_pyramid(images, self.levels, max_blur).repeat_interleave(na, 0)
        areas = torch.tensor(self._areas, device=dev).repeat(b)  # rows: image-major
        y = targets.repeat_interleave(na)
        p = torch.ones(b * na, 1, math.ceil(h / step), math.ceil(w / step), device=dev)
        buf = torch.zeros_like(p)
        growth = LAMBDA_RISE ** (1 / self.steps)
        # the area term is a mean over pixels, the reward is not: λ₀ scales with the image's area
        regul = self.regul if self.regul is not None else 300.0 * h * w / 224**2
        bf16 = self._bf16(dev)
        for t in range(self.steps):
            p.requires_grad_(True)
            m = smooth_mask(p, (h, w), step, sigma)
            x = perturb(pyramid, m)
            if self.jitter and t % 2 == 0:
                x = torch.flip(x, dims=(3,))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = self.model(x)
            reward = logits.float().gather(1, y[:, None]).squeeze(1)
            lam = regul * growth**t
            energy = (-reward + lam * area_loss(m, areas)).sum()
            (g,) = torch.autograd.grad(energy, p)
            with torch.no_grad():
                # torch.optim.SGD(momentum=0.9, dampening=0.9), state per row
                buf = g if t == 0 else 0.9 * buf + 0.1 * g
                p = (p - self.lr * buf).clamp_(0, 1)
        with torch.no_grad():
            m = smooth_mask(p.detach(), (h, w), step, sigma)
        return m.view(b, na, h, w)

    def attribute(self, images, targets, **kw):
        return self.masks(images, targets).sum(1, keepdim=True)
