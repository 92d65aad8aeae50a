"""What the report knows of a run's columns, read from the run store (no metric is imported).

Every run writes its catalogue into the store (:meth:`nicebench.store.RunStore.record_run`): one
row per metric of the run (:func:`nicebench.metric_spec.catalogue`: column, direction,
description, citation, the validity audit's flags, the leaderboard's note under the run's
settings, the declared settings) and, per method, whether it reads the ground-truth masks (a
reference such as ``oracle``, not a contender). :class:`Catalogue` answers the report's questions
from it: which way a column is better, what it means, which methods are references. A store
written before runs recorded a catalogue is read through the registry instead
(:meth:`Catalogue.from_registry`, which imports the metrics and so torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import RunStore

__all__ = ["COLUMN_HIGHER_IS_BETTER", "Catalogue", "catalogue"]

#: Which way is better for the report's columns that are not metrics of a map.
COLUMN_HIGHER_IS_BETTER = {
    "explain_ms_per_image": False,
    "compression_ratio": False,
    "bd_rate": False,
    "bpp": False,
    "payload_ratio": False,
    "bpp_payload": False,
    "accuracy_original": True,
    "accuracy_compressed": True,
    "accuracy_reference": True,
    "psnr": True,
    "ssim": True,
    "vs_uniform": False,
    "combined_rank": False,
}


@dataclass(frozen=True)
class Catalogue:
    """A run's metrics (rows of :func:`nicebench.metric_spec.catalogue`) and the methods that read
    the ground truth."""

    metrics: tuple[dict[str, Any], ...] = ()
    ground_truth_methods: frozenset[str] = field(default_factory=frozenset)
    classes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> Catalogue | None:
        """The catalogue a run recorded (:meth:`RunStore.latest_run`), None if it has none."""
        stored = run.get("catalogue")
        if not stored:
            return None
        return cls(
            tuple(stored.get("metrics", ())),
            frozenset(stored.get("ground_truth_methods", ())),
            dict(stored.get("classes", {})),
        )

    @classmethod
    def from_registry(cls, settings: dict[str, Any] | None = None) -> Catalogue:
        """Every registered metric and method (imports them, and torch: only for stores written
        before runs recorded their catalogue)."""
        from ..metric_spec import MetricSpec, catalogue  # noqa: I001  (lazy: torch-free paths never get here)
        from ..registry import DATASETS, METHODS, METRICS

        specs = [METRICS.get(n) for n in METRICS.names()]
        gt = {n for n in METHODS.names() if getattr(METHODS.get(n), "needs_masks", False)}
        rows = catalogue([s for s in specs if isinstance(s, MetricSpec)], settings or {})
        classes = {
            n: list(c)
            for n in DATASETS.names()
            if isinstance(c := getattr(DATASETS.get(n), "classes", None), (list, tuple))
        }
        return cls(tuple(rows), frozenset(gt), classes)

    def as_json(self) -> dict[str, Any]:
        """What the run store keeps."""
        return {
            "metrics": list(self.metrics),
            "ground_truth_methods": sorted(self.ground_truth_methods),
            "classes": self.classes,
        }

    def per_image(self) -> dict[str, dict[str, Any]]:
        """Leaderboard column → its per-image metric's row."""
        return {m["column"]: m for m in self.metrics if m.get("kind", "per_image") == "per_image"}

    def higher_is_better(self) -> dict[str, bool]:
        """Column → whether higher is better: the metrics', then the report's own columns."""
        directions = {m["column"]: bool(m["higher_is_better"]) for m in self.metrics}
        return {**directions, **COLUMN_HIGHER_IS_BETTER}

    def metric_directions(self) -> dict[str, bool]:
        """Per-image metric column → higher is better (the report's own columns left out)."""
        return {
            c: d for c, d in self.higher_is_better().items() if c not in COLUMN_HIGHER_IS_BETTER
        }

    def lower_is_better(self, columns) -> list[str]:
        """The sorted columns among ``columns`` for which lower is better."""
        directions = self.higher_is_better()
        return sorted(c for c in set(columns) if directions.get(c) is False)

    def descriptions(self) -> dict[str, str]:
        """Column → the metric's one-line description."""
        return {m["column"]: m["description"] for m in self.metrics if m.get("description")}

    def not_in_combined_rank(self) -> set[str]:
        """Columns left out of the combined rank (descriptive properties of a map)."""
        return {m["column"] for m in self.metrics if not m.get("in_combined_rank", True)}

    def notes(self, columns) -> list[str]:
        """The leaderboard's note of each metric with a column in ``columns``, one line each."""
        present = set(columns)
        return [
            f"{m['column']}: {m['note']}."
            for m in sorted(self.metrics, key=lambda m: m["name"])
            if m.get("note") and m["column"] in present
        ]

    def class_names(self, dataset_label: str) -> list[str] | None:
        """The class names of the dataset a leaderboard label (``scenes(size=64)``) names, where
        its plugin declares them on the class (else None: the report shows class indices)."""
        return self.classes.get(dataset_label.split("(", 1)[0])

    def default(self, metric: str, setting: str, fallback: Any = None) -> Any:
        """The declared default of ``metric``'s ``setting`` (``fallback`` where the catalogue
        does not have it)."""
        for m in self.metrics:
            for s in m.get("settings", ()) if m["name"] == metric else ():
                if s["name"] == setting:
                    return s["default"]
        return fallback

    def reads_ground_truth(self, method_label: str) -> bool:
        """Whether the method of a leaderboard label (``oracle`` or ``nice(lam=2)``) reads the
        dataset's ground-truth masks: a reference, not a contender."""
        return method_label.split("(", 1)[0] in self.ground_truth_methods


def catalogue(store: RunStore) -> Catalogue:
    """The catalogue of the store's latest run (the registry's for a store without one)."""
    run = store.latest_run()
    found = Catalogue.from_run(run) if run else None
    if found is not None:
        return found
    settings = (
        {
            "seed": run.get("config", {}).get("seed", 0),
            **(run.get("config", {}).get("settings") or {}),
        }
        if run
        else {}
    )
    return Catalogue.from_registry(settings)
