"""What a metric sees of one batch of one cell: :class:`MetricContext`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import settings as S
from .sanity import cached_randomised_model, refit_method

__all__ = ["MetricContext", "refit_for"]


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

    def keep(
        self,
        name: str,
        values: torch.Tensor | np.ndarray,
        rows: list[int] | None = None,
        dtype: str = "float32",
    ) -> None:
        """Keep ``values[j]`` (one array per image of the batch, or per row of ``rows``) under
        ``name`` for image ``start + j``; stored with the cell, read back by
        :meth:`nicebench.store.RunStore.artifacts`."""
        rows = list(range(len(self.images))) if rows is None else rows
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        for j in rows:
            self.kept.append((self.start + j, name, np.asarray(values[j]).astype(dtype)))

    def keep_sample(
        self, name: str, values: torch.Tensor | np.ndarray, dtype: str = "float32"
    ) -> None:
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
            rand = cached_randomised_model(self.model, seed=S.SEED.get(self.settings))
            hit = refit_for(self, rand).explain(
                self.images[:k], self.targets[:k], **self.explain_kwargs(k)
            )
            self.cache["randomised_maps"] = hit
        return hit[:k]

    @property
    def targets(self) -> torch.Tensor:
        """The classes explained: the labels with ``settings["target"] == "label"``, else preds."""
        return self.labels if S.TARGET.get(self.settings) == "label" else self.preds

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


def refit_for(c: MetricContext, model: nn.Module) -> Any:
    """The cell's method on the randomised classifier ``model``, re-fitted where it learns with
    ``settings["refit_epochs"]`` (default 1) epochs over ``settings["refit_images"]`` (default
    2000) images: :func:`nicebench.metrics.sanity.refit_method`."""
    return refit_method(
        c.method,
        model,
        epochs=S.REFIT_EPOCHS.get(c.settings),
        n_train=S.REFIT_IMAGES.get(c.settings),
    )
