"""Metrics: a registry of the metrics the runner applies to every cell.

Each :class:`MetricSpec` maps a :class:`MetricContext` (model, images, labels, maps, masks, the
method, the codec and the run's settings) to a per-image tensor (``kind="per_image"``), or to rows
of a table (``kind="table"``, e.g. ``compression``) that its torch-free ``summary`` reduces to
leaderboard columns; it names its leaderboard column.
"""

from __future__ import annotations

from typing import Any

import torch

from ..bootstrap import bootstrap_ci
from ..metric_spec import DEFAULT_SETTINGS, MetricSpec
from ..registry import METRICS, register_metric
from . import settings as S
from .context import MetricContext, refit_for
from .faithfulness import auc, blurred, deletion, insertion, pixel_ranks, substrate_image
from .gate import mask_share, masked_correct
from .insertion_start import insertion_start
from .localisation import energy_pointing_game, mask_auroc, pointing_game
from .saliency_metric import saliency_metric
from .sanity import randomised_model, sanity_spearman, spearman

__all__ = [
    "MetricContext",
    "MetricSpec",
    "deletion",
    "insertion",
    "pointing_game",
    "energy_pointing_game",
    "mask_auroc",
    "bootstrap_ci",
    "auc",
    "blurred",
    "substrate_image",
    "pixel_ranks",
    "DEFAULT_SETTINGS",
    "get_metric_spec",
    "refit_for",
    "saliency_metric",
    "sanity_spearman",
    "randomised_model",
    "mask_share",
    "masked_correct",
    "COMPRESSION_METRIC",
]


def get_metric_spec(name: str) -> MetricSpec:
    """The registered :class:`MetricSpec` called ``name`` (an unknown name lists close ones)."""
    return METRICS.get(name)


def _faith_kwargs(ctx: MetricContext) -> dict[str, Any]:
    return {
        "n_steps": S.N_STEPS.get(ctx.settings),
        "target": ctx.targets,
        "seed": S.SEED.get(ctx.settings),
    }


def _deletion(c: MetricContext) -> torch.Tensor:
    """Deletion AUC per image; every image's curve kept as ``curve/deletion`` (and cached as
    ``deletion/<fill>`` for the symmetric relevance gain of the same fill)."""
    substrate = S.SUBSTRATE.get(c.settings)
    scores, curves = deletion(
        c.model, c.images, c.saliency, return_curves=True, substrate=substrate, **_faith_kwargs(c)
    )
    c.keep("curve/deletion", curves)
    c.keep_range("deletion_auc", curves[:, -1], curves[:, 0])
    if isinstance(substrate, str):
        c.cache[f"deletion/{substrate}"] = curves
    return scores


def _insertion(c: MetricContext) -> torch.Tensor:
    """Insertion AUC per image from the start of ``settings["insertion_start"]`` (default
    ``calibrated``: :mod:`nicebench.metrics.insertion_start`, recorded with the cell as the table
    ``insertion_start``); every image's curve kept as ``curve/insertion``."""
    start = insertion_start(c.model, c.images, S.INSERTION_START.get(c.settings), c.dataset)
    c.record("insertion_start", [start.as_row()])
    scores, curves = insertion(
        c.model,
        c.images,
        c.saliency,
        return_curves=True,
        start=start.image(c.model, c.images),
        **_faith_kwargs(c),
    )
    c.keep("curve/insertion", curves)
    c.keep_range("insertion_auc", curves[:, 0], curves[:, -1])
    return scores


def _masked_accuracy(c: MetricContext) -> torch.Tensor:
    """Accuracy on the gate-mask composite; the range kept is an empty mask's and a full one's."""
    full, empty = torch.ones_like(c.gate_mask()), torch.zeros_like(c.gate_mask())
    ends = masked_correct(
        c.model,
        torch.cat([c.images, c.images]),
        torch.cat([empty, full]),
        c.method.composite,
        torch.cat([c.labels, c.labels]),
    )
    c.keep_range("masked_accuracy", ends[: len(c.images)], ends[len(c.images) :])
    return masked_correct(c.model, c.images, c.gate_mask(), c.method.composite, c.labels)


register_metric(
    MetricSpec(
        "deletion",
        _deletion,
        "deletion_auc",
        higher_is_better=False,
        category="faithfulness",
        checked_against="the definition as a plain per-image, per-step loop "
        "(nicebench.metrics.reference.deletion_loop), "
        "tests/test_metrics.py::test_vectorised_equals_per_image_loop",
        curve=True,
        settings=(*S.FAITHFULNESS, S.SUBSTRATE),
        citation="Petsiuk et al., RISE, BMVC 2018",
        description="RISE deletion AUC: image → substrate in saliency order",
    )
)
register_metric(
    MetricSpec(
        "insertion",
        _insertion,
        "insertion_auc",
        higher_is_better=True,
        category="faithfulness",
        checked_against="the definition as a plain per-image, per-step loop "
        "(nicebench.metrics.reference.insertion_loop), "
        "tests/test_metrics.py::test_vectorised_equals_per_image_loop",
        curve=True,
        settings=(*S.FAITHFULNESS, S.INSERTION_START),
        citation="Petsiuk et al., RISE, BMVC 2018",
        description="RISE insertion AUC: blurred image → image in saliency order (the blur "
        "calibrated so that the start sits near chance, setting insertion_start)",
    )
)
register_metric(
    MetricSpec(
        "pointing_game",
        lambda c: pointing_game(c.saliency, c.masks),
        "pointing_game",
        higher_is_better=True,
        category="localisation",
        citation="Zhang et al., Top-down neural attention by excitation backprop, ECCV 2016",
        checked_against="none (hand-worked cases: "
        "tests/test_metrics.py::test_pointing_game_ties_and_tolerance)",
        needs_masks=True,
        description="arg-max of the map inside the object mask dilated by 15 px at 224",
    )
)
register_metric(
    MetricSpec(
        "energy_pointing_game",
        lambda c: energy_pointing_game(c.saliency, c.masks),
        "energy_pointing_game",
        higher_is_better=True,
        category="localisation",
        citation="Wang et al., Score-CAM, CVPR Workshops 2020",
        checked_against="none (the formula by hand: tests/test_metrics.py::test_energy_and_auroc)",
        needs_masks=True,
        description="share of positive saliency mass inside the object mask",
    )
)
register_metric(
    MetricSpec(
        "mask_auroc",
        lambda c: mask_auroc(c.saliency, c.masks),
        "mask_auroc",
        higher_is_better=True,
        category="localisation",
        checked_against="SciPy mannwhitneyu (U / n⁺n⁻), "
        "tests/test_metrics.py::test_energy_and_auroc",
        needs_masks=True,
        description="ROC AUC of the map as a detector of object pixels",
    )
)


register_metric(
    MetricSpec(
        "mask_share",
        lambda c: mask_share(c.gate_mask()),
        "mask_share",
        higher_is_better=False,
        category="complexity",
        citation="Li & Ji, NICE, arXiv 1908.08988",
        checked_against="none",
        in_combined_rank=False,
        applies=lambda m: m.gate_mask,
        description="share of pixels the method's binary gate mask keeps",
    )
)
register_metric(
    MetricSpec(
        "masked_accuracy",
        _masked_accuracy,
        "masked_accuracy",
        higher_is_better=True,
        category="faithfulness",
        citation="Li & Ji, NICE, arXiv 1908.08988",
        checked_against="none",
        curve=True,
        uses_labels=True,
        applies=lambda m: m.masked_input,
        description="classifier accuracy on the image composited through the binary gate mask",
    )
)


register_metric(
    MetricSpec(
        "saliency_metric",
        lambda c: saliency_metric(c.model, c.images, c.saliency, target=c.targets),
        "saliency_metric",
        higher_is_better=False,
        category="faithfulness",
        checked_against="none (hand-worked boxes: "
        "tests/test_saliency_metric_sanity.py::test_full_image_box_scores_minus_log_p, "
        "tests/test_saliency_metric_sanity.py::test_tiny_box_clamps_area_to_five_percent)",
        settings=(S.TARGET,),
        citation="Dabkowski & Gal, NeurIPS 2017",
        description="Dabkowski & Gal: log(max(area, 0.05)) - log p(class | tightest box crop)",
    )
)


def _sanity(c: MetricContext) -> torch.Tensor:
    """Spearman of the maps on the trained and the top-randomised model, on the first
    ``settings["sanity_images"]`` images of the batch (default 32; NaN for the rest)."""
    k = min(S.SANITY_IMAGES.get(c.settings), len(c.images))
    out = torch.full((len(c.images),), float("nan"))
    if k == 0:
        return out
    out[:k] = spearman(c.saliency[:k].float(), c.randomised_maps(k).to(c.saliency.device).float())
    return out


register_metric(
    MetricSpec(
        "sanity_spearman",
        _sanity,
        "sanity_spearman",
        higher_is_better=False,
        category="randomisation",
        checked_against="SciPy rankdata and spearmanr, "
        "tests/test_saliency_metric_sanity.py::test_rankdata_and_spearman_match_scipy",
        explains_again=True,
        rewards_ground_truth=False,
        settings=S.SANITY,
        citation="Adebayo et al., NeurIPS 2018",
        footnote=lambda s: (
            f"top 3 layers randomised, seed {S.SEED.get(s)}; first "
            f"{S.SANITY_IMAGES.get(s)} images of a cell; learned methods "
            f"re-fitted on the randomised model with at most "
            f"{S.REFIT_EPOCHS.get(s)} epoch(s) over {S.REFIT_IMAGES.get(s)} "
            "images"
        ),
        description="Adebayo et al.: rank correlation of maps on the trained vs top-randomised model",
    )
)


from . import complexity, randomisation, robustness  # noqa: E402,F401  (register their metrics)
from .compression import COMPRESSION_METRIC  # noqa: E402  (registers ``compression``)
from .srg import SRG_ROAD  # noqa: E402, F401  (registers road_morf/lerf, srg_road/mean/blur, deletion_blur)
