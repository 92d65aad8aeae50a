"""Real-time saliency (Dabkowski & Gal, NeurIPS 2017): an amortised, class-conditioned masking model.

Encoder: the frozen classifier itself. A probe forward pass finds, for each spatial resolution up
to the classifier's ``cam_layer``, the last layer output at that resolution, and keeps the
``scales`` coarsest (for the scenes CNN at 64 px and ``scales=3``: the ReLUs closing the conv
blocks at 32²·32, 16²·64 and 8²·128 channels); forward hooks on those layers, looked up by name on
``self.model`` at every call, give the multi-scale features. Decoder: a small U-Net-style
upsampler (``width`` channels at the bottleneck, halved at each finer scale); the target class
enters as a learned embedding added to the bottleneck. Mask ``m = σ(decoder)`` at the finest tapped
resolution (32² at 64 px; D&G's masks were 56² at 224 px), upsampled bilinearly to the image.

Objective (per image, averaged over the batch)::

    λ_tv·TV(m) + λ_area·(mean(m) + 5e-4)^0.3 − λ_keep·log f_c(Φ(x, m)) + f_c(Φ(x, 1−m))^λ_p

with ``TV`` the sum of squared neighbour differences of ``m`` taken at 1/4 of the image side (the
resolution of D&G's 56² masks at 224 px, so the weight means the same at every image size),
``f_c`` the softmax probability of the class the classifier predicts on ``x``, and
``Φ(x, m) = m·x + (1−m)·A`` where ``A`` is, per training image and at random, a Gaussian blur of
``x`` (σ = side/20, D&G's 11 px at 224) or the dataset mean colour plus Gaussian noise (σ 0.1).
Defaults ``λ_tv = 0.1``, ``λ_area = 1``, ``λ_keep = 0.7``, ``λ_p = 0.3``: smoothness, preserver and
the area power are in the ranges of the public PyTorch reimplementations (smoothness 0.01–0.5,
preserver 0.3–0.7 against the destroyer, area power 0.3); their area weight 6–8 goes with logit
(Carlini–Wagner) preserver/destroyer losses several times larger than the paper's probability
terms used here, and with it the masks collapse to empty (measured at scenes-64: mean mask 0.3%).

Trained once per (train dataset, classifier weights, parameters) and cached with
:func:`nicebench.models.cached_module`; ``explain`` is one forward pass of encoder + decoder. The
default budget (``n_train=4000`` images, ``epochs=4``, batch 64, Adam 2e-3 with cosine decay) trains
in about two minutes on two CPU cores at 64 px.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from nicebench import LearnedMethod, MethodError, register_method
from nicebench.models import predict

RTSAL_CODE_VERSION = 1


@torch.no_grad()
def feature_taps(
    model: nn.Module, shape: tuple[int, int, int], max_scales: int = 4
) -> list[tuple[str, int]]:
    """(module name, channels) of the encoder taps, finest resolution first.

    For each spatial size, the last leaf module whose 4-D output has that size, among the modules
    that run up to and including ``model.cam_layer`` (all modules when it has none); the
    ``max_scales`` coarsest sizes are kept.
    """
    leaves = {n: m for n, m in model.named_modules() if not list(m.children())}
    cam = getattr(model, "cam_layer", None)
    seen: list[tuple[str, tuple[int, ...]]] = []
    done = [False]

    def hook(name):
        def fn(mod, inp, out):
            if done[0] or not isinstance(out, torch.Tensor) or out.dim() != 4:
                return
            seen.append((name, tuple(out.shape[1:])))
            if mod is cam:
                done[0] = True

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves.items()]
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *shape, device=device))
    finally:
        for h in handles:
            h.remove()
    last: dict[tuple[int, int], tuple[str, int]] = {}
    for name, (c, h, w) in seen:
        last[(h, w)] = (name, c)
    sizes = sorted(last, key=lambda s: s[0] * s[1], reverse=True)[-max_scales:]
    if not sizes:
        raise MethodError("rtsal: the classifier has no 4-D feature map to use as encoder")
    return [last[s] for s in sizes]


def _block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


class MaskDecoder(nn.Module):
    """Upsampling decoder over multi-scale features, class embedding added at the bottleneck."""

    def __init__(self, channels: list[int], num_classes: int, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(num_classes, width)
        self.bottleneck = _block(channels[-1], width, 1)
        self.mid = _block(width, width)
        widths = [max(8, width >> (i + 1)) for i in range(len(channels) - 1)]
        skips, ups, prev = [], [], width
        for c, w in zip(reversed(channels[:-1]), widths, strict=True):
            skips.append(nn.Conv2d(c, w, 1))
            ups.append(_block(prev, w))
            prev = w
        self.skips, self.ups = nn.ModuleList(skips), nn.ModuleList(ups)
        self.head = nn.Conv2d(prev, 1, 1)

    def forward(self, feats: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        h = self.bottleneck(feats[-1]) + self.embed(targets)[:, :, None, None]
        h = self.mid(h)
        for f, skip, up in zip(reversed(feats[:-1]), self.skips, self.ups, strict=True):
            h = F.interpolate(h, size=f.shape[-2:], mode="bilinear", align_corners=False)
            h = up(h) + skip(f)
        return self.head(h)


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Per-image sum of squared neighbour differences ``[B]`` of ``[B,1,h,w]``."""
    dx = (m[..., :, 1:] - m[..., :, :-1]).square().sum((1, 2, 3))
    dy = (m[..., 1:, :] - m[..., :-1, :]).square().sum((1, 2, 3))
    return dx + dy


@register_method("rtsal")
class RealTimeSaliency(LearnedMethod):
    """Dabkowski & Gal's masking model: a decoder on the classifier's own features."""

    deterministic = True
    needs_gradients = False
    quick_params = {"n_train": 32, "epochs": 1, "batch_size": 16}
    cache_kind = "rtsal"
    code_version = RTSAL_CODE_VERSION

    def __init__(
        self,
        model,
        *,
        n_train: int = 4000,
        epochs: int = 4,
        batch_size: int = 64,
        lr: float = 2e-3,
        width: int = 32,
        scales: int = 3,
        tv: float = 0.1,
        area: float = 1.0,
        area_power: float = 0.3,
        preserver: float = 0.7,
        destroyer_power: float = 0.3,
        seed: int = 0,
    ):
        super().__init__(model)
        self.n_train, self.epochs, self.batch_size = int(n_train), int(epochs), int(batch_size)
        self.lr, self.width, self.scales = float(lr), int(width), int(scales)
        self.tv, self.area, self.area_power = float(tv), float(area), float(area_power)
        self.preserver, self.destroyer_power = float(preserver), float(destroyer_power)
        self.seed = int(seed)
        self.decoder: MaskDecoder | None = None
        self.taps: list[tuple[str, int]] = []
        self.train_info: dict[str, Any] = {}

    # -- encoder ---------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The tapped feature maps of ``self.model`` on ``images``, finest first."""
        modules = dict(self.model.named_modules())
        out: dict[str, torch.Tensor] = {}

        def grab(name):
            def fn(mod, inp, o):
                out[name] = o

            return fn

        handles = [modules[n].register_forward_hook(grab(n)) for n, _ in self.taps]
        try:
            self.model(images)
        finally:
            for h in handles:
                h.remove()
        return [out[n] for n, _ in self.taps]

    def mask(
        self, images: torch.Tensor, targets: torch.Tensor, decoder: nn.Module | None = None
    ) -> torch.Tensor:
        """Mask ``[B,1,H,W]`` in [0,1] (differentiable in the decoder's weights); ``decoder``
        defaults to the fitted one."""
        with torch.no_grad():
            feats = self.features(images)
        logits = (decoder or self.decoder)(feats, targets)
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(
                logits, size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        return torch.sigmoid(logits)

    # -- training ---------------------------------------------------------------------------
    def prepare(self, dataset: Any) -> None:
        self.taps = feature_taps(self.model, tuple(dataset[0][0].shape), self.scales)

    def cache_identity(self, dataset: Any, n: int) -> dict[str, Any]:
        return {**super().cache_identity(dataset, n), "taps": self.taps}

    def build_module(self, dataset: Any) -> MaskDecoder:
        num_classes = int(getattr(self.model, "num_classes", 0) or dataset.num_classes)
        return MaskDecoder([c for _, c in self.taps], num_classes, self.width)

    def training_targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return predict(self.model, images)  # f_c: the class predicted on x

    def _fill(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """D&G's alternative image A: a strong blur or the mean colour plus noise, per image."""
        side = x.shape[-1]
        sigma = side / 20
        k = int(2 * math.ceil(3 * sigma) + 1)
        blur = gaussian_blur(x, [k, k], [sigma, sigma])
        mean = getattr(self.model, "mean", torch.full((1, x.shape[1], 1, 1), 0.5)).to(x)
        noise = torch.randn(x.shape, generator=gen).to(x) * 0.1
        pick = (torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5).to(x)
        return pick * blur + (1 - pick) * (mean + noise)

    def training_loss(self, module, x, y, gen):
        m = self.mask(x, y, module)
        a = self._fill(x, gen)
        p_keep = F.softmax(self.model(m * x + (1 - m) * a), 1).gather(1, y[:, None])
        p_del = F.softmax(self.model((1 - m) * x + m * a), 1).gather(1, y[:, None])
        tv_side = max(4, x.shape[-1] // 4)
        small = F.interpolate(m, size=(tv_side, tv_side), mode="area")
        tv = total_variation(small)
        area = (m.mean((1, 2, 3)) + 5e-4) ** self.area_power
        keep = -torch.log(p_keep.squeeze(1).clamp_min(1e-8))
        destroy = p_del.squeeze(1).clamp_min(1e-8) ** self.destroyer_power
        loss = (self.tv * tv + self.area * area + self.preserver * keep + destroy).mean()
        parts = {
            "loss": loss,
            "tv": tv.mean(),
            "area": m.mean(),
            "keep_nll": keep.mean(),
            "p_destroyed": p_del.mean(),
        }
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    def train_module(self, module: nn.Module, dataset: Any, n: int) -> dict[str, Any]:
        return {**super().train_module(module, dataset, n), "taps": self.taps}

    def use_module(self, module: nn.Module, dataset: Any) -> None:
        self.decoder = module

    # -- explaining -------------------------------------------------------------------------
    @torch.no_grad()
    def attribute(self, images: torch.Tensor, targets: torch.Tensor, **kw: Any) -> torch.Tensor:
        if self.decoder is None:
            raise MethodError("rtsal: call fit(train_dataset) first")
        return self.mask(images, targets)
