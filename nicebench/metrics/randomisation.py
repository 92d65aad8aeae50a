"""Randomisation tests: cascading model randomisation and the random-logit test.

**Cascading model randomisation** (Adebayo et al., NeurIPS 2018): the classifier's parametrised
layers (:func:`nicebench.metrics.sanity.parametrised_layers`) are re-initialised from the logits
down, more layers at each step; after each step the method explains again on the randomised
model and its map is compared with the map on the trained model by the Spearman rank correlation
of ``|map|`` and by the SSIM of ``|map|`` scaled to [0, 1] by its maximum (the paper's two
similarities). The steps are ``settings["cascade"]``: the numbers of top layers randomised, comma
separated, ``all`` for every layer (default ``"1,3,all"``: the logit layer, the top three — the
model of ``sanity_spearman`` — and the whole network), or ``every`` for the full cascade
1, 2, …, L. Each step's model is :func:`~nicebench.metrics.sanity.randomised_model` with that
many layers and the run's seed, built once per classifier, seed and step
(:func:`~nicebench.metrics.sanity.cached_randomised_model`) and shared by every cell; learned
methods are re-fitted against it (:meth:`nicebench.Method.refit_on`, see
:func:`nicebench.metrics.refit_for`). Per image the curve over the steps is kept
(``curve/cascade_spearman``, ``curve/cascade_ssim``) and the column is its mean over the steps:
lower = the map depends more on the model's weights.

**Random-logit test** (Adebayo et al. 2018; Sixt et al., ICML 2020): the method explains a random
other class (drawn per image from the run's seed and the image's index: the same class whichever
shard holds the image) and the column is the Spearman rank correlation of ``|map|`` with the map
of the explained class: lower = the map depends more on the class (a class-agnostic method
scores 1).

Both run on the first ``settings["sanity_images"]`` images of a cell (default 32; NaN for the
rest), as ``sanity_spearman``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..metric_spec import MetricSpec
from ..registry import register_metric
from . import settings as S
from .context import MetricContext, refit_for
from .sanity import cached_randomised_model, parametrised_layers, spearman

__all__ = ["ssim", "cascade_steps", "cascade_similarity", "random_other_class", "DEFAULT_CASCADE"]

DEFAULT_CASCADE = S.CASCADE.default


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win: int = 7) -> torch.Tensor:
    """Mean SSIM ``[B]`` of single-channel ``[B,1,H,W]`` images, as scikit-image's
    ``structural_similarity`` with its defaults (uniform ``win``×``win`` window, smaller on tinier
    images, sample covariance, K1 = 0.01, K2 = 0.03, mean over the pixels at least ``win // 2``
    from the border)."""
    a, b = a.double(), b.double()
    win = min(win, a.shape[-2], a.shape[-1])
    win -= 1 - win % 2
    np_ = win * win
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731  (valid: the interior)
    ux, uy = pool(a), pool(b)
    uxx, uyy, uxy = pool(a * a), pool(b * b), pool(a * b)
    cov = np_ / (np_ - 1)
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def _unit_abs(maps: torch.Tensor) -> torch.Tensor:
    """``|map|`` divided by its maximum per image (an all-zero map stays zero)."""
    m = maps.abs().float()
    return m / m.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]


def cascade_steps(model: nn.Module, spec: str | int = DEFAULT_CASCADE) -> list[int]:
    """The numbers of top layers randomised at each step of the cascade (increasing, at most the
    model's layer count L): ``"1,3,all"``, ``"every"`` (1..L) or one number."""
    n = len(parametrised_layers(model))
    text = str(spec).strip().lower()
    if text == "every":
        return list(range(1, n + 1))
    steps = []
    for part in text.split(","):
        part = part.strip()
        k = n if part == "all" else int(part)
        if k < 1:
            raise ValueError(f"cascade steps must be ≥ 1 or 'all', got {spec!r}")
        steps.append(min(k, n))
    return sorted(set(steps))


def cascade_similarity(
    make: Any,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    steps: list[int],
    seed: int = 0,
    explain_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and step, the Spearman correlation of ``|map|`` and the SSIM of the unit-scaled
    ``|map|`` between ``maps`` (on ``model``) and the maps of ``make(randomised)`` where
    ``randomised`` has its top ``steps[s]`` layers re-initialised: two ``[B, len(steps)]``
    tensors."""
    kw = explain_kwargs or {}
    ref = maps.float()
    rho, sim = [], []
    for k in steps:
        rand = cached_randomised_model(model, k, seed)
        rmaps = make(rand).explain(images, targets, **kw).to(ref.device)
        rho.append(spearman(ref.abs(), rmaps.abs()))
        sim.append(ssim(_unit_abs(ref), _unit_abs(rmaps)))
    return torch.stack(rho, 1), torch.stack(sim, 1)


def _images(c: MetricContext) -> int:
    return min(S.SANITY_IMAGES.get(c.settings), len(c.images))


def _cascade(c: MetricContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell's cascade curves ``[B, S]`` (NaN past ``sanity_images``), computed once per cell
    for both columns; the curves are kept as ``curve/cascade_spearman`` / ``curve/cascade_ssim``."""
    if "cascade" not in c.cache:
        steps = cascade_steps(c.model, S.CASCADE.get(c.settings))
        k = _images(c)
        rho = torch.full((len(c.images), len(steps)), float("nan"))
        sim = rho.clone()
        if k:
            kw = c.explain_kwargs(k)
            r, s = cascade_similarity(
                lambda m: refit_for(c, m),
                c.model,
                c.images[:k],
                c.targets[:k],
                c.saliency[:k],
                steps,
                seed=S.SEED.get(c.settings),
                explain_kwargs=kw,
            )
            rho[:k], sim[:k] = r.cpu(), s.cpu()
            c.keep("curve/cascade_spearman", rho, list(range(k)))
            c.keep("curve/cascade_ssim", sim, list(range(k)))
        c.cache["cascade"] = (rho, sim)
    return c.cache["cascade"]


def random_other_class(targets: torch.Tensor, num_classes: int, start: int, seed: int):
    """For the images ``start, start + 1, …``, a class other than ``targets`` drawn uniformly
    from the ``num_classes - 1`` others by a generator seeded with ``seed`` (image ``i`` gets the
    ``i``-th draw, whatever its batch)."""
    if num_classes < 2:
        raise ValueError("the random-logit test needs at least two classes")
    gen = torch.Generator().manual_seed(int(seed))
    offset = torch.randint(1, num_classes, (start + len(targets),), generator=gen)[start:]
    return (targets.cpu() + offset) % num_classes


def _num_classes(model: nn.Module, images: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if n:
        return int(n)
    with torch.no_grad():
        return int(model(images[:1]).shape[1])


def _random_logit(c: MetricContext) -> torch.Tensor:
    """Spearman of ``|map|`` between the explained class's map and a random other class's."""
    k = _images(c)
    out = torch.full((len(c.images),), float("nan"))
    if k == 0:
        return out
    kw = c.explain_kwargs(k)
    other = random_other_class(
        c.targets[:k], _num_classes(c.model, c.images), c.start, S.SEED.get(c.settings)
    )
    maps = c.method.explain(c.images[:k], other.to(c.targets.device), **kw)
    out[:k] = spearman(c.saliency[:k].abs().float(), maps.abs().to(c.saliency.device)).cpu()
    return out


def _footnote(settings: dict[str, Any]) -> str:
    return (
        f"cascade steps (top layers randomised): {S.CASCADE.get(settings)}, "
        f"seed {S.SEED.get(settings)}; first {S.SANITY_IMAGES.get(settings)} images "
        f"of a cell; learned methods re-fitted on each randomised model with at most "
        f"{S.REFIT_EPOCHS.get(settings)} epoch(s) over "
        f"{S.REFIT_IMAGES.get(settings)} images"
    )


register_metric(
    MetricSpec(
        "cascade_spearman",
        lambda c: _cascade(c)[0].nanmean(1),
        "cascade_spearman",
        higher_is_better=False,
        category="randomisation",
        checked_against="SciPy spearmanr of |map|, "
        "tests/test_randomisation_robustness.py::test_cascade_curves_match_a_direct_computation",
        explains_again=True,
        rewards_ground_truth=False,
        footnote=_footnote,
        settings=(*S.SANITY, S.CASCADE),
        citation="Adebayo et al., NeurIPS 2018",
        description="Adebayo et al. cascading randomisation: Spearman of |map| (trained vs top layers "
        "randomised), mean over the cascade's steps",
    )
)
register_metric(
    MetricSpec(
        "cascade_ssim",
        lambda c: _cascade(c)[1].nanmean(1),
        "cascade_ssim",
        higher_is_better=False,
        category="randomisation",
        checked_against="scikit-image structural_similarity, "
        "tests/test_randomisation_robustness.py::test_ssim_matches_scikit_image, "
        "tests/test_randomisation_robustness.py::test_cascade_curves_match_a_direct_computation",
        explains_again=True,
        rewards_ground_truth=False,
        footnote=_footnote,
        settings=(*S.SANITY, S.CASCADE),
        citation="Adebayo et al., NeurIPS 2018",
        description="Adebayo et al. cascading randomisation: SSIM of |map| (trained vs top layers "
        "randomised), mean over the cascade's steps",
    )
)
register_metric(
    MetricSpec(
        "random_logit",
        _random_logit,
        "random_logit",
        higher_is_better=False,
        category="randomisation",
        checked_against="SciPy spearmanr of |map|, "
        "tests/test_randomisation_robustness.py::test_random_logit_matches_a_direct_computation",
        explains_again=True,
        rewards_ground_truth=False,
        settings=(S.SEED, S.TARGET, S.SANITY_IMAGES),
        citation="Sixt et al., ICML 2020",
        footnote=lambda s: (
            f"random other class per image from seed {S.SEED.get(s)}; first "
            f"{S.SANITY_IMAGES.get(s)} images of a cell"
        ),
        description="random-logit test: Spearman of |map| for the explained class vs a random other "
        "class",
    )
)
