"""``nicebench run --dry-run``: what a run would do, from its config, its store and the model cache.

:func:`plan_run` plans the cells exactly as :func:`nicebench.runner.run` does (the same preflight
check), then says which are already stored (finished ok) in the run directory's store, which
classifiers and learned methods would train (no entry in the model cache) and how long the rest
would take by the store's own timings. It computes and trains nothing and writes nothing to the
store (it reads it read-only, and does not create one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .config import PluginSpec, RunConfig
from .method import create_method
from .models import classifier_identity, has_module, load_model, load_model_path
from .registry import METHODS
from .runner import METHOD, Cell, _dataset, plan_cells
from .store import peek_cells

__all__ = ["PlannedCell", "RunPlan", "plan_run"]


@dataclass
class PlannedCell:
    """A cell of the plan: ``stored`` when the store holds it finished ok; ``seconds``: its
    estimate (0 when stored, None when the store has no timing to go by)."""

    cell: Cell
    key: str
    stored: bool
    seconds: float | None

    @property
    def label(self) -> str:
        c = self.cell
        model = f" · {c.model.label}" if c.model.label != "default" else ""
        return f"{c.dataset.label}{model} · {c.method.label} · shard {c.shard}"


@dataclass
class RunPlan:
    """What ``nicebench run`` would do in ``out``; :meth:`lines` says it."""

    out: Path
    cells: list[PlannedCell]
    train: list[str] = field(default_factory=list)  # the models that would train

    @property
    def estimate(self) -> float:
        """Seconds of the cells to compute whose time the store can tell (a lower bound of the
        run's time when :attr:`unknown` is not 0; training is not in it)."""
        return sum(p.seconds or 0.0 for p in self.cells)

    @property
    def unknown(self) -> int:
        """Cells to compute that the store has no timing for."""
        return sum(p.seconds is None for p in self.cells)

    def lines(self) -> list[str]:
        todo = [p for p in self.cells if not p.stored]
        out = [
            f"dry run of {len(self.cells)} cells into {self.out}: {len(self.cells) - len(todo)} "
            f"already stored, {len(todo)} to compute (nothing computed, nothing written)"
        ]
        for p in self.cells:
            when = "" if p.stored else "  unknown" if p.seconds is None else f"  ~{p.seconds:.1f} s"
            out.append(f"  {'stored ' if p.stored else 'compute'}  {p.label}{when}")
        if self.train:
            out.append(f"models that would train (not in the model cache): {len(self.train)}")
            out += [f"  {t}" for t in self.train]
        else:
            out.append("models that would train (not in the model cache): none")
        known = len(todo) - self.unknown
        if not todo:
            estimate = "estimate: 0 s: every cell is in the store"
        elif not known:
            estimate = (
                "estimate: unknown: the store holds no finished cell of these cells' dataset, "
                "model and method"
            )
        else:
            estimate = f"estimate: {'at least ' if self.unknown else ''}{self.estimate:.1f} s"
            estimate += f" for {known} cells, from the store's timings of their dataset, model "
            estimate += "and method"
            if self.unknown:
                estimate += f"; {self.unknown} more with no such timing"
        if self.train:
            estimate += "; plus training the models above"
        out.append(estimate)
        return out


def _rates(stored: pd.DataFrame | None) -> dict[tuple[str, str, str, str], float]:
    """Seconds per image of the store's finished cells, per (dataset, model, method, kind), less
    the time they spent loading or training models (a rerun finds those cached)."""
    if stored is None or stored.empty:
        return {}
    ok = stored[(stored.status == "ok") & (stored.n_images > 0)]
    out = {}
    for group, g in ok.groupby(["dataset", "model", "method", "kind"]):
        spent = (g.seconds.fillna(0) - g.models_seconds).clip(lower=0).sum()
        out[tuple(group)] = float(spent / g.n_images.sum())
    return out


def _models_to_train(cells: list[Cell]) -> list[str]:
    """The classifiers and learned methods of ``cells`` that have no model-cache entry and are not
    shipped with the package (:func:`nicebench.models.has_module`). A learned
    method's entry depends on its classifier's weights: it is looked up by loading the (cached)
    classifier; with a classifier still to train it would train too."""
    out: list[str] = []
    classifiers: dict[tuple[PluginSpec, PluginSpec], bool] = {}  # → whether it would train
    for cell in cells:
        pair = (cell.dataset, cell.model)
        if pair not in classifiers:
            try:
                ds = _dataset(cell.dataset)
                load_model_path(ds, cell.model)  # a ValueError for a model that is not cached
                ident = classifier_identity(ds, cell.model)
                classifiers[pair] = not has_module("classifiers", ident)
            except ValueError:  # read from a weights file or pretrained: never trained
                classifiers[pair] = False
            if classifiers[pair]:
                out.append(f"classifier {cell.model.label} for {cell.dataset.label}")
    learned = dict.fromkeys(
        (c.dataset, c.model, c.method)
        for c in cells
        if c.kind == METHOD and METHODS.get(c.method.name).learns
    )
    for dspec, model, mspec in learned:
        where = f"{mspec.label} on {dspec.label} · {model.label}"
        if classifiers[(dspec, model)]:
            out.append(f"{where} (after its classifier)")
            continue
        ds = _dataset(dspec)
        method = create_method(
            mspec.name, load_model(ds, device="cpu", model=model), **mspec.kwargs
        )
        if method.would_train(ds.train_split()):
            out.append(where)
    return out


def plan_run(cfg: RunConfig) -> RunPlan:
    """The plan of ``nicebench run`` with ``cfg`` (see the module's docstring); raises as
    :func:`nicebench.runner.plan_cells` does on a bad config."""
    cells = plan_cells(cfg)
    out = Path(cfg.out)
    stored = peek_cells(out)
    done = set() if stored is None else set(stored.key[stored.status == "ok"])
    rates = _rates(stored)
    planned = []
    for cell in cells:
        key = cell.key
        rate = rates.get((cell.dataset.label, cell.model.label, cell.method.label, cell.kind))
        seconds = 0.0 if key in done else None if rate is None else rate * (cell.stop - cell.start)
        planned.append(PlannedCell(cell, key, key in done, seconds))
    todo = [p.cell for p in planned if not p.stored]
    return RunPlan(out, planned, _models_to_train(todo))
