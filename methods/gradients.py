"""Captum attributions: ``saliency`` (vanilla gradient), ``ig`` (Integrated Gradients),
``occlusion`` and ``gradcam`` (Grad-CAM on the classifier's last conv block)."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

from nicebench import Method, register_method
from nicebench.batching import auto_batch_size
from nicebench.models import forward_model, last_conv_layer


def _baseline(model, images: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        mean = getattr(model, "mean", None)
        return (mean if mean is not None else torch.zeros(1)).to(images).expand_as(images)
    raise ValueError(f"baseline must be 'black' or 'mean', got {kind!r}")


@register_method("saliency")
class VanillaGradient(Method):
    """|∂ score / ∂ pixel|, maximum over colour channels (Simonyan et al. 2014; captum Saliency)."""

    needs_gradients = True

    def attribute(self, images, targets, **kw):
        attr = Saliency(self.model).attribute(images.requires_grad_(), target=targets, abs=True)
        return attr.amax(1, keepdim=True)


@register_method("ig")
class IntegratedGradientsMethod(Method):
    """Integrated Gradients (Sundararajan et al. 2017; captum), summed over colour channels."""

    needs_gradients = True

    def __init__(
        self, model, *, n_steps: int = 32, baseline: str = "black", absolute: bool = False
    ):
        super().__init__(model)
        self.n_steps, self.baseline, self.absolute = n_steps, baseline, absolute

    def attribute(self, images, targets, **kw):
        ig = IntegratedGradients(self.model)
        attr = ig.attribute(
            images,
            baselines=_baseline(self.model, images, self.baseline),
            target=targets,
            n_steps=self.n_steps,
            internal_batch_size=max(len(images) * self.n_steps // 4, 1),
        )
        attr = attr.sum(1, keepdim=True)
        return attr.abs() if self.absolute else attr


@register_method("occlusion")
class OcclusionMethod(Method):
    """Drop in the target's score when a ``window``² patch is set to the baseline (captum)."""

    def __init__(
        self, model, *, window: int | None = None, stride: int | None = None, baseline: str = "mean"
    ):
        super().__init__(model)
        self.window, self.stride, self.baseline = window, stride, baseline

    def attribute(self, images, targets, **kw):
        c, h = images.shape[1], images.shape[-1]
        window = self.window or max(2, h // 8)
        stride = self.stride or max(1, window // 2)
        with torch.no_grad():
            attr = Occlusion(forward_model(self.model)).attribute(
                images,
                sliding_window_shapes=(c, window, window),
                strides=(c, stride, stride),
                baselines=_baseline(self.model, images, self.baseline),
                target=targets,
                perturbations_per_eval=max(
                    1, auto_batch_size(images[0].numel(), images.device) // len(images)
                ),
            )
        return attr.mean(1, keepdim=True)


@register_method("gradcam")
class GradCAM(Method):
    """Grad-CAM (Selvaraju et al. 2017) with captum's LayerGradCam on ``model.cam_layer``
    (the last conv block), ReLU, bilinearly upsampled to the image size."""

    needs_gradients = True

    def __init__(self, model, *, layer: str | None = None):
        super().__init__(model)
        self.layer = layer

    def _layer(self):
        if self.layer is None:
            return last_conv_layer(self.model)
        return dict(self.model.named_modules())[self.layer]

    def attribute(self, images, targets, **kw):
        cam = LayerGradCam(self.model, self._layer())
        attr = cam.attribute(images, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(attr, images.shape[-2:], interpolate_mode="bilinear")
