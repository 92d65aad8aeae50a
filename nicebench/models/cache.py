"""The weight cache of classifiers and learned methods: one key function, one folder layout.

A module trained against an ``identity`` (a JSON-serialisable dict naming everything that changes
its weights) lives at ``cache_dir()/<kind>/<key>.pt`` with its training metadata beside it in
``<key>.json``; ``key = cache_key(kind, identity)``. Weights are read with
``torch.load(weights_only=True)``.

Both files are written atomically (a temporary file in the same folder, fsync, rename) under a
lock file per entry (``<key>.lock``), so processes that need the same module at once train it
once: the others wait for the lock and load what the first wrote (a writer killed before its
rename leaves a temporary file, which the next holder of the lock removes). The JSON records the
SHA-256 of the weight file; a weight file that does not match it, or that does not load, is
reported (:class:`CorruptCacheWarning`), moved aside to ``<key>.pt.corrupt`` and retrained.

An entry the cache lacks comes from the package when it ships one for the same kind and identity
(:mod:`nicebench.models.shipped`): checked against the manifest's SHA-256, copied into the cache
with its metadata and said once on stderr. :func:`cached_module` is the one place that decides
where a module comes from (cache, package or training); :func:`has_module` asks it without
training.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import cache_dir
from ..faults import checkpoint
from .shipped import ShippedModel, ShippedWeightsError, find_shipped, read_shipped

__all__ = [
    "stable_hash",
    "model_fingerprint",
    "cache_key",
    "cache_path",
    "cached_module",
    "has_module",
    "model_metadata",
    "CorruptCacheWarning",
]


class CorruptCacheWarning(UserWarning):
    """A cached weight file was corrupt or truncated; it was moved aside and retrained."""


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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one: a
    temporary file in the same folder, flushed and fsynced, renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        checkpoint("cache")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the cache entry ``path`` (``<key>.lock`` beside it) across processes;
    a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _load_entry(path: Path, module: nn.Module, then: str = "retraining") -> bool:
    """Load the entry at ``path`` into ``module``; False (after a warning, the weight file moved
    aside, ``then`` saying what follows) when it is corrupt. An entry written before hashes were
    recorded is checked by loading it, and gets its hash added."""
    data = path.read_bytes()
    meta_path = path.with_suffix(".json")
    meta = _read_json(meta_path)
    digest = _sha256(data)
    problem = ""
    if meta.get("sha256") and meta["sha256"] != digest:
        problem = (
            f"SHA-256 {digest[:12]}… does not match {meta['sha256'][:12]}… in {meta_path.name}"
        )
    else:
        try:
            module.load_state_dict(
                torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            )
        except Exception as exc:  # truncated, not a state dict, wrong shapes
            problem = f"it does not load ({type(exc).__name__}: {str(exc)[:200]})"
    if problem:
        os.replace(path, path.with_name(path.name + ".corrupt"))
        warnings.warn(
            f"corrupt cache entry {path}: {problem}; moved aside to {path.name}.corrupt and {then}",
            CorruptCacheWarning,
            stacklevel=3,
        )
        return False
    if meta and not meta.get("sha256"):
        atomic_write(
            meta_path, json.dumps({**meta, "sha256": digest}, indent=2, default=str).encode()
        )
    return True


def _install_shipped(entry: ShippedModel, path: Path, module: nn.Module) -> None:
    """Load the shipped ``entry`` into ``module`` and copy it, with its metadata, to the cache
    entry ``path`` (metadata first, as a training writes them)."""
    data = read_shipped(entry)
    try:
        module.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as exc:  # not a state dict of this module: the package is inconsistent
        raise ShippedWeightsError(
            f"shipped weights {entry.label} ({entry.title}) do not load "
            f"({type(exc).__name__}: {str(exc)[:200]}); set NICEBENCH_SHIPPED_WEIGHTS=0 to "
            "train the model instead"
        ) from exc
    meta = _read_json(entry.path.with_suffix(".json")) or {"identity": entry.identity}
    meta = {
        "cpu_capability": entry.cpu_capability,
        **meta,
        "sha256": entry.sha256,
        "source": f"package {entry.label}",
    }
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())
    atomic_write(path, data)
    # tqdm.write: on a line of its own above any progress bar
    tqdm.write(f"weights: {entry.title} from the package ({entry.label})", file=sys.stderr)


def _train_entry(
    path: Path,
    identity: dict[str, Any],
    module: nn.Module,
    train: Callable[[nn.Module], dict[str, Any] | None],
) -> None:
    """Train ``module`` and write it, with its metadata, to the cache entry ``path``."""
    t0 = time.perf_counter()
    meta = train(module) or {}
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    data = buf.getvalue()
    meta = {
        "identity": identity,
        "train_seconds": time.perf_counter() - t0,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),  # float summation order, so the exact weights
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels, likewise
        **meta,
        "sha256": _sha256(data),
    }
    # the metadata first: weights in place mark a complete entry (a writer killed
    # between the two leaves metadata without weights, which is retrained)
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())
    atomic_write(path, data)


def has_module(kind: str, identity: dict[str, Any]) -> bool:
    """Whether :func:`cached_module` finds the module without training it: in the cache, or
    shipped with the package."""
    return (
        cache_path(kind, identity).exists()
        or find_shipped(kind, cache_key(kind, identity), identity) is not None
    )


def cached_module(
    kind: str,
    identity: dict[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict[str, Any] | None],
) -> nn.Module:
    """Build a module and load its cached weights, else the package's shipped ones (copied into
    the cache), else train it once and cache them.

    ``identity`` must name everything that changes the trained weights; ``train`` may return
    metadata (accuracy, seconds) stored beside the weights as JSON, with the weights' SHA-256.
    Concurrent callers for one entry train once (a lock per entry); a corrupt entry is retrained
    (or copied from the package again). A shipped file that does not match its SHA-256 raises
    :class:`~nicebench.models.shipped.ShippedWeightsError`.
    """
    path = cache_path(kind, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = build()
    with entry_lock(path):
        for name in (path.name, path.with_suffix(".json").name):  # left by a killed writer
            for stale in path.parent.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
        existed = path.exists()
        shipped = find_shipped(kind, path.stem, identity)
        then = "copying the package's weights" if shipped else "retraining"
        if not (existed and _load_entry(path, module, then)):
            if existed:
                module = build()  # the failed load may have filled part of the module
            if shipped is not None:
                _install_shipped(shipped, path, module)
            else:
                _train_entry(path, identity, module, train)
    module.eval()
    return module


def model_metadata(kind: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The JSON written beside a cached module (empty if none)."""
    path = cache_path(kind, identity, ".json")
    return json.loads(path.read_text()) if path.exists() else {}
