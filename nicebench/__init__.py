"""nicebench: a benchmark for saliency explanations and semantic image compression.

The public API is imported on first use (PEP 562), so that ``import nicebench`` is cheap and the
torch-free parts (the run store, the report, :mod:`nicebench.metric_spec`) never load torch:
``nicebench.Method``, ``nicebench.metrics.deletion`` and the rest work as plain attributes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "BenchDataset": "data",
    "DatasetMissingError": "data",
    "cache_dir": "data",
    "collate": "data",
    "load_dataset": "data",
    "Codec": "codec",
    "CodecError": "codec",
    "SWEEP": "codec",
    "create_codec": "codec",
    "GateMaskMethod": "gates.method",
    "LearnedMethod": "learned",
    "Method": "method",
    "MethodError": "method",
    "create_method": "method",
    "load_model": "models",
    "MetricSpec": "metric_spec",
    "Setting": "metric_spec",
    "ContractError": "contract.rules",
    "list_codecs": "registry",
    "list_datasets": "registry",
    "list_methods": "registry",
    "list_metrics": "registry",
    "list_models": "registry",
    "register_arch": "registry",
    "register_codec": "registry",
    "register_dataset": "registry",
    "register_method": "registry",
    "register_metric": "registry",
}
_SUBMODULES = {"metrics", "compression", "models", "report", "testing", "registry", "codec"}

__all__ = [
    "BenchDataset",
    "Codec",
    "CodecError",
    "ContractError",
    "DatasetMissingError",
    "GateMaskMethod",
    "LearnedMethod",
    "Method",
    "MethodError",
    "MetricSpec",
    "SWEEP",
    "Setting",
    "cache_dir",
    "collate",
    "create_codec",
    "create_method",
    "list_codecs",
    "list_datasets",
    "list_methods",
    "list_metrics",
    "list_models",
    "load_dataset",
    "load_model",
    "metrics",
    "register_arch",
    "register_codec",
    "register_dataset",
    "register_method",
    "register_metric",
]

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and IDEs
    from . import metrics
    from .codec import SWEEP, Codec, CodecError, create_codec
    from .contract.rules import ContractError
    from .data import BenchDataset, DatasetMissingError, cache_dir, collate, load_dataset
    from .gates.method import GateMaskMethod
    from .learned import LearnedMethod
    from .method import Method, MethodError, create_method
    from .metric_spec import MetricSpec, Setting
    from .models import load_model
    from .registry import (
        list_codecs,
        list_datasets,
        list_methods,
        list_metrics,
        list_models,
        register_arch,
        register_codec,
        register_dataset,
        register_method,
        register_metric,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'nicebench' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
