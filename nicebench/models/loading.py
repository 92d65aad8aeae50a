"""Model specs and :func:`load_model`: which classifier a run explains.

A model spec is a plugin spec (``NAME:key=value,...``) naming one of:

- ``default``: the dataset's own classifier (its ``model_arch`` trained with its
  ``model_recipe``; the same cache files as before models were an axis of a run);
- ``ARCH`` (a registered architecture, see :func:`nicebench.registry.list_models`): trained on the
  dataset on first use and cached. Parameters: ``seed`` (initial weights and batch order, default
  0), ``weights=FILE`` (load this state dict instead of training) and recipe overrides
  (``epochs``, ``lr``, ``batch_size``, ``weight_decay``, ``jpeg_p``, ``flip``). ``default`` takes
  the same parameters;
- ``torchvision:NAME`` with ``weights=FILE``: torchvision's architecture ``NAME`` with a local
  state dict, ImageNet normalisation inside; optional ``num_classes``, ``cam_layer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PluginSpec, parse_specs
from ..data import BenchDataset, load_dataset
from .architectures import Classifier, build_arch, get_arch, is_pretrained
from .cache import cache_path, cached_module
from .external import load_weights, torchvision_classifier
from .training import materialise, predict, train_classifier

__all__ = [
    "MODEL_CODE_VERSION",
    "DEFAULT_MODEL",
    "RECIPE_KEYS",
    "parse_model_spec",
    "check_model_spec",
    "classifier_identity",
    "load_model",
    "load_model_path",
]

MODEL_CODE_VERSION = 3  # 3: initial weights seeded (they drew from the global RNG before)
DEFAULT_MODEL = PluginSpec("default")
TORCHVISION = "torchvision:"
RECIPE_KEYS = ("epochs", "lr", "batch_size", "weight_decay", "jpeg_p", "flip")
_TORCHVISION_KEYS = ("weights", "num_classes", "cam_layer")


def parse_model_spec(model: str | PluginSpec | None) -> PluginSpec:
    """``None``/``"default"`` → the default spec; ``"scenecnn:seed=1"`` → ``PluginSpec``."""
    if model is None:
        return DEFAULT_MODEL
    if isinstance(model, PluginSpec):
        return model
    specs = parse_specs(str(model))
    if len(specs) != 1:
        raise ValueError(f"a model spec names one model, got {model!r}")
    return specs[0]


def check_model_spec(model: str | PluginSpec | None) -> PluginSpec:
    """Parse ``model`` and check its name (raises with close matches), loading nothing."""
    spec = parse_model_spec(model)
    if spec.name.startswith(TORCHVISION):
        import torchvision

        name = spec.name[len(TORCHVISION) :]
        if name not in torchvision.models.list_models():
            raise ValueError(f"model {spec}: torchvision has no model {name!r}")
    elif spec.name != DEFAULT_MODEL.name:
        get_arch(spec.name)
    return spec


def _arch_params(spec: PluginSpec, ds: BenchDataset) -> tuple[str, int, str | None, dict]:
    params = spec.kwargs
    arch = ds.model_arch if spec.name == "default" else spec.name
    seed, weights = int(params.pop("seed", 0)), params.pop("weights", None)
    unknown = sorted(set(params) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(
            f"model {spec}: unknown parameter(s) {unknown}; known: seed, weights, "
            f"{', '.join(RECIPE_KEYS)}"
        )
    return arch, seed, weights, params


def classifier_identity(ds: BenchDataset, model: str | PluginSpec | None = None) -> dict[str, Any]:
    """The cache identity of the classifier trained for ``ds`` as ``model``. For the dataset's
    own architecture with seed 0 and its recipe it is exactly the identity used before models
    were an axis (``{**ds.model_identity(), "code": MODEL_CODE_VERSION}``), so the cached
    weights are found again; other choices add ``arch``, ``recipe`` overrides and ``seed``."""
    arch, seed, _, overrides = _arch_params(parse_model_spec(model), ds)
    ident = {**ds.model_identity(), "code": MODEL_CODE_VERSION}
    ident["arch"] = arch
    if overrides:
        ident["recipe"] = {**ident["recipe"], **overrides}
    if seed:
        ident["seed"] = seed
    return ident


def _freeze(model: Classifier, device: str | torch.device | None) -> Classifier:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(device or "cpu")
    return model.use_channels_last(torch.device(device or "cpu").type == "cpu")


def load_model(
    dataset: str | BenchDataset,
    device: str | torch.device | None = None,
    model: str | PluginSpec | None = None,
    **dataset_params: Any,
) -> Classifier:
    """The frozen classifier ``model`` (a spec, default: the dataset's own) for ``dataset``, in
    eval mode; a trained architecture is trained on first use and then read from the cache."""
    ds = load_dataset(dataset, **dataset_params) if isinstance(dataset, str) else dataset
    spec = parse_model_spec(model)
    if spec.name.startswith(TORCHVISION):
        params = spec.kwargs
        unknown = sorted(set(params) - set(_TORCHVISION_KEYS))
        if unknown:
            raise ValueError(
                f"model {spec}: unknown parameter(s) {unknown}; known: "
                f"{', '.join(_TORCHVISION_KEYS)}"
            )
        name = spec.name[len(TORCHVISION) :]
        return _freeze(torchvision_classifier(name, **params), device)
    arch, seed, weights, _ = _arch_params(spec, ds)
    if weights is not None:
        if is_pretrained(arch):
            raise ValueError(
                f"model {spec}: {arch!r} is pretrained; load a state dict with "
                f"torchvision:{arch}:weights={weights}"
            )
        net = build_arch(arch, ds, seed=seed)
        load_weights(net, weights)
        return _freeze(net, device)
    if is_pretrained(arch):
        return _freeze(build_arch(arch, ds, seed=seed), device)
    ident = classifier_identity(ds, spec)
    recipe = ident["recipe"]

    def train(net: nn.Module) -> dict[str, Any]:
        train_classifier(net, ds.train_split(), recipe, seed=seed)
        x, y = materialise(ds)
        acc = (predict(net, x) == y).float().mean().item()
        return {"test_accuracy": acc, "n_test": len(y)}

    net = cached_module("classifiers", ident, lambda: build_arch(arch, ds, seed=seed), train)
    return _freeze(net, device)


def load_model_path(dataset: BenchDataset, model: str | PluginSpec | None = None) -> Path:
    """Where :func:`load_model` caches the classifier ``model`` of ``dataset`` (a ``ValueError``
    for models that are read from a file or come pretrained, which are not cached)."""
    spec = parse_model_spec(model)
    if spec.name.startswith(TORCHVISION) or "weights" in spec.kwargs:
        raise ValueError(f"model {spec} is read from its weights file, not cached")
    arch = _arch_params(spec, dataset)[0]
    if is_pretrained(arch):
        raise ValueError(f"model {spec} ({arch}) comes pretrained, not cached")
    return cache_path("classifiers", classifier_identity(dataset, spec))
