"""What a metric is, without running one: :class:`MetricSpec`, its declared :class:`Setting` s and
the run's own settings (torch-free).

The registry, the runner, the configuration check and the report all read metrics through this
module; only :mod:`nicebench.metrics` (which registers the built-ins) imports torch. A spec's
description, direction and settings are written into every run store as the run's metric
catalogue (:func:`catalogue`), so that the report draws a stored run without importing a metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the context is torch's; named here for type checking only
    import pandas as pd

    from .metrics.context import MetricContext

__all__ = [
    "MetricSpec",
    "Setting",
    "SettingError",
    "RUN_SETTINGS",
    "DEFAULT_SETTINGS",
    "ROAD_SETTINGS",
    "SRG_SETTINGS",
    "SEED",
    "TARGET",
    "SAMPLE_IMAGES",
    "AUDIT_IMAGES",
    "RANK_ALL_METRICS",
    "CELL_TIMEOUT",
    "CODEC",
    "BASELINE",
    "catalogue",
    "declared_settings",
    "CATEGORIES",
]


class SettingError(ValueError):
    """A ``[settings]`` key no selected metric declares, or a value of the wrong type."""


@dataclass(frozen=True)
class Setting:
    """One key of a run's ``[settings]`` table: its ``name``, ``default``, a one-line ``meaning``
    and, where the value is one of a few, its ``choices``. The type is the default's (an int
    default accepts ints, a float one numbers, a tuple one a list or a comma-separated string);
    ``default=None`` accepts any value. :meth:`get` reads the setting from a run's settings, the
    default where the run names none: the one place a default is written."""

    name: str
    default: Any
    meaning: str
    choices: tuple[Any, ...] = ()

    def get(self, settings: Mapping[str, Any]) -> Any:
        """The run's value (checked and converted) or the default."""
        return self.parse(settings[self.name]) if self.name in settings else self.default

    def parse(self, value: Any) -> Any:
        """``value`` converted to the default's type; :class:`SettingError` when it can't be."""
        default = self.default
        try:
            if default is None or value is None:
                out = value
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError("expected true or false")
                out = value
            elif isinstance(default, int):
                if isinstance(value, bool) or not _is_integer(value):
                    raise TypeError("expected an integer")
                out = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):
                    raise TypeError("expected a number")
                out = float(value)
            elif isinstance(default, tuple):
                out = tuple(value) if isinstance(value, (list, tuple)) else value
            else:
                out = value
        except (TypeError, ValueError) as exc:
            raise SettingError(
                f"setting {self.name} = {value!r}: {exc} (default {default!r}; {self.meaning})"
            ) from None
        if self.choices and out not in self.choices:
            raise SettingError(
                f"setting {self.name} = {value!r}: must be one of "
                f"{', '.join(map(repr, self.choices))} ({self.meaning})"
            )
        return out

    def describe(self) -> str:
        """``name = default: meaning`` for listings and footnotes."""
        choices = f" (one of {', '.join(map(str, self.choices))})" if self.choices else ""
        return f"{self.name} = {self.default!r}: {self.meaning}{choices}"


SEED = Setting("seed", 0, "the run's seed (the config's top-level seed)")
TARGET = Setting(
    "target",
    "pred",
    "the class explained and scored: the classifier's prediction "
    "on the original image or the label",
    choices=("pred", "label"),
)
SAMPLE_IMAGES = Setting(
    "sample_images", 16, "images per dataset kept for the figures (the same for every method)"
)
AUDIT_IMAGES = Setting(
    "audit_images",
    16,
    "images per cell the validity audit rescores on the "
    "randomised classifier and under input noise (0 turns its passes off)",
)
RANK_ALL_METRICS = Setting(
    "rank_all_metrics", False, "count every metric in the combined rank, valid or not"
)
CELL_TIMEOUT = Setting(
    "cell_timeout",
    0.0,
    "seconds a cell may run before it is recorded as "
    "failed (0: no limit; never part of a cell's key)",
)
CODEC = Setting("codec", "jpeg", "the run's codecs when it lists no [codecs] (comma-separated)")
BASELINE = Setting(
    "baseline",
    "",
    "an ablation's default method, as the config lists it (e.g. nice): the report compares every "
    "other method row of each dataset with it, image by image (ablation.csv/.md and the "
    "ablation forest figures; empty: no ablation)",
)
#: The settings of the run itself, read by the runner and the report whatever the metrics.
RUN_SETTINGS: tuple[Setting, ...] = (
    SEED,
    TARGET,
    SAMPLE_IMAGES,
    AUDIT_IMAGES,
    RANK_ALL_METRICS,
    CELL_TIMEOUT,
    CODEC,
    BASELINE,
)

#: The metric families of the catalogue, in its order (a plugin metric may name another).
CATEGORIES: tuple[str, ...] = (
    "faithfulness",
    "localisation",
    "randomisation",
    "robustness",
    "complexity",
    "compression",
)

#: The deletion/insertion protocol as the leaderboard's notes state it.
DEFAULT_SETTINGS = {
    "n_steps": "H (one image row of pixels per step, as RISE's 224 at 224 px)",
    "substrate": "mean (0 in normalised space: the dataset mean colour)",
    "insertion_start": "calibrated per dataset and classifier: the weakest Gaussian blur (RISE's "
    "kernel 11 and sigma 5 at 224 px scaled with image size, times 1 to 16) under which the mean "
    "p(pred) over 256 validation (else training) images is at most chance + 0.10 (setting "
    "insertion_start: calibrated, rise for RISE's literal blur, or mean; each dataset's below)",
    "target": "pred (class predicted on the original image)",
    "score": "softmax probability",
    "auc": "(sum p_i - p_0/2 - p_n/2) / n",
    "ties": "one seeded random permutation of pixel positions",
}

#: ROAD's protocol as the leaderboard's notes state it (Rong et al., ICML 2022).
ROAD_SETTINGS = {
    "percentages": "10%..90% of pixels removed in steps of 10% (round(p·H·W) pixels)",
    "fill": "noisy linear imputation: each removed pixel = weighted mean of its in-image "
    "neighbours (1/6 direct, 1/12 diagonal), one sparse system per image and mask (scipy splu)",
    "noise": "Gaussian, sd 0.01 on the model's [0, 1] input, seeded per image",
    "orders": "MoRF (most salient removed first) and LeRF (least salient first); ties as deletion",
    "score": "softmax probability of the target class; area = mean over the percentages",
}
#: The symmetric relevance gain as the leaderboard's notes state it (Blücher et al., 2024).
SRG_SETTINGS = {
    "srg": "LeRF area − MoRF area with the same fill (LeRF: the MoRF pixel order reversed)",
    "srg_mean/srg_blur": "deletion's path and AUC with the mean / blur fill (deletion_blur_auc: "
    "the blur fill's MoRF area)",
    "srg_road": "road_lerf − road_morf (ROAD's fill and percentages)",
}


@dataclass(frozen=True)
class MetricSpec:
    """A metric and where it goes in the leaderboard.

    ``kind="per_image"``: ``fn(ctx) -> Tensor[B]``, one value per image, in method cells.
    ``kind="table"``: ``fn(ctx) -> list[dict]``, rows stored as the cell's table ``name``, in
    method and codec cells; ``summary(rows) -> DataFrame`` (torch-free) reduces a run's rows to one
    leaderboard row per (dataset, method). ``settings``: the ``[settings]`` keys the metric reads,
    declared with defaults and meanings (:class:`Setting`); a run naming a key no selected metric
    declares is refused. ``footnote(settings) -> str``: the metric's settings under the run's
    ``settings`` (with its seed), for the leaderboard's notes (default: the declared settings'
    values). ``in_combined_rank``: whether the metric's direction orders explanations by quality,
    so that it counts in the leaderboard's combined rank (False for descriptive properties such as
    a map's sparseness). ``citation``: where the metric is defined. ``category``: its family in
    the metric catalogue (one of :data:`CATEGORIES`, Quantus's grouping, or a plugin's own).
    ``checked_against``: the independent implementation its tests compare it with, and the test
    (``"none"`` where no such test exists); both are shown in the docs' metric catalogue.

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
    settings: tuple[Setting, ...] = ()
    citation: str = ""
    category: str = ""
    checked_against: str = ""

    def note(self, settings: Mapping[str, Any]) -> str:
        """The leaderboard's note on this metric under the run's ``settings``: its
        :attr:`footnote`, else the declared settings the run sets to other than their defaults
        (``""`` when it sets none)."""
        if self.footnote is not None:
            return self.footnote(dict(settings))
        changed = [s for s in self.settings if s.name != "seed" and s.get(settings) != s.default]
        return "; ".join(f"{s.name} {s.get(settings)!r}" for s in changed)


def declared_settings(specs: Iterable[MetricSpec]) -> dict[str, Setting]:
    """Name → :class:`Setting` over the run's own settings and those the ``specs`` declare (a
    setting shared by several metrics is one object, declared once)."""
    out = {s.name: s for s in RUN_SETTINGS}
    for spec in specs:
        out.update({s.name: s for s in spec.settings})
    return out


def catalogue(specs: Iterable[MetricSpec], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One JSON-able row per metric: what the report needs to know of it (column, direction,
    description, citation, the audit's flags, its note under ``settings`` and its declared
    settings), stored with every run so that the report never imports a metric."""
    rows = []
    for spec in specs:
        rows.append(
            {
                "name": spec.name,
                "column": spec.column,
                "kind": spec.kind,
                "higher_is_better": spec.higher_is_better,
                "description": spec.description,
                "citation": spec.citation,
                "needs_masks": spec.needs_masks,
                "in_combined_rank": spec.in_combined_rank,
                "curve": spec.curve,
                "explains_again": spec.explains_again,
                "rewards_ground_truth": spec.rewards_ground_truth,
                "uses_labels": spec.uses_labels,
                "note": spec.note(settings),
                "settings": [
                    {
                        "name": s.name,
                        "default": _jsonable(s.default),
                        "meaning": s.meaning,
                        "choices": [_jsonable(c) for c in s.choices],
                    }
                    for s in spec.settings
                ],
            }
        )
    return rows


def _is_integer(value: Any) -> bool:
    try:
        return int(value) == float(value)
    except (TypeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
