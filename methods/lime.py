"""LIME (Ribeiro et al. 2016) over SLIC superpixels, with captum's ``Lime``.

Per image: scikit-image's ``slic`` cuts the image into about ``n_segments`` superpixels (the
``feature_mask``); ``n_samples`` binary on/off vectors over the superpixels (the first one all on,
the rest Bernoulli(0.5) from a generator seeded with ``seed``, the same for every image so a map
never depends on its batch) switch superpixels between the image and the ``baseline`` fill
(``"mean"``: the classifier's normalisation mean, i.e. 0 in normalised space; ``"black"``;
``"blur"``: the metrics' Gaussian blur). All perturbations of one image go through the model in
one batch (``perturbations_per_eval = n_samples``) on the model's device. The surrogate is
``lime_image``'s: a weighted ridge regression (α = 1, with intercept) of the softmax probability of
the target on the on/off vector, weighted by an exponential kernel (width 0.25) of the cosine
distance to the all-on vector. Each superpixel's coefficient is painted over its pixels.

Defaults (``n_samples=128``, ``n_segments=40``) are chosen for CPU: 128 forward passes per image,
enough for a well-posed ridge fit over ~40 superpixels at 64 px.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import Lime
from skimage.segmentation import slic

from nicebench import Method, register_method
from nicebench.metrics import substrate_image
from nicebench.models import forward_model

KERNEL_WIDTH = 0.25
RIDGE_ALPHA = 1.0


class WeightedRidge:
    """Closed-form weighted ridge regression with intercept, in torch (captum's model protocol)."""

    def __init__(self, alpha: float = RIDGE_ALPHA):
        self.alpha = alpha
        self.coef: torch.Tensor | None = None

    def fit(self, train_data) -> dict:
        x, y, w = next(iter(train_data))
        x, y, w = x.double(), y.double().reshape(-1), w.double().reshape(-1)
        wn = w / w.sum().clamp_min(1e-12)
        xc = x - (wn[:, None] * x).sum(0)
        yc = y - (wn * y).sum()
        gram = xc.T @ (w[:, None] * xc) + self.alpha * torch.eye(
            x.shape[1], dtype=x.dtype, device=x.device
        )
        self.coef = torch.linalg.solve(gram, xc.T @ (w * yc)).float()
        return {}

    def representation(self) -> torch.Tensor:
        if self.coef is None:
            raise RuntimeError("fit() first")
        return self.coef


def _kernel_similarity(original, perturbed, interpretable, **kw) -> torch.Tensor:
    """lime_image's weight: exp(−d²/w²), d = cosine distance of the on/off vector to all-on."""
    z = interpretable.float().reshape(-1)
    on = z.sum()
    d = 1 - torch.sqrt(on / z.numel()) if on > 0 else torch.tensor(1.0, device=z.device)
    return torch.exp(-(d**2) / KERNEL_WIDTH**2)


def superpixels(image: torch.Tensor, n_segments: int) -> torch.Tensor:
    """SLIC labels ``[H,W]`` (long, 0..K−1, consecutive) of one ``[C,H,W]`` image in [0,1]."""
    arr = image.detach().float().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    multichannel = arr.shape[-1] > 1
    seg = slic(
        arr if multichannel else arr[..., 0],
        n_segments=n_segments,
        compactness=10.0,
        start_label=0,
        channel_axis=-1 if multichannel else None,
    )
    _, labels = np.unique(seg, return_inverse=True)
    return torch.from_numpy(labels.reshape(seg.shape)).long()


@register_method("lime")
class LimeMethod(Method):
    """LIME over SLIC superpixels, one batched model evaluation per image."""

    deterministic = True
    needs_gradients = False

    def __init__(
        self,
        model,
        *,
        n_samples: int = 128,
        n_segments: int = 40,
        baseline: str = "mean",
        seed: int = 0,
    ):
        super().__init__(model)
        if n_samples < 2:
            raise ValueError(f"lime: n_samples must be ≥ 2, got {n_samples}")
        self.n_samples, self.n_segments = int(n_samples), int(n_segments)
        self.baseline, self.seed = baseline, int(seed)
        self._lime = Lime(
            self._forward,
            interpretable_model=WeightedRidge(),
            similarity_func=_kernel_similarity,
            perturb_func=self._perturbations,
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(forward_model(self.model)(x).float(), dim=1)

    def _perturbations(self, original, **kw):
        """The on/off samples: all-on first, then seeded Bernoulli(0.5) (a generator function)."""
        k = int(kw["num_interp_features"])
        gen = torch.Generator().manual_seed(self.seed)
        z = (torch.rand(self.n_samples, k, generator=gen) < 0.5).long()
        z[0] = 1
        z = z.to(original.device)
        for i in range(self.n_samples):
            yield z[i : i + 1]

    @torch.no_grad()
    def attribute(self, images: torch.Tensor, targets: torch.Tensor, **kw) -> torch.Tensor:
        fill = substrate_image(self.model, images, self.baseline)
        out = torch.empty(images.shape[0], 1, *images.shape[-2:], device=images.device)
        for i in range(images.shape[0]):
            seg = superpixels(images[i], self.n_segments).to(images.device)
            coefs = self._lime.attribute(
                images[i : i + 1],
                baselines=fill[i : i + 1],
                target=int(targets[i]),
                feature_mask=seg[None, None],
                n_samples=self.n_samples,
                perturbations_per_eval=self.n_samples,
                return_input_shape=False,
            )
            out[i, 0] = coefs.reshape(-1).to(images.device)[seg]
        return out
