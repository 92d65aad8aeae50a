"""The comparison methods the field reports beside NICE: ``smoothgrad``, ``gradshap`` and
``deeplift`` (captum), ``gradcam++`` and ``scorecam`` (on the Grad-CAM layer, as ``gradcam``).

Sampled methods (SmoothGrad, GradientSHAP) draw their noise, baselines and interpolation points
from a generator seeded per image and call by the image's content and ``seed``
(:func:`nicebench.gates.content_seed`, as ``nice-opt`` seeds its gate noise): the draws are
reproducible, ignore the global RNG, and an image gets the same map alone or in any batch. The
gradients of all samples of all images go through captum's :class:`~captum.attr.Saliency` in
chunks of ``internal_batch_size`` model inputs.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import DeepLift, LayerActivation, LayerAttribution, Saliency
from torch import nn

from nicebench import Method, MethodError, register_method
from nicebench.gates import content_seed
from nicebench.metrics import substrate_image
from nicebench.models import last_conv_layer

__all__ = [
    "SmoothGrad",
    "GradientShapMethod",
    "DeepLiftMethod",
    "GradCAMPlusPlus",
    "ScoreCAM",
    "image_generators",
    "gaussian_noise",
    "gradcam_pp_weights",
    "scorecam_masks",
]

BASELINE_KINDS = ("black", "white", "mean", "blur")


def image_generators(images: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One generator per image on the images' device, seeded by the image's content and ``seed``
    (:func:`nicebench.gates.content_seed`)."""
    out = []
    for s in content_seed(images, seed).tolist():
        g = torch.Generator(device=images.device)
        g.manual_seed(int(s))
        out.append(g)
    return out


def gaussian_noise(
    gens: list[torch.Generator], shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Standard normal noise ``[B, *shape]``, image ``b``'s from ``gens[b]``."""
    return torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])


def _check_positive(name: str, **values: float) -> None:
    for k, v in values.items():
        if not v > 0:
            raise MethodError(f"{name}: {k} must be positive, got {v!r}")


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int, absolute: bool):
    """∂ f_y / ∂ x for a stack of inputs, through captum's Saliency in chunks of ``chunk``."""
    sal = Saliency(model)
    out = [
        sal.attribute(x[i : i + chunk].requires_grad_(), target=y[i : i + chunk], abs=absolute)
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(out)


@register_method("smoothgrad")
class SmoothGrad(Method):
    """SmoothGrad (Smilkov et al. 2017) as captum's ``NoiseTunnel(Saliency)``: the mean of
    ``|∂ score / ∂ x|`` over ``n_samples`` copies of the image with Gaussian noise of standard
    deviation ``stdevs`` (images in [0, 1], so 0.15 is the paper's 15 % of the range), maximum
    over colour channels (as ``saliency``). ``seed`` keys the per-image noise."""

    needs_gradients = True
    quick_params = {"n_samples": 4}

    def __init__(
        self,
        model,
        *,
        n_samples: int = 20,
        stdevs: float = 0.15,
        seed: int = 0,
        internal_batch_size: int = 256,
    ):
        super().__init__(model)
        _check_positive(
            "smoothgrad",
            n_samples=n_samples,
            stdevs=stdevs,
            internal_batch_size=internal_batch_size,
        )
        self.n_samples, self.stdevs, self.seed = int(n_samples), float(stdevs), int(seed)
        self.internal_batch_size = int(internal_batch_size)

    def attribute(self, images, targets, **kw):
        b, s = len(images), self.n_samples
        gens = image_generators(images, self.seed)
        noise = gaussian_noise(gens, (s, *images.shape[1:]), images.device)  # [B, S, C, H, W]
        x = (images[:, None] + self.stdevs * noise).flatten(0, 1)  # [B·S, C, H, W], image-major
        grads = _gradients(
            self.model, x, targets.repeat_interleave(s), self.internal_batch_size, absolute=True
        )
        return grads.view(b, s, *images.shape[1:]).mean(1).amax(1, keepdim=True)


def baseline_images(model: nn.Module, images: torch.Tensor, kind: str) -> torch.Tensor:
    """A baseline image per input for ``kind`` in :data:`BASELINE_KINDS` (``"mean"``: the
    classifier's normalisation mean, ``"blur"``: RISE's blur at this size)."""
    if kind == "white":
        return torch.ones_like(images)
    if kind in ("black", "mean", "blur"):
        return substrate_image(model, images, kind)
    raise MethodError(f"baseline must be one of {BASELINE_KINDS}, got {kind!r}")


def _baseline_kinds(name: str, spec: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in str(spec).split("+") if k.strip())
    bad = [k for k in kinds if k not in BASELINE_KINDS]
    if not kinds or bad:
        raise MethodError(
            f"{name}: baselines must be '+'-joined kinds of {BASELINE_KINDS}, got {spec!r}"
        )
    return kinds


@register_method("gradshap")
class GradientShapMethod(Method):
    """GradientSHAP (Lundberg & Lee 2017; captum's ``GradientShap``): the mean over ``n_samples``
    draws of ``(x + ε − b) ⊙ ∇f(b + α (x + ε − b))`` with a baseline ``b`` drawn uniformly from
    ``baselines`` (``"+"``-joined kinds of :data:`BASELINE_KINDS`), ``α ~ U(0, 1)`` and
    ``ε ~ N(0, stdevs²)``; summed over colour channels (``absolute``: its magnitude)."""

    needs_gradients = True
    quick_params = {"n_samples": 4}

    def __init__(
        self,
        model,
        *,
        n_samples: int = 20,
        stdevs: float = 0.0,
        baselines: str = "black+mean+blur",
        seed: int = 0,
        absolute: bool = False,
        internal_batch_size: int = 256,
    ):
        super().__init__(model)
        _check_positive("gradshap", n_samples=n_samples, internal_batch_size=internal_batch_size)
        if stdevs < 0:
            raise MethodError(f"gradshap: stdevs must be >= 0, got {stdevs!r}")
        self._kinds = _baseline_kinds("gradshap", baselines)
        self.n_samples, self.stdevs, self.baselines = int(n_samples), float(stdevs), baselines
        self.seed, self.absolute = int(seed), bool(absolute)
        self.internal_batch_size = int(internal_batch_size)

    def attribute(self, images, targets, **kw):
        b, s, dev = len(images), self.n_samples, images.device
        gens = image_generators(images, self.seed)
        bases = torch.stack([baseline_images(self.model, images, k) for k in self._kinds], 1)
        # per image and sample: which baseline, α ~ U(0, 1), then the noise
        pick = torch.stack(
            [torch.randint(len(self._kinds), (s,), generator=g, device=dev) for g in gens]
        )
        alpha = torch.stack([torch.rand(s, generator=g, device=dev) for g in gens])
        alpha = alpha[..., None, None, None]  # [B, S, 1, 1, 1]
        base = bases[torch.arange(b, device=dev)[:, None], pick]  # [B, S, C, H, W]
        x = images[:, None].expand_as(base)
        if self.stdevs > 0:
            x = x + self.stdevs * gaussian_noise(gens, (s, *images.shape[1:]), dev)
        point = (base + alpha * (x - base)).flatten(0, 1)
        grads = _gradients(
            self.model,
            point,
            targets.repeat_interleave(s),
            self.internal_batch_size,
            absolute=False,
        )
        attr = (grads.view_as(base) * (x - base)).mean(1).sum(1, keepdim=True)
        return attr.abs() if self.absolute else attr


def _deeplift_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that captum's DeepLift can hook: no in-place activations and every
    module registered once (an alias such as ``Classifier.cam_layer`` is kept as a plain
    attribute, so hooks are not attached to it twice)."""
    other = copy.deepcopy(model)
    seen: set[int] = set()

    def walk(parent: nn.Module) -> None:
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) in seen:
                del parent._modules[name]
                object.__setattr__(parent, name, child)
                continue
            seen.add(id(child))
            if getattr(child, "inplace", False):
                child.inplace = False
            walk(child)

    walk(other)
    return other.eval()


@register_method("deeplift")
class DeepLiftMethod(Method):
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017; captum's ``DeepLift``) against a
    ``baseline`` image (``"black"``, ``"mean"``, ``"blur"``, ``"white"``), summed over colour
    channels (``absolute``: its magnitude). Runs on a copy of the classifier with in-place
    activations turned off; a network that calls one activation module twice (torchvision's
    ResNet blocks) is outside what captum's DeepLift supports."""

    needs_gradients = True

    def __init__(self, model, *, baseline: str = "black", absolute: bool = False):
        super().__init__(model)
        if baseline not in BASELINE_KINDS:
            raise MethodError(f"deeplift: baseline must be one of {BASELINE_KINDS}")
        self.baseline, self.absolute = baseline, bool(absolute)
        self._copy: tuple[nn.Module, nn.Module] | None = None

    def _net(self) -> nn.Module:
        if self._copy is None or self._copy[0] is not self.model:
            self._copy = (self.model, _deeplift_copy(self.model))
        return self._copy[1]

    def attribute(self, images, targets, **kw):
        base = baseline_images(self.model, images, self.baseline)
        with warnings.catch_warnings():
            # captum announces on every call that it hooks the non-linear activations and removes
            # the hooks afterwards: known and harmless (the model is a hookable copy,
            # _deeplift_copy); silenced by its message only, any other warning still shows
            warnings.filterwarnings(
                "ignore",
                message="Setting forward, backward hooks and attributes on non-linear",
                category=UserWarning,
            )
            attr = DeepLift(self._net()).attribute(
                images.requires_grad_(), baselines=base, target=targets
            )
        attr = attr.sum(1, keepdim=True)
        return attr.abs() if self.absolute else attr


class _CamMethod(Method):
    """A class-activation map on ``layer`` (default: the classifier's Grad-CAM layer)."""

    def __init__(self, model, *, layer: str | None = None):
        super().__init__(model)
        self.layer = layer

    def _layer(self) -> nn.Module:
        if self.layer is None:
            return last_conv_layer(self.model)
        modules = dict(self.model.named_modules())
        if self.layer not in modules:
            raise MethodError(f"{self.name}: the model has no layer {self.layer!r}")
        return modules[self.layer]

    @staticmethod
    def _upsample(cam: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return LayerAttribution.interpolate(cam, images.shape[-2:], interpolate_mode="bilinear")


def gradcam_pp_weights(grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s channel weights ``[B,K]`` (Chattopadhay et al. 2018, eq. 19 with the
    exponential score): ``w_k = Σ_ij α_ij^k ReLU(g_ij^k)``, ``α = g² / (2 g² + Σ_ab A_ab g³)``
    (0 where the gradient is 0), ``g = ∂Y^c/∂A``."""
    g2 = grads.pow(2)
    g3 = g2 * grads
    denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g3
    alpha = torch.where(
        grads != 0,
        g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
        torch.zeros_like(g2),
    )
    return (alpha * grads.clamp_min(0)).sum((2, 3))


@register_method("gradcam++")
class GradCAMPlusPlus(_CamMethod):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018): ``ReLU(Σ_k w_k A_k)`` with
    :func:`gradcam_pp_weights`, on the Grad-CAM layer, bilinearly upsampled to the image."""

    needs_gradients = True

    def attribute(self, images, targets, **kw):
        grads, acts = compute_layer_gradients_and_eval(self.model, self._layer(), images, targets)
        g, a = grads[0].detach(), acts[0].detach()
        cam = F.relu((gradcam_pp_weights(g, a)[:, :, None, None] * a).sum(1, keepdim=True))
        return self._upsample(cam, images)


def scorecam_masks(acts: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Score-CAM's masks: each activation map ``[N,1,h,w]`` bilinearly upsampled to ``size`` and
    min–max normalised to [0, 1]; and which are not constant (``[N]`` bool: a constant map gives
    no mask and its weight is 0, as in the authors' code)."""
    up = F.interpolate(acts, size=size, mode="bilinear", align_corners=False)
    lo = up.flatten(1).amin(1)[:, None, None, None]
    hi = up.flatten(1).amax(1)[:, None, None, None]
    live = (hi > lo).flatten()
    return (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi)), live


@register_method("scorecam")
class ScoreCAM(_CamMethod):
    """Score-CAM (Wang et al., CVPRW 2020): ``ReLU(Σ_k s_k A_k)`` with ``s_k`` the softmax
    probability of the target class on the image masked by channel ``k``'s upsampled, min–max
    normalised activation (:func:`scorecam_masks`), masked pixels taking ``baseline`` (``"mean"``:
    the classifier's normalisation mean, as the authors' code masks normalised tensors;
    ``"black"``; ``"blur"``). The masked inputs of all channels and images run in batches of
    ``batch_size``; bilinearly upsampled to the image."""

    needs_gradients = False

    def __init__(
        self, model, *, layer: str | None = None, baseline: str = "mean", batch_size: int = 512
    ):
        super().__init__(model, layer=layer)
        if baseline not in ("mean", "black", "blur"):
            raise MethodError("scorecam: baseline must be 'mean', 'black' or 'blur'")
        _check_positive("scorecam", batch_size=batch_size)
        self.baseline, self.batch_size = baseline, int(batch_size)

    @torch.no_grad()
    def attribute(self, images, targets, **kw):
        b, c, h, w = images.shape
        acts = LayerActivation(self.model, self._layer()).attribute(images).detach().float()
        k = acts.shape[1]
        fill = substrate_image(self.model, images, self.baseline)
        scores = torch.zeros(b * k, device=images.device)
        # (image, channel) pairs in chunks: masks are made per chunk (all at once would take
        # B·K·H·W floats: 20 GB for 50 ResNet-50 images at 224 px)
        for lo in range(0, b * k, self.batch_size):
            p = torch.arange(lo, min(lo + self.batch_size, b * k), device=images.device)
            img, ch = p // k, p % k
            m, live = scorecam_masks(acts[img, ch][:, None], (h, w))
            p, img, m = p[live], img[live], m[live]
            if len(p) == 0:
                continue
            x = m * images[img] + (1 - m) * fill[img]
            prob = F.softmax(self.model(x).float(), dim=1)
            scores[p] = prob.gather(1, targets[img, None]).squeeze(1)
        cam = F.relu((scores.view(b, k, 1, 1) * acts).sum(1, keepdim=True))
        return self._upsample(cam, images)
