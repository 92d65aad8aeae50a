"""Infidelity (Yeh et al., NeurIPS 2019) and max-sensitivity (ibid.), computed by
``captum.metrics`` with its own batching (``max_examples_per_batch``) and seeded perturbations.

- :func:`infidelity`: ``E_I[(Iᵀ·βΦ − (f_c(x) − f_c(x̃)))²]`` with ``f_c`` the classifier's logit
  of the explained class, ``Φ`` the map (the same value for every channel of a pixel), ``β``
  captum's ``normalize=True`` optimal scale (so maps of any scale compare), over
  ``infidelity_samples`` draws (default 16) of ``settings["infidelity_perturbation"]``:
  ``"square"`` (default; Yeh et al.'s square removal): a random square of side
  ``infidelity_square`` × the image side (default 0.25) is filled with the model's mean colour
  (deletion's substrate) and ``I`` is its indicator (divided by the channel count), so ``IᵀΦ`` is
  the map's sum over the square and the metric asks how well that predicts the logit's drop;
  ``"gaussian"``: ``x̃ = x − I``, ``I ~ N(0, σ²)`` per pixel and channel of the [0, 1] image
  (``infidelity_std``, default 0.1), the paper's noisy perturbation, under which maps that
  are not gradients (every built-in method sums channels) explain little of the logit change.
  Lower is better.
- :func:`sensitivity_max`: ``max_δ ‖Φ(x + δ) − Φ(x)‖_F / ‖Φ(x)‖_F`` over ``sensitivity_samples``
  (default 10) draws of ``δ`` uniform in the L∞ ball of radius ``sensitivity_radius`` (default
  0.02, captum's), on the first ``sensitivity_images`` (default 32) images of a cell; the method
  re-explains every perturbed image; lower is better.

The perturbations come from one generator seeded with the run's seed and the cell's first image
index, so a cell's scores repeat exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from torch import nn

from ..metric_spec import MetricSpec
from ..registry import register_metric
from . import settings as S
from .context import MetricContext
from .faithfulness import substrate_image

__all__ = [
    "infidelity",
    "sensitivity_max",
    "gaussian_perturbation",
    "square_removal",
    "linf_perturbation",
]


def gaussian_perturbation(std: float, gen: torch.Generator) -> Callable:
    """captum's infidelity ``perturb_func``: ``I ~ N(0, std²)`` drawn from ``gen``, returns
    ``(I, x − I)``."""

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(inputs.shape, generator=gen, dtype=torch.float32).to(inputs) * std
        return noise, inputs - noise

    return perturb


def square_removal(side: int, fill: torch.Tensor, gen: torch.Generator) -> Callable:
    """captum's infidelity ``perturb_func``: a ``side``×``side`` square at a position drawn from
    ``gen`` filled with ``fill`` (``[1,C,1,1]`` or a number); returns (the square's indicator / C,
    the filled images)."""

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = inputs.shape
        s = max(1, min(side, h, w))
        top = torch.randint(0, h - s + 1, (n, 1), generator=gen).to(inputs.device)
        left = torch.randint(0, w - s + 1, (n, 1), generator=gen).to(inputs.device)
        rows = torch.arange(h, device=inputs.device)[None]
        cols = torch.arange(w, device=inputs.device)[None]
        in_rows = (rows >= top) & (rows < top + s)  # [n, h]
        in_cols = (cols >= left) & (cols < left + s)  # [n, w]
        m = (in_rows[:, :, None] & in_cols[:, None, :])[:, None].to(inputs.dtype)  # [n,1,h,w]
        filled = inputs * (1 - m) + torch.as_tensor(fill).to(inputs) * m
        return m.expand(-1, c, -1, -1) / c, filled

    return perturb


def linf_perturbation(gen: torch.Generator) -> Callable:
    """captum's sensitivity ``perturb_func``: ``x + δ``, ``δ`` uniform in ``[−r, r]`` from ``gen``."""

    def perturb(inputs: torch.Tensor, radius: float) -> torch.Tensor:
        u = torch.rand(inputs.shape, generator=gen, dtype=torch.float32).to(inputs)
        return inputs + (2 * u - 1) * radius

    return perturb


def _chunk(max_examples: int, b: int, n: int) -> int:
    """captum's ``max_examples_per_batch`` within the range it accepts: ``[b, b·n]``."""
    return min(max(int(max_examples), b), b * n)


def _as_input_shape(maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return maps.to(images.device, images.dtype).expand(-1, images.shape[1], -1, -1).contiguous()


def infidelity(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    perturbation: str = "square",
    square: float = 0.25,
    std: float = 0.1,
    n_samples: int = 16,
    seed: int = 0,
    max_examples_per_batch: int = 1024,
) -> torch.Tensor:
    """captum's normalised infidelity ``[B]`` of ``maps`` (``[B,1,H,W]``) for ``model``'s logits
    of ``targets`` under ``"square"`` removal (side ``square`` × the image side, filled with the
    model's mean colour) or ``"gaussian"`` noise of std ``std`` (see the module's docstring)."""
    gen = torch.Generator().manual_seed(int(seed))
    if perturbation == "square":
        fill = substrate_image(model, images[:1, :, :1, :1], "mean")
        side = round(square * min(images.shape[-2:]))
        perturb = square_removal(side, fill, gen)
    elif perturbation == "gaussian":
        perturb = gaussian_perturbation(std, gen)
    else:
        raise ValueError(
            f"infidelity perturbation must be 'square' or 'gaussian', got {perturbation!r}"
        )
    with torch.no_grad():
        out = captum_infidelity(
            model,
            perturb,
            images,
            _as_input_shape(maps, images),
            target=targets,
            n_perturb_samples=n_samples,
            max_examples_per_batch=_chunk(max_examples_per_batch, len(images), n_samples),
            normalize=True,
        )
    return out.float()


def sensitivity_max(
    explain: Callable[..., torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    maps: torch.Tensor | None = None,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    max_examples_per_batch: int = 1024,
    explain_kwargs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """captum's max-sensitivity ``[B]`` of ``explain(images, targets, **explain_kwargs)`` under
    uniform L∞ perturbations of radius ``radius``; ``explain_kwargs`` (per-image tensors such as
    ``masks`` or ``indices``) follow each image into its perturbed copies. ``maps``: the maps of
    the unperturbed ``images`` when already computed (captum would explain them again)."""
    b = len(images)

    def explanation(x: torch.Tensor | tuple, target: torch.Tensor) -> torch.Tensor | tuple:
        if isinstance(x, tuple):  # captum's inputs as a tuple want the maps as one (the originals)
            return (explanation(x[0], target),)
        if maps is not None and x is images:
            return maps.to(images.device)
        kw = {
            name: v.repeat_interleave(len(x) // b, 0) for name, v in (explain_kwargs or {}).items()
        }
        return explain(x, target, **kw)

    gen = torch.Generator().manual_seed(int(seed))
    out = captum_sensitivity_max(
        explanation,
        images,
        perturb_func=linf_perturbation(gen),
        perturb_radius=radius,
        n_perturb_samples=n_samples,
        max_examples_per_batch=_chunk(max_examples_per_batch, b, n_samples),
        target=targets,
    )
    return out.float()


def _seed(c: MetricContext) -> int:
    return S.SEED.get(c.settings) * 1_000_003 + c.start


def _infidelity(c: MetricContext) -> torch.Tensor:
    s = c.settings
    return infidelity(
        c.model,
        c.images,
        c.saliency,
        c.targets,
        perturbation=S.INFIDELITY_PERTURBATION.get(s),
        square=S.INFIDELITY_SQUARE.get(s),
        std=S.INFIDELITY_STD.get(s),
        n_samples=S.INFIDELITY_SAMPLES.get(s),
        seed=_seed(c),
        max_examples_per_batch=S.MAX_EXAMPLES_PER_BATCH.get(s),
    )


def _sensitivity(c: MetricContext) -> torch.Tensor:
    s = c.settings
    k = min(S.SENSITIVITY_IMAGES.get(s), len(c.images))
    out = torch.full((len(c.images),), float("nan"))
    if k:
        out[:k] = sensitivity_max(
            c.method.explain,
            c.images[:k],
            c.targets[:k],
            maps=c.saliency[:k],
            radius=S.SENSITIVITY_RADIUS.get(s),
            n_samples=S.SENSITIVITY_SAMPLES.get(s),
            seed=_seed(c),
            max_examples_per_batch=S.MAX_EXAMPLES_PER_BATCH.get(s),
            explain_kwargs=c.explain_kwargs(k),
        ).cpu()
    return out


def _footnote_infidelity(s: dict[str, Any]) -> str:
    kind = S.INFIDELITY_PERTURBATION.get(s)
    what = (
        f"a random square of side {S.INFIDELITY_SQUARE.get(s)} × the image filled "
        "with the mean colour, I its indicator"
        if kind == "square"
        else f"Gaussian noise σ={S.INFIDELITY_STD.get(s)} on [0, 1] pixels"
    )
    return (
        f"captum infidelity (normalize=True) of the explained class's logit, perturbation: "
        f"{what}; {S.INFIDELITY_SAMPLES.get(s)} per image, seed {S.SEED.get(s)}"
    )


def _footnote_sensitivity(s: dict[str, Any]) -> str:
    return (
        f"captum sensitivity_max (Frobenius), uniform L∞ perturbations of radius "
        f"{S.SENSITIVITY_RADIUS.get(s)}, {S.SENSITIVITY_SAMPLES.get(s)} per image, "
        f"first {S.SENSITIVITY_IMAGES.get(s)} images of a cell, seed {S.SEED.get(s)}"
    )


register_metric(
    MetricSpec(
        "infidelity",
        _infidelity,
        "infidelity",
        higher_is_better=False,
        category="faithfulness",
        checked_against="a closed-form evaluation on a linear model with captum's draws (the "
        "metric calls captum.metrics.infidelity), "
        "tests/test_randomisation_robustness.py::test_infidelity_matches_a_direct_evaluation_on_a_linear_model, "
        "tests/test_randomisation_robustness.py::test_square_removal_infidelity_matches_a_direct_evaluation_on_a_linear_model",
        footnote=_footnote_infidelity,
        citation="Yeh et al., NeurIPS 2019",
        settings=(
            S.SEED,
            S.TARGET,
            S.INFIDELITY_PERTURBATION,
            S.INFIDELITY_SQUARE,
            S.INFIDELITY_STD,
            S.INFIDELITY_SAMPLES,
            S.MAX_EXAMPLES_PER_BATCH,
        ),
        description="Yeh et al. infidelity (captum, normalised): squared error of map·perturbation "
        "against the logit change",
    )
)
register_metric(
    MetricSpec(
        "sensitivity_max",
        _sensitivity,
        "sensitivity_max",
        higher_is_better=False,
        category="robustness",
        checked_against="the definition evaluated directly with captum's draws (the metric calls "
        "captum.metrics.sensitivity_max), "
        "tests/test_randomisation_robustness.py::test_sensitivity_max_matches_a_direct_evaluation",
        explains_again=True,
        footnote=_footnote_sensitivity,
        citation="Yeh et al., NeurIPS 2019",
        settings=(
            S.SEED,
            S.TARGET,
            S.SENSITIVITY_IMAGES,
            S.SENSITIVITY_RADIUS,
            S.SENSITIVITY_SAMPLES,
            S.MAX_EXAMPLES_PER_BATCH,
        ),
        description="Yeh et al. max-sensitivity (captum): largest relative change of the map under "
        "small input perturbations",
    )
)
