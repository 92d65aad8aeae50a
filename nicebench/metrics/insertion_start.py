"""Where insertion starts: RISE's blur, or a blur calibrated so that the start carries no class.

RISE (Petsiuk et al. 2018) starts insertion from a Gaussian blur of the image (kernel 11, σ 5 at
224 px). Scaled to a small image that blur can leave the object recognisable: on scenes-64 the
classifier still gives the predicted class p ≈ 0.84 on it (chance 0.17), and every map's
insertion curve then spans 0.84–1.0 only. A curve whose start already holds the answer cannot
tell a good map from a bad one.

``calibrated`` (the leaderboard's default) keeps RISE's kind of start, a blur of the image, and
makes it as strong as the dataset and classifier need: the weakest blur of a geometric ladder of
RISE's σ (:data:`BLUR_STEPS`) under which the mean p(class predicted on the original) over
:data:`CALIBRATION_IMAGES` images of the dataset's validation split (its training split when it
has none; never the scored test images) is at most chance + :data:`CALIBRATION_MARGIN`. Where no
blur gets there (a classifier that reads the image's mean colour), the strongest blur is blended
towards the dataset's mean colour (deletion's substrate) in quarter steps, the last being the
mean colour itself. ``rise`` is RISE's literal blur scaled with the image size; ``mean`` starts
from the dataset's mean colour. The choice is computed once per (classifier, dataset, mode) in a
process (deterministic), recorded with every cell, and named in the leaderboard's notes.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ..batching import map_in_chunks
from ..models.inference import forward_model

__all__ = [
    "InsertionStart",
    "START_MODES",
    "BLUR_STEPS",
    "CALIBRATION_IMAGES",
    "CALIBRATION_MARGIN",
    "insertion_start",
    "calibrate",
    "rise_sigma",
    "blur",
    "DIRECT_KERNEL",
]

START_MODES = ("calibrated", "rise", "mean")
BLUR_STEPS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)  # multiples of RISE's scaled σ
FILL_STEPS = (0.25, 0.5, 0.75, 1.0)  # share of the mean colour blended into the strongest blur
CALIBRATION_IMAGES = 256
CALIBRATION_MARGIN = 0.10  # below the audit's 0.15, so that the test images clear it too


def rise_sigma(size: int) -> float:
    """RISE's σ 5 at 224 px, scaled to an image of ``size`` px."""
    return 5.0 * size / 224


def _kernel(sigma: float, size: int) -> int:
    """An odd kernel of ±3σ, at most 2·size − 1 (reflect padding needs less than the image)."""
    return max(3, min(2 * int(3 * sigma) + 1, 2 * size - 1))


DIRECT_KERNEL = 63  # larger kernels blur in two 1-D passes (see :func:`blur`)


def blur(images: torch.Tensor, sigma: float, kernel: int | None = None) -> torch.Tensor:
    """Gaussian blur of σ ``sigma`` px (kernel: ±3σ, capped by the image size), torchvision's
    (reflect padding). torchvision convolves with the whole k×k kernel, which at 224 px and
    σ 40 is 200k taps a pixel: kernels over :data:`DIRECT_KERNEL` use the same Gaussian as two
    1-D passes instead (equal up to float rounding; tested)."""
    k = kernel or _kernel(sigma, min(images.shape[-2:]))
    if k <= DIRECT_KERNEL:
        return gaussian_blur(images, [k, k], [sigma, sigma])
    half = (k - 1) * 0.5
    x = torch.linspace(-half, half, steps=k, dtype=images.dtype, device=images.device)
    w = torch.exp(-0.5 * (x / sigma).pow(2))
    w = w / w.sum()
    c = images.shape[1]
    out = F.pad(images, [k // 2] * 4, mode="reflect")
    out = F.conv2d(out, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(out, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


@dataclass(frozen=True)
class InsertionStart:
    """The start image of insertion: ``blur`` of σ ``sigma`` px (kernel ``kernel``; 0: none),
    then a share ``fill`` of the dataset's mean colour blended in. ``mode`` is how it was
    chosen; ``mean_p`` the mean p(predicted class) on it over ``n_images`` calibration images
    from ``source`` (NaN for ``rise``, which is not calibrated), ``chance`` one over the
    classifier's classes."""

    mode: str
    sigma: float
    kernel: int
    fill: float
    mean_p: float
    chance: float
    n_images: int
    source: str

    def image(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The start image of each of ``images`` for ``model`` (whose ``mean`` is the fill)."""
        out = blur(images, self.sigma, self.kernel) if self.sigma > 0 else images
        if self.fill > 0:
            mean = getattr(model, "mean", None)
            mean = (
                torch.zeros_like(images)
                if mean is None
                else mean.to(images.device, images.dtype).expand_as(images)
            )
            out = torch.lerp(out, mean, self.fill)
        return out

    def as_row(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def _mean_p(model: nn.Module, start: torch.Tensor, targets: torch.Tensor) -> float:
    logits = map_in_chunks(forward_model(model), start, None)
    p = F.softmax(logits.float(), dim=1).gather(1, targets[:, None])
    return float(p.mean())


@torch.inference_mode()
def calibrate(
    model: nn.Module,
    images: torch.Tensor,
    margin: float = CALIBRATION_MARGIN,
    source: str = "calibration",
) -> InsertionStart:
    """The weakest start (blur ladder, then blends towards the mean colour) whose mean p(class
    predicted on the original) over ``images`` is at most chance + ``margin``; the mean colour
    itself when none is."""
    logits = map_in_chunks(forward_model(model), images, None)
    targets = logits.argmax(1)
    chance = 1.0 / logits.shape[1]
    size = min(images.shape[-2:])
    base = rise_sigma(size)
    last = None
    for step in BLUR_STEPS:
        sigma = base * step
        start = InsertionStart(
            "calibrated", sigma, _kernel(sigma, size), 0.0, 0.0, chance, len(images), source
        )
        p = _mean_p(model, start.image(model, images), targets)
        last = InsertionStart(**{**start.as_row(), "mean_p": p})
        if p <= chance + margin:
            return last
    for fill in FILL_STEPS:
        start = InsertionStart(**{**last.as_row(), "fill": fill})
        p = _mean_p(model, start.image(model, images), targets)
        last = InsertionStart(**{**start.as_row(), "mean_p": p})
        if p <= chance + margin:
            break
    return last


# classifier → {(mode, dataset identity, size): InsertionStart}
_CHOSEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _calibration_images(dataset, fallback: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The first :data:`CALIBRATION_IMAGES` images of ``dataset``'s validation split (else its
    training split); the scored images themselves when there is no dataset."""
    if dataset is None:
        return fallback, "scored"
    split, source = dataset.validation_split(), "validation"
    if split is None:
        split, source = dataset.train_split(), "training"
    n = min(CALIBRATION_IMAGES, len(split))
    return torch.stack([split[i][0] for i in range(n)]), source


def insertion_start(
    model: nn.Module, images: torch.Tensor, mode: str = "calibrated", dataset=None
) -> InsertionStart:
    """The :class:`InsertionStart` of ``mode`` (:data:`START_MODES`) for ``model`` on
    ``dataset`` (``images``: the scored batch, for its size and when there is no dataset)."""
    if mode not in START_MODES:
        raise ValueError(
            f"setting insertion_start must be one of {', '.join(START_MODES)}; got {mode!r}"
        )
    size = min(images.shape[-2:])
    if mode == "rise":
        sigma = rise_sigma(size)
        return InsertionStart(
            "rise",
            sigma,
            max(3, int(round(11 * size / 224)) | 1),
            0.0,
            float("nan"),
            float("nan"),
            0,
            "",
        )
    ident = json.dumps(dataset.identity(), sort_keys=True, default=str) if dataset else ""
    key = (mode, ident, size)
    per_model = _CHOSEN.setdefault(model, {})
    if key not in per_model:
        calib, source = _calibration_images(dataset, images)
        calib = calib.to(images.device, images.dtype)
        if mode == "mean":
            logits = map_in_chunks(forward_model(model), calib, None)
            start = InsertionStart(
                "mean", 0.0, 0, 1.0, 0.0, 1.0 / logits.shape[1], len(calib), source
            )
            p = _mean_p(model, start.image(model, calib), logits.argmax(1))
            per_model[key] = InsertionStart(**{**start.as_row(), "mean_p": p})
        else:
            per_model[key] = calibrate(model, calib, source=source)
    return per_model[key]
