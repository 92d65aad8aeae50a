"""nicebench: a benchmark for saliency explanations and semantic image compression."""

from __future__ import annotations

from . import metrics  # noqa: E402  (nb.metrics.deletion, ...)
from .codec import SWEEP, Codec, CodecError, create_codec
from .data import BenchDataset, DatasetMissingError, cache_dir, collate, load_dataset
from .gates.method import GateMaskMethod
from .learned import LearnedMethod
from .method import Method, MethodError, create_method
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

__version__ = "0.1.0"

__all__ = [
    "BenchDataset",
    "Codec",
    "CodecError",
    "DatasetMissingError",
    "GateMaskMethod",
    "LearnedMethod",
    "Method",
    "MethodError",
    "SWEEP",
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
