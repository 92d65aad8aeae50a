"""Metrics: a registry of the metrics the runner applies to every cell.

Each :class:`MetricSpec` maps a :class:`MetricContext` (model, images, labels, maps, masks, the
method, the codec and the run's settings) to a per-image tensor (``kind="per_image"``), or to rows
of a table (``kind="table"``, e.g. ``compression``) that its torch-free ``summary`` reduces to
leaderboard columns; it names its leaderboard column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..registry import METRICS, register_metric
from .bootstrap import bootstrap_ci
from .faithfulness import DEFAULT_SETTINGS, auc, blurred, deletion, insertion, pixel_ranks
from .gate import mask_share, masked_correct
from .insertion_start import insertion_start
from .localisation import energy_pointing_game, mask_auroc, pointing_game
from .saliency_metric import saliency_metric
from .sanity import (
    cached_randomised_model,
    randomised_model,
    refit_method,
    sanity_spearman,
    spearman,
)

if TYPE_CHECKING:
    import pandas as pd

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
    "pixel_ranks",
    "DEFAULT_SETTINGS",
    "get_metric_spec",
    "saliency_metric",
    "sanity_spearman",
    "randomised_model",
    "mask_share",
    "masked_correct",
    "COMPRESSION_METRIC",
]


@dataclass
class MetricContext:
    """What a metric sees of one batch of one cell.

    ``kind`` is the cell's: ``"method"`` (``method`` and its ``saliency`` are set) or ``"codec"``
    (``method`` and ``saliency`` are None). ``codec`` is the codec the cell codes with: a codec
    cell's own, or the run's reference codec (its first) in a method cell; ``bd_codec`` names the
    reference codec's leaderboard row. ``start`` is the global index of the batch's first image.
    Images whose global index is below ``sample_images`` are the dataset's figure sample (the same
    for every method). A metric keeps per-image arrays for figures and reports with :meth:`keep`
    (every image) or :meth:`keep_sample` (the sample only); the runner stores them with the cell.
    ``codecs``: every codec of the run as ``(label, codec)``, the reference first (the compression
    track codes a method's images with each). ``dataset``: the :class:`~nicebench.BenchDataset`
    the images come from (None when a metric is called outside a run); a metric that calibrates
    on images it does not score (insertion's start) reads its validation or training split.
    ``records``: small tables a metric stores with the cell (:meth:`record`).
    """

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    saliency: torch.Tensor | None
    preds: torch.Tensor
    masks: torch.Tensor | None = None
    method: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    kind: str = "method"
    codec: Any = None
    bd_codec: str = ""
    start: int = 0
    codecs: tuple[tuple[str, Any], ...] = ()
    sample_images: int = 16
    kept: list[tuple[int, str, np.ndarray]] = field(default_factory=list)
    dataset: Any = None
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def sample_rows(self) -> list[int]:
        """The rows of the batch that belong to the figure sample."""
        return list(range(max(0, min(len(self.images), self.sample_images - self.start))))

    def keep(self, name: str, values: torch.Tensor | np.ndarray, rows: list[int] | None = None,
             dtype: str = "float32") -> None:
        """Keep ``values[j]`` (one array per image of the batch, or per row of ``rows``) under
        ``name`` for image ``start + j``; stored with the cell, read back by
        :meth:`nicebench.store.RunStore.artifacts`."""
        rows = list(range(len(self.images))) if rows is None else rows
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        for j in rows:
            self.kept.append((self.start + j, name, np.asarray(values[j]).astype(dtype)))

    def keep_sample(self, name: str, values: torch.Tensor | np.ndarray,
                    dtype: str = "float32") -> None:
        """:meth:`keep` for the figure sample's rows only (``values`` covers the whole batch)."""
        self.keep(name, values, self.sample_rows, dtype)

    def keep_range(self, column: str, blank: torch.Tensor, full: torch.Tensor) -> None:
        """A curve metric's two ends per image, kept as ``range/<column>`` ``[blank, full]``:
        ``blank`` the score where the image's information is gone (deletion's substrate,
        insertion's start, an empty mask), which must sit near chance, and ``full`` the score on
        the original image. The validity audit (:mod:`nicebench.report.validity`) reads them."""
        both = torch.stack([blank.detach().float().cpu(), full.detach().float().cpu()], 1)
        self.keep(f"range/{column}", both)

    def record(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Store ``rows`` (JSON-able dicts) with the cell as its table ``name`` (read back by
        :meth:`nicebench.store.RunStore.tables`); a table recorded twice keeps the last rows."""
        self.records[name] = rows

    def randomised_maps(self, k: int) -> torch.Tensor:
        """The method's maps of the batch's first ``k`` images on the top-randomised classifier
        (:func:`~nicebench.metrics.sanity.cached_randomised_model`, seed ``settings["seed"]``),
        the learned methods re-fitted on it (:func:`refit_for`); computed once per batch and
        shared by the sanity check and the validity audit."""
        hit = self.cache.get("randomised_maps")
        if hit is None or len(hit) < k:
            rand = cached_randomised_model(self.model, seed=self.settings.get("seed", 0))
            hit = refit_for(self, rand).explain(self.images[:k], self.targets[:k],
                                                **self.explain_kwargs(k))  # fmt: skip
            self.cache["randomised_maps"] = hit
        return hit[:k]

    @property
    def targets(self) -> torch.Tensor:
        """The classes explained: the labels with ``settings["target"] == "label"``, else preds."""
        return self.labels if self.settings.get("target", "pred") == "label" else self.preds

    def explain_kwargs(self, k: int | None = None) -> dict[str, Any]:
        """What ``method.explain`` needs beside images and targets for the batch's first ``k``
        images (all by default): the ground-truth ``masks`` for a ``needs_masks`` method, the
        images' dataset ``indices`` for a ``needs_indices`` one. Metrics that explain again
        (sanity, randomisation, sensitivity) pass these."""
        k = len(self.images) if k is None else k
        kw: dict[str, Any] = {}
        if self.method.needs_masks:
            kw["masks"] = self.masks[:k]
        if self.method.needs_indices:
            kw["indices"] = torch.arange(self.start, self.start + k)
        return kw

    def gate_mask(self) -> torch.Tensor:
        """The method's binary gate mask (``binary_mask``), computed once per batch."""
        if "gate_mask" not in self.cache:
            kw = {"masks": self.masks} if self.method.needs_masks else {}
            self.cache["gate_mask"] = self.method.binary_mask(self.images, self.targets, **kw)
        return self.cache["gate_mask"]


@dataclass(frozen=True)
class MetricSpec:
    """A metric and where it goes in the leaderboard.

    ``kind="per_image"``: ``fn(ctx) -> Tensor[B]``, one value per image, in method cells.
    ``kind="table"``: ``fn(ctx) -> list[dict]``, rows stored as the cell's table ``name``, in
    method and codec cells; ``summary(rows) -> DataFrame`` (torch-free) reduces a run's rows to one
    leaderboard row per (dataset, method). ``footnote(settings) -> str``: the metric's settings
    under the run's ``settings`` (with its seed), for the leaderboard's notes. ``in_combined_rank``:
    whether the metric's direction orders explanations by quality, so that it counts in the
    leaderboard's combined rank (False for descriptive properties such as a map's sparseness).

    What the validity audit (:mod:`nicebench.report.validity`) needs to know of the metric:
    ``curve``: ``fn`` keeps each image's two ends with :meth:`MetricContext.keep_range`, whose
    range the audit checks against chance. ``explains_again``: ``fn`` runs the method itself
    (on another model or class), so the audit's noise pass leaves it out (its cost would be
    another explain per image). ``rewards_ground_truth``: the ground-truth mask (``oracle``) is a
    good map under this metric (False for tests of a map's dependence on the classifier, on
    which a model-blind map scores as badly as ``random`` however well it is placed): the audit
    then tests its reactivity on the trained vs the randomised model only. ``uses_labels``: the
    score depends on the labels (or the classifier's accuracy on them): not valid where the
    classifier is at chance on the dataset.
    """

    name: str
    fn: Callable[[MetricContext], Any]
    column: str
    higher_is_better: bool
    needs_masks: bool = False
    applies: Callable[[Any], bool] = lambda method: True
    description: str = ""
    kind: str = "per_image"
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    footnote: Callable[[dict[str, Any]], str] | None = None
    in_combined_rank: bool = True
    curve: bool = False
    explains_again: bool = False
    rewards_ground_truth: bool = True
    uses_labels: bool = False


def _register(spec: MetricSpec) -> MetricSpec:
    register_metric(spec.name)(spec)
    return spec


def get_metric_spec(name: str) -> MetricSpec:
    return METRICS.get(name)


def _faith_kwargs(ctx: MetricContext) -> dict[str, Any]:
    s = ctx.settings
    return {
        "n_steps": s.get("n_steps"),
        "target": ctx.labels if s.get("target", "pred") == "label" else ctx.preds,
        "seed": s.get("seed", 0),
    }


def _deletion(c: MetricContext) -> torch.Tensor:
    """Deletion AUC per image; every image's curve kept as ``curve/deletion`` (and cached as
    ``deletion/<fill>`` for the symmetric relevance gain of the same fill)."""
    substrate = c.settings.get("substrate", "mean")
    scores, curves = deletion(c.model, c.images, c.saliency, return_curves=True,
                              substrate=substrate, **_faith_kwargs(c))
    c.keep("curve/deletion", curves)
    c.keep_range("deletion_auc", curves[:, -1], curves[:, 0])
    if isinstance(substrate, str):
        c.cache[f"deletion/{substrate}"] = curves
    return scores


def _insertion(c: MetricContext) -> torch.Tensor:
    """Insertion AUC per image from the start of ``settings["insertion_start"]`` (default
    ``calibrated``: :mod:`nicebench.metrics.insertion_start`, recorded with the cell as the table
    ``insertion_start``); every image's curve kept as ``curve/insertion``."""
    start = insertion_start(c.model, c.images, c.settings.get("insertion_start", "calibrated"),
                            c.dataset)  # fmt: skip
    c.record("insertion_start", [start.as_row()])
    scores, curves = insertion(c.model, c.images, c.saliency, return_curves=True,
                               start=start.image(c.model, c.images), **_faith_kwargs(c))
    c.keep("curve/insertion", curves)
    c.keep_range("insertion_auc", curves[:, 0], curves[:, -1])
    return scores


def _masked_accuracy(c: MetricContext) -> torch.Tensor:
    """Accuracy on the gate-mask composite; the range kept is an empty mask's and a full one's."""
    full, empty = torch.ones_like(c.gate_mask()), torch.zeros_like(c.gate_mask())
    ends = masked_correct(c.model, torch.cat([c.images, c.images]), torch.cat([empty, full]),
                          c.method.composite, torch.cat([c.labels, c.labels]))  # fmt: skip
    c.keep_range("masked_accuracy", ends[: len(c.images)], ends[len(c.images):])
    return masked_correct(c.model, c.images, c.gate_mask(), c.method.composite, c.labels)


_register(MetricSpec(
    "deletion", _deletion, "deletion_auc", higher_is_better=False, curve=True,
    description="RISE deletion AUC: image → substrate in saliency order",
))  # fmt: skip
_register(MetricSpec(
    "insertion", _insertion, "insertion_auc", higher_is_better=True, curve=True,
    description="RISE insertion AUC: blurred image → image in saliency order (the blur "
                "calibrated so that the start sits near chance, setting insertion_start)",
))  # fmt: skip
_register(MetricSpec(
    "pointing_game", lambda c: pointing_game(c.saliency, c.masks), "pointing_game",
    higher_is_better=True, needs_masks=True,
    description="arg-max of the map inside the object mask dilated by 15 px at 224",
))  # fmt: skip
_register(MetricSpec(
    "energy_pointing_game", lambda c: energy_pointing_game(c.saliency, c.masks),
    "energy_pointing_game", higher_is_better=True, needs_masks=True,
    description="share of positive saliency mass inside the object mask",
))  # fmt: skip
_register(MetricSpec(
    "mask_auroc", lambda c: mask_auroc(c.saliency, c.masks), "mask_auroc",
    higher_is_better=True, needs_masks=True,
    description="ROC AUC of the map as a detector of object pixels",
))  # fmt: skip


_register(MetricSpec(
    "mask_share", lambda c: mask_share(c.gate_mask()), "mask_share", higher_is_better=False,
    in_combined_rank=False,
    applies=lambda m: m.gate_mask, description="share of pixels the method's binary gate mask keeps",
))  # fmt: skip
_register(MetricSpec(
    "masked_accuracy", _masked_accuracy, "masked_accuracy", higher_is_better=True, curve=True,
    uses_labels=True,
    applies=lambda m: m.masked_input,
    description="classifier accuracy on the image composited through the binary gate mask",
))  # fmt: skip


_register(MetricSpec(
    "saliency_metric",
    lambda c: saliency_metric(c.model, c.images, c.saliency, target=c.targets),
    "saliency_metric", higher_is_better=False,
    description="Dabkowski & Gal: log(max(area, 0.05)) - log p(class | tightest box crop)",
))  # fmt: skip


def refit_for(c: MetricContext, model: nn.Module) -> Any:
    """The cell's method on the randomised classifier ``model``, re-fitted where it learns with
    ``settings["refit_epochs"]`` (default 1) epochs over ``settings["refit_images"]`` (default
    2000) images: :func:`nicebench.metrics.sanity.refit_method`."""
    return refit_method(c.method, model, epochs=int(c.settings.get("refit_epochs", 1)),
                        n_train=int(c.settings.get("refit_images", 2000)))  # fmt: skip


def _sanity(c: MetricContext) -> torch.Tensor:
    """Spearman of the maps on the trained and the top-randomised model, on the first
    ``settings["sanity_images"]`` images of the batch (default 32; NaN for the rest)."""
    k = min(int(c.settings.get("sanity_images", 32)), len(c.images))
    out = torch.full((len(c.images),), float("nan"))
    if k == 0:
        return out
    out[:k] = spearman(c.saliency[:k].float(), c.randomised_maps(k).to(c.saliency.device).float())
    return out


_register(MetricSpec(
    "sanity_spearman", _sanity, "sanity_spearman", higher_is_better=False, explains_again=True,
    rewards_ground_truth=False,
    footnote=lambda s: (f"top 3 layers randomised, seed {s.get('seed', 0)}; first "
                        f"{s.get('sanity_images', 32)} images of a cell; learned methods "
                        f"re-fitted on the randomised model with at most "
                        f"{s.get('refit_epochs', 1)} epoch(s) over {s.get('refit_images', 2000)} "
                        "images"),
    description="Adebayo et al.: rank correlation of maps on the trained vs top-randomised model",
))  # fmt: skip


from . import complexity, randomisation, robustness  # noqa: E402,F401  (register their metrics)
from .compression import COMPRESSION_METRIC  # noqa: E402  (registers ``compression``)
from .srg import SRG_ROAD  # noqa: E402, F401  (registers road_morf/lerf, srg_road/mean/blur, deletion_blur)
