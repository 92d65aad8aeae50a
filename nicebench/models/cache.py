"""The weight cache of classifiers and learned methods: one key function, one folder layout.

A module trained against an ``identity`` (a JSON-serialisable dict naming everything that changes
its weights) lives at ``cache_dir()/<kind>/<key>.pt`` with its training metadata beside it in
``<key>.json``; ``key = cache_key(kind, identity)``. Weights are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import cache_dir

__all__ = [
    "stable_hash",
    "model_fingerprint",
    "cache_key",
    "cache_path",
    "cached_module",
    "model_metadata",
]


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def model_fingerprint(model: nn.Module) -> str:
    """A stable hash of a model's state (names, shapes, dtypes and bytes of every tensor): the
    classifier's part of the cache key of anything trained against it."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(kind: str, identity: dict[str, Any]) -> str:
    """The cache key of a module of ``kind`` trained as ``identity`` (the only place it is made)."""
    return stable_hash({"kind": kind, **identity})


def cache_path(kind: str, identity: dict[str, Any], suffix: str = ".pt") -> Path:
    """``cache_dir()/<kind>/<cache_key>`` + ``suffix`` (``.pt`` weights, ``.json`` metadata)."""
    return cache_dir() / kind / f"{cache_key(kind, identity)}{suffix}"


def cached_module(
    kind: str,
    identity: dict[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict[str, Any] | None],
) -> nn.Module:
    """Build a module and load its cached weights, or train it once and cache them.

    ``identity`` must name everything that changes the trained weights; ``train`` may return
    metadata (accuracy, seconds) stored beside the weights as JSON.
    """
    path = cache_path(kind, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = build()
    if path.exists():
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        t0 = time.perf_counter()
        meta = train(module) or {}
        meta = {
            "identity": identity,
            "train_seconds": time.perf_counter() - t0,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),  # float summation order, so the exact weights
            **meta,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(module.state_dict(), tmp)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    module.eval()
    return module


def model_metadata(kind: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The JSON written beside a cached module (empty if none)."""
    path = cache_path(kind, identity, ".json")
    return json.loads(path.read_text()) if path.exists() else {}
