"""The validity audit's two side passes over a method cell's first images.

The audit (:mod:`nicebench.report.validity`, torch-free, drawn from the store) needs, beside the
leaderboard's own per-image scores, two things only a run with the classifier can compute. On
the images whose global index is below ``settings["audit_images"]`` (default
:data:`AUDIT_IMAGES`), every per-image metric of the cell is scored again:

- ``randomised``: on the method's maps of the *top-randomised* classifier (the sanity check's
  model and re-fits, :meth:`~nicebench.metrics.MetricContext.randomised_maps`; shared with the
  sanity metric, so no explain is added where it runs), scored with the trained classifier. A
  metric that rewards good maps must score these worse: MetaQuantus's adversary reactivity
  (Hedström et al. 2023, arXiv 2302.07265: under a disruptive model perturbation the metric's
  verdict on the explanations must change).
- ``noise``: on the images with small Gaussian noise (std :data:`NOISE_STD` of the [0, 1] pixel
  range, seeded per image), explained again: the methods' ranking must not move much under a
  perturbation that does not change what the image shows (MetaQuantus's noise resilience).

The metrics that run the method themselves (``explains_again``: the sanity check, the random
logit) are left out of both passes: scored on given maps they would mix two models (the maps of
the randomised one, the method's own explains on the trained one), and on noisy images they
would cost another explain per image. The audit tests their reactivity on a model-blind map
instead (``random`` against the best method, :mod:`nicebench.report.validity`).

Each pass returns rows ``{image_index, column, pass, value}`` stored with the cell as its table
``audit``; the targets stay the classes explained on the clean images.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from . import settings as S
from .context import refit_for
from .sanity import cached_randomised_model

if TYPE_CHECKING:
    from ..metric_spec import MetricSpec
    from .context import MetricContext

__all__ = ["AUDIT_IMAGES", "NOISE_STD", "audit_rows", "noisy"]

AUDIT_IMAGES: int = S.AUDIT_IMAGES.default
NOISE_STD = 0.02


def noisy(images: torch.Tensor, start: int, seed: int = 0, std: float = NOISE_STD) -> torch.Tensor:
    """``images`` (global indices ``start, start + 1, …``) with Gaussian noise of ``std``, drawn
    per image from a generator seeded with (``seed``, index), clamped to [0, 1]."""
    noise = torch.stack(
        [
            torch.randn(
                images.shape[1:],
                generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + start + j),
            )
            for j in range(len(images))
        ]
    ).to(images.device, images.dtype)
    return (images + std * noise).clamp(0, 1)


def _scores(ctx: MetricContext, specs: list[MetricSpec], name: str) -> list[dict]:
    rows = []
    for spec in specs:
        values = spec.fn(ctx)
        if values is None:
            continue
        for j, v in enumerate(values.detach().float().cpu().tolist()):
            rows.append(
                {"image_index": ctx.start + j, "column": spec.column, "pass": name, "value": v}
            )
    return rows


def audit_rows(ctx: MetricContext, specs: list[MetricSpec]) -> list[dict]:
    """The ``randomised`` and ``noise`` passes of a method cell (see the module's text): rows
    ``{image_index, column, pass, value}``; none for a codec cell or past the audit images."""
    k = min(len(ctx.images), S.AUDIT_IMAGES.get(ctx.settings) - ctx.start)
    specs = [s for s in specs if s.kind == "per_image"]
    if ctx.method is None or k <= 0 or not specs:
        return []
    part = replace(
        ctx,
        images=ctx.images[:k],
        labels=ctx.labels[:k],
        preds=ctx.preds[:k],
        masks=None if ctx.masks is None else ctx.masks[:k],
        sample_images=0,
        kept=[],
        records={},
        cache={},
    )
    own = [s for s in specs if not s.explains_again]  # see the module's text
    if not own:
        return []
    rmaps = ctx.randomised_maps(k)
    rand = cached_randomised_model(ctx.model, seed=S.SEED.get(ctx.settings))
    method = refit_for(ctx, rand)  # a gate metric reads the method's own mask, not the map
    rows = _scores(replace(part, saliency=rmaps, method=method), own, "randomised")
    images = noisy(part.images, ctx.start, S.SEED.get(ctx.settings))
    maps = ctx.method.explain(images, part.targets, **part.explain_kwargs(k))
    rows += _scores(
        replace(part, images=images, saliency=maps, kept=[], records={}, cache={}), own, "noise"
    )
    return rows
