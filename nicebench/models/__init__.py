"""Classifiers: the architecture registry, model specs, deterministic training and a weight cache.

:func:`load_model` returns a frozen :class:`Classifier` in eval mode that takes images in [0, 1]
and normalises them itself; which classifier is a model spec (``default``, a registered
architecture such as ``scenecnn:seed=1``, or ``torchvision:NAME:weights=FILE``; see
:mod:`nicebench.models.loading`). Trained weights live under :func:`nicebench.cache_dir`, keyed by
:func:`nicebench.models.cache.cache_key`, and are read with ``torch.load(weights_only=True)``;
:func:`cached_module` is the same cache for learned methods.

Modules: ``architectures`` (registry, built-ins, :class:`Classifier`), ``training``, ``cache``,
``external`` (weight files, torchvision), ``loading`` (specs, :func:`load_model`), ``shipped``
(the reference weights shipped in the package, which the cache takes before training).
"""

from __future__ import annotations

import torch

from ..registry import list_models, register_arch
from .architectures import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    build_arch,
    get_arch,
    is_pretrained,
    last_conv_layer,
)
from .cache import (
    cache_key,
    cache_path,
    cached_module,
    has_module,
    model_fingerprint,
    model_metadata,
    stable_hash,
)
from .external import load_state_dict_file, torchvision_classifier
from .inference import forward_model
from .loading import (
    DEFAULT_MODEL,
    MODEL_CODE_VERSION,
    check_model_spec,
    classifier_identity,
    load_model,
    load_model_path,
    parse_model_spec,
)
from .training import jpeg_roundtrip, materialise, predict, train_classifier

__all__ = [
    "Classifier",
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_CODE_VERSION",
    "build_arch",
    "cache_key",
    "cache_path",
    "cached_module",
    "check_model_spec",
    "classifier_identity",
    "forward_model",
    "get_arch",
    "has_module",
    "is_pretrained",
    "jpeg_roundtrip",
    "last_conv_layer",
    "list_models",
    "load_model",
    "load_model_path",
    "load_state_dict_file",
    "materialise",
    "model_fingerprint",
    "model_metadata",
    "native_cpu_bf16",
    "BF16_PRECISIONS",
    "uses_bf16",
    "parse_model_spec",
    "predict",
    "register_arch",
    "stable_hash",
    "torchvision_classifier",
    "train_classifier",
]


def native_cpu_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX), so bf16 autocast
    speeds up oneDNN convolutions instead of emulating them."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - private helpers of this torch version
        return False


BF16_PRECISIONS = ("auto", "fp32", "bf16")


def uses_bf16(precision: str, device: torch.device | str) -> bool:
    """Whether a classifier runs under bf16 autocast on ``device`` for ``precision`` (one of
    :data:`BF16_PRECISIONS`): ``"bf16"`` always, ``"fp32"`` never, ``"auto"`` on CUDA and on CPUs
    with native bf16 arithmetic (:func:`native_cpu_bf16`)."""
    if precision != "auto":
        return precision == "bf16"
    return torch.device(device).type == "cuda" or native_cpu_bf16()
