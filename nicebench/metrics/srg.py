"""Symmetric relevance gain (Blücher et al., TMLR 2024) and the ROAD metrics as leaderboard columns.

SRG = LeRF area − MoRF area with the same fill: pixels are replaced in saliency order by the fill,
most salient first (MoRF, the deletion curve) or least salient first (LeRF, the reverse order of
the same ranking); a map that separates relevant from irrelevant pixels keeps the class when the
irrelevant ones go and loses it when the relevant ones go, whatever the fill does to the classifier
on its own. Fills: ``mean`` and ``blur`` (deletion's path, its ``n_steps`` and trapezoidal AUC,
:mod:`~nicebench.metrics.faithfulness`) and ``road`` (ROAD's noisy linear imputation at its
percentages, area = mean over the percentages, :mod:`~nicebench.metrics.road`). Higher is better.

Registered metrics (each batch computes each fill's two curves once, shared through the context's
cache): ``road_morf``, ``road_lerf``, ``srg_road``, ``srg_mean``, ``srg_blur`` and
``deletion_blur`` (the MoRF area with the blur fill, column ``deletion_blur_auc``). Settings (the
run's ``[settings]``): ``n_steps``, ``seed``, ``target`` as deletion; ``road_noise`` (default
0.01) and ``road_percentages`` (default 0.1 … 0.9).
"""

from __future__ import annotations

import torch
from torch import nn

from ..metric_spec import SRG_SETTINGS, MetricSpec
from ..registry import register_metric
from . import settings as S
from .context import MetricContext
from .faithfulness import _curves, auc, pixel_ranks, substrate_image
from .road import road_curves

__all__ = ["SRG_SETTINGS", "morf_lerf_curves", "srg"]


@torch.no_grad()
def morf_lerf_curves(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    fill="mean",
    n_steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    orders: tuple[str, ...] = ("morf", "lerf"),
) -> torch.Tensor:
    """Target-class probability ``[B, len(orders), n_steps+1]`` as pixels move from the image to
    ``fill`` (a :func:`~nicebench.metrics.faithfulness.substrate_image` fill) most salient first
    (``"morf"``: the deletion curve) or least salient first (``"lerf"``); every order in one
    batched pass."""
    if saliency.shape[0] != images.shape[0] or saliency.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"saliency of shape {tuple(saliency.shape)} does not match images "
            f"{tuple(images.shape)}; expected [B,1,H,W]"
        )
    b = images.shape[0]
    n_steps = int(n_steps or images.shape[-2])
    ranks = pixel_ranks(saliency.to(images.device), seed)
    lerf = ranks.shape[1] - 1 - ranks  # LeRF: the reverse order
    k = len(orders)
    both = torch.cat([ranks if o == "morf" else lerf for o in orders])
    finish = substrate_image(model, images, fill)
    curves = _curves(
        model,
        images.repeat(k, 1, 1, 1),
        finish.repeat(k, 1, 1, 1),
        both,
        targets.repeat(k),
        n_steps,
        batch_size,
    )
    return curves.view(k, b, -1).transpose(0, 1)


def srg(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    fill="mean",
    **kwargs,
) -> torch.Tensor:
    """Per-image SRG ``[B]`` with ``fill``: ``"road"`` (keyword arguments:
    :func:`~nicebench.metrics.road.road_curves`) or a deletion fill (:func:`morf_lerf_curves`)."""
    if fill == "road":
        curves = road_curves(model, images, saliency, targets, **kwargs)
        return curves[:, 1].mean(1) - curves[:, 0].mean(1)
    curves = morf_lerf_curves(model, images, saliency, targets, fill, **kwargs)
    return auc(curves[:, 1]) - auc(curves[:, 0])


# -- the metrics ----------------------------------------------------------------------------------
def _road(c: MetricContext) -> torch.Tensor:
    """ROAD curves ``[B, 2, P]`` of the batch, computed once (kept as ``curve/road_morf`` and
    ``curve/road_lerf``)."""
    if "road" not in c.cache:
        s = c.settings
        curves = road_curves(
            c.model,
            c.images,
            c.saliency,
            c.targets,
            percentages=tuple(S.ROAD_PERCENTAGES.get(s)),
            noise=S.ROAD_NOISE.get(s),
            seed=S.SEED.get(s),
            start=c.start,
        )
        c.keep("curve/road_morf", curves[:, 0])
        c.keep("curve/road_lerf", curves[:, 1])
        for column in ("road_morf", "road_lerf", "srg_road"):  # most removed, least removed
            c.keep_range(column, curves[:, 0, -1], curves[:, 1, 0])
        c.cache["road"] = curves
    return c.cache["road"]


def _fill(c: MetricContext, fill: str) -> torch.Tensor:
    """MoRF and LeRF curves ``[B, 2, n+1]`` with ``fill``, computed once per batch (the MoRF
    curve taken from the deletion metric when it ran first with the same fill)."""
    key = f"morf_lerf/{fill}"
    if key not in c.cache:
        kw = {"n_steps": S.N_STEPS.get(c.settings), "seed": S.SEED.get(c.settings)}
        morf = c.cache.get(f"deletion/{fill}")  # the deletion metric's curves, when it ran first
        if morf is None:
            curves = morf_lerf_curves(c.model, c.images, c.saliency, c.targets, fill, **kw)
        else:
            lerf = morf_lerf_curves(
                c.model, c.images, c.saliency, c.targets, fill, orders=("lerf",), **kw
            )
            curves = torch.stack([morf, lerf[:, 0]], 1)
        c.keep(f"curve/lerf_{fill}", curves[:, 1])
        if fill != "mean":  # the mean fill's MoRF curve is the deletion curve
            c.keep(f"curve/deletion_{fill}", curves[:, 0])
            c.keep_range("deletion_blur_auc", curves[:, 0, -1], curves[:, 0, 0])
        c.keep_range(f"srg_{fill}", curves[:, 0, -1], curves[:, 0, 0])
        c.cache[key] = curves
    return c.cache[key]


def _srg_fill(fill: str):
    def fn(c: MetricContext) -> torch.Tensor:
        curves = _fill(c, fill)
        return auc(curves[:, 1]) - auc(curves[:, 0])

    return fn


_ROAD = (*S.FAITHFULNESS, S.ROAD_NOISE, S.ROAD_PERCENTAGES)
ROAD_MORF = register_metric(
    MetricSpec(
        "road_morf",
        lambda c: _road(c)[:, 0].mean(1),
        "road_morf",
        higher_is_better=False,
        category="faithfulness",
        citation="Rong et al., ROAD, ICML 2022",
        checked_against="pytorch-grad-cam's ROAD (noise off), "
        "tests/test_road.py::test_road_matches_pytorch_grad_cam",
        curve=True,
        settings=_ROAD,
        description="ROAD MoRF: mean probability with 10..90% most salient pixels imputed",
    )
)
ROAD_LERF = register_metric(
    MetricSpec(
        "road_lerf",
        lambda c: _road(c)[:, 1].mean(1),
        "road_lerf",
        higher_is_better=True,
        category="faithfulness",
        citation="Rong et al., ROAD, ICML 2022",
        checked_against="pytorch-grad-cam's ROAD (noise off), "
        "tests/test_road.py::test_road_matches_pytorch_grad_cam",
        curve=True,
        settings=_ROAD,
        description="ROAD LeRF: mean probability with 10..90% least salient pixels imputed",
    )
)
SRG_ROAD = register_metric(
    MetricSpec(
        "srg_road",
        lambda c: _road(c)[:, 1].mean(1) - _road(c)[:, 0].mean(1),
        "srg_road",
        higher_is_better=True,
        category="faithfulness",
        citation="Blücher et al., symmetric relevance gain, TMLR 2024",
        checked_against="pytorch-grad-cam's ROAD for both orders (noise off), "
        "tests/test_road.py::test_road_matches_pytorch_grad_cam",
        curve=True,
        settings=_ROAD,
        description="symmetric relevance gain, ROAD fill: road_lerf − road_morf",
    )
)
SRG_MEAN = register_metric(
    MetricSpec(
        "srg_mean",
        _srg_fill("mean"),
        "srg_mean",
        higher_is_better=True,
        category="faithfulness",
        citation="Blücher et al., symmetric relevance gain, TMLR 2024",
        checked_against="none (MoRF is deletion, LeRF its reversed order: "
        "tests/test_road.py::test_srg_morf_is_deletion_and_lerf_the_reverse_order)",
        curve=True,
        settings=S.FAITHFULNESS,
        description="symmetric relevance gain, mean fill: LeRF AUC − MoRF (deletion) AUC",
    )
)
SRG_BLUR = register_metric(
    MetricSpec(
        "srg_blur",
        _srg_fill("blur"),
        "srg_blur",
        higher_is_better=True,
        category="faithfulness",
        citation="Blücher et al., symmetric relevance gain, TMLR 2024",
        checked_against="none (MoRF is deletion, LeRF its reversed order: "
        "tests/test_road.py::test_srg_morf_is_deletion_and_lerf_the_reverse_order)",
        curve=True,
        settings=S.FAITHFULNESS,
        description="symmetric relevance gain, blur fill: LeRF AUC − MoRF AUC",
    )
)
DELETION_BLUR = register_metric(
    MetricSpec(
        "deletion_blur",
        lambda c: auc(_fill(c, "blur")[:, 0]),
        "deletion_blur_auc",
        higher_is_better=False,
        category="faithfulness",
        citation="Blücher et al., symmetric relevance gain, TMLR 2024",
        checked_against="none (MoRF is deletion: "
        "tests/test_road.py::test_srg_morf_is_deletion_and_lerf_the_reverse_order)",
        curve=True,
        settings=S.FAITHFULNESS,
        description="deletion AUC with the blur fill (MoRF, blur)",
    )
)
