"""``nicebench train``: retrain the shipped reference weights from their recipes and compare.

Each shipped module (:mod:`nicebench.models.shipped`) has a recipe: the dataset, classifier and
method specs of the default leaderboard, and for a re-fit the sanity metrics' randomisation (top
layers, seed) and re-fit budget. :func:`retrain` loads it twice through the code a run uses
(:func:`~nicebench.models.load_model` trains a classifier on a cache miss, ``Method.fit`` a learned
method, :func:`~nicebench.metrics.sanity.refit_method` a re-fit), each time in a cache of its own:

1. the reference: every module from the package (this also checks that the recipe still asks
   for the shipped identity: stale weights are an error);
2. the retraining: the package's weights of this one module turned off, so it trains from its
   recipe with the manifest's thread count; the modules it depends on (its classifier) still come
   from the package, so each model is retrained on exactly its own inputs.

The result is bitwise equal to the shipped file when the torch version, thread count and CPU
capability are the manifest's; otherwise :class:`Retrained` says how close it is: the test
accuracy of both classifiers and their share of equal predictions, or the mean Spearman of both
methods' maps (and the IoU of their gate masks).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import torch

from .config import parse_specs
from .data import BenchDataset, cache_dir, collate, load_run_dataset
from .method import create_method
from .metrics.sanity import cached_randomised_model, refit_method, spearman
from .models import load_model, materialise, predict
from .models.shipped import ShippedModel, shipped_models, shipped_weights_off, weights_dir

__all__ = ["Retrained", "select_shipped", "load_recipe", "retrain", "agreement", "machine"]


def machine() -> dict[str, Any]:
    """This process's torch version, thread count and CPU capability (what fixes the bits)."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


@dataclass
class Retrained:
    """One shipped module retrained: its file's hash and, when it differs, how close it is."""

    entry: ShippedModel
    seconds: float
    sha256: str
    same_tensors: bool
    trained_with: dict[str, Any]
    agreement: dict[str, float] = field(default_factory=dict)

    @property
    def bitwise(self) -> bool:
        return self.sha256 == self.entry.sha256

    def lines(self) -> list[str]:
        e = self.entry
        head = f"{e.name} ({e.title}): retrained in {self.seconds:.1f} s: "
        if self.bitwise:
            return [head + f"bitwise equal to the shipped file (SHA-256 {e.sha256[:12]}…)"]
        mine = self.trained_with
        out = [
            head
            + (
                "the same tensors, "
                if self.same_tensors
                else "NOT bitwise equal to the shipped file "
            )
            + f"(SHA-256 {self.sha256[:12]}…, shipped {e.sha256[:12]}…); trained with torch "
            f"{mine['torch']}, {mine['threads']} threads, CPU {mine['cpu_capability']}; the "
            f"shipped file with torch {e.torch}, {e.threads} threads, CPU {e.cpu_capability}"
        ]
        a = self.agreement
        if e.kind == "classifiers":
            out.append(
                f"  test accuracy on {a['n_images']:.0f} test images: shipped "
                f"{a['accuracy_shipped']:.3f}, retrained {a['accuracy_retrained']:.3f}; equal "
                f"predictions {a['same_predictions']:.1%}"
            )
        else:
            iou = f"; gate-mask IoU {a['mask_iou']:.3f}" if "mask_iou" in a else ""
            out.append(
                f"  map agreement on {a['n_images']:.0f} test images: mean Spearman "
                f"{a['spearman']:.3f}{iou}"
            )
        return out


def select_shipped(names: Sequence[str], everything: bool = False) -> list[ShippedModel]:
    """The shipped modules named (by name or a prefix of their key), or all of them."""
    models = shipped_models()
    if everything:
        return models
    out = []
    for name in names:
        hits = [m for m in models if name in (m.name, m.title) or m.key.startswith(name)]
        if not hits:
            close = get_close_matches(name, [m.name for m in models], n=3)
            raise ValueError(
                f"no shipped model {name!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + "; `nicebench train --list` lists them"
            )
        out += [m for m in hits if m not in out]
    return out


@contextlib.contextmanager
def _cache_at(path: Path) -> Iterator[None]:
    old = os.environ.get("NICEBENCH_CACHE")
    os.environ["NICEBENCH_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NICEBENCH_CACHE", None)
        else:
            os.environ["NICEBENCH_CACHE"] = old


def load_recipe(entry: ShippedModel) -> tuple[BenchDataset, Any]:
    """The test split of ``entry``'s dataset and the module its recipe gives (a classifier, or
    a fitted method), through the code a run uses and the current cache."""
    recipe = entry.recipe
    dspec = parse_specs(recipe["dataset"])[0]
    ds = load_run_dataset(dspec.name, **dspec.kwargs)
    model = load_model(ds, device="cpu", model=recipe.get("model"))
    if "method" not in recipe:
        return ds, model
    mspec = parse_specs(recipe["method"])[0]
    method = create_method(mspec.name, model, **mspec.kwargs)
    method.fit(ds.train_split())
    refit = recipe.get("refit")
    if refit:
        rand = cached_randomised_model(model, top_k=refit["top_k"], seed=refit["seed"])
        method = refit_method(method, rand, epochs=refit["epochs"], n_train=refit["n_train"])
    return ds, method


def _entry_path(entry: ShippedModel) -> Path:
    """Where the current cache keeps ``entry``'s module."""
    return cache_dir() / entry.kind / f"{entry.key}.pt"


def _tensors(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _same_tensors(a: bytes, b: bytes) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(
        ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta
    )


def agreement(
    entry: ShippedModel, ds: BenchDataset, shipped: Any, mine: Any, n_test: int, n_maps: int
) -> dict[str, float]:
    """How close ``mine`` is to ``shipped`` (two modules of ``entry``'s kind) on the test split
    ``ds``: classifiers' accuracy on its first ``n_test`` images and their share of equal
    predictions; methods' mean Spearman of their maps of the first ``n_maps`` images (and the
    mean IoU of their gate masks, for a method that has them)."""
    if entry.kind == "classifiers":
        subset = torch.utils.data.Subset(ds, range(min(n_test, len(ds))))
        subset.registered_name = ds.registered_name
        x, y = materialise(subset)
        pa, pb = predict(shipped, x), predict(mine, x)
        return {
            "n_images": len(y),
            "accuracy_shipped": (pa == y).float().mean().item(),
            "accuracy_retrained": (pb == y).float().mean().item(),
            "same_predictions": (pa == pb).float().mean().item(),
        }
    images, labels = collate([ds[i] for i in range(min(n_maps, len(ds)))])[:2]
    maps_a, maps_b = shipped.explain(images, labels), mine.explain(images, labels)
    out = {"n_images": len(labels), "spearman": spearman(maps_a, maps_b).nanmean().item()}
    if shipped.gate_mask:
        a, b = shipped.binary_mask(images, labels), mine.binary_mask(images, labels)
        inter = (a & b).flatten(1).sum(1).float()
        union = (a | b).flatten(1).sum(1).float().clamp_min(1)
        out["mask_iou"] = (inter / union).mean().item()
    return out


def retrain(
    entry: ShippedModel, keep: Path | None = None, n_test: int = 1000, n_maps: int = 64
) -> Retrained:
    """Retrain ``entry`` from its recipe and compare it with the shipped file (see the module's
    text); ``keep``: a cache folder that keeps the retrained module (default: a temporary one).
    ``n_test`` test images for a classifier's accuracy, ``n_maps`` for a method's maps."""
    if weights_dir() is None:
        raise ValueError(
            "nicebench train compares with the shipped weights, which "
            "NICEBENCH_SHIPPED_WEIGHTS=0 turns off: unset it"
        )
    scratch = Path(tempfile.mkdtemp(prefix="nicebench-train-"))
    try:
        with _cache_at(scratch / "shipped"):
            ds, shipped = load_recipe(entry)
            if not _entry_path(entry).exists():
                raise ValueError(
                    f"{entry.name}: its recipe {entry.recipe} no longer asks for the shipped "
                    f"identity (key {entry.key}): the code that trains it changed, so the "
                    "shipped file is stale"
                )
        cache = keep if keep is not None else scratch / "retrained"
        threads = torch.get_num_threads()
        torch.set_num_threads(entry.threads)
        try:
            with _cache_at(cache), shipped_weights_off([entry.key]):
                path = _entry_path(entry)
                for old in (path, path.with_suffix(".json")):  # a kept earlier retraining
                    old.unlink(missing_ok=True)
                trained_with = machine()
                t0 = time.perf_counter()
                _, mine = load_recipe(entry)
                seconds = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
        data = path.read_bytes()
        result = Retrained(
            entry,
            seconds,
            hashlib.sha256(data).hexdigest(),
            _same_tensors(data, entry.path.read_bytes()),
            trained_with,
        )
        if not result.bitwise:
            result.agreement = agreement(entry, ds, shipped, mine, n_test, n_maps)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
