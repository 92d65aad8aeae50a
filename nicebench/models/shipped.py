"""Reference weights shipped inside the package (``nicebench/weights``).

The default leaderboard's trained modules (both classifiers, nice and rtsal on each dataset, their
re-fits on the randomised classifiers of the sanity metrics) ship as package data, laid out as the
cache is: ``weights/<kind>/<key>.pt`` with its training metadata in ``<key>.json``.
``weights/MANIFEST.json`` lists each file with its name, recipe, identity, SHA-256, size, and the
torch version, thread count and CPU capability it was trained with.

:func:`nicebench.models.cached_module` looks here when the cache has no entry for an identity
(:func:`find_shipped`); a shipped file whose hash is not the manifest's is an error naming it
(:func:`read_shipped`). ``NICEBENCH_SHIPPED_WEIGHTS=0`` turns the lookup off, a folder path
points it at another weights folder; :func:`shipped_weights_off` turns it off in-process for all
or some keys (``nicebench train`` retrains that way).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGE_WEIGHTS",
    "ShippedModel",
    "ShippedWeightsError",
    "weights_dir",
    "shipped_models",
    "find_shipped",
    "read_shipped",
    "check_shipped",
    "shipped_weights_off",
]

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
ENV = "NICEBENCH_SHIPPED_WEIGHTS"
_OFF = {"0", "off", "false", "no"}
# keys the lookup skips in this context; None: all of them
_SKIPPED: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "nicebench_shipped_skipped", default=frozenset()
)


class ShippedWeightsError(ValueError):
    """A shipped weight file is missing, does not match its SHA-256 or does not load."""


@dataclass(frozen=True)
class ShippedModel:
    """One entry of ``MANIFEST.json``: a trained module shipped with the package."""

    name: str  # short, for the command line: "nice-scenes-64"
    title: str  # for people: "nice on scenes-64"
    kind: str  # the cache folder: classifiers, nice, rtsal
    key: str  # cache_key(kind, identity)
    identity: dict[str, Any]
    recipe: dict[str, Any]  # dataset, model, method and refit specs that train it
    sha256: str
    bytes: int
    torch: str
    threads: int
    cpu_capability: str
    root: Path

    @property
    def path(self) -> Path:
        return self.root / self.kind / f"{self.key}.pt"

    @property
    def label(self) -> str:
        """The file as the messages name it: ``nicebench/weights/<kind>/<key>.pt`` for the
        package's own, else its path."""
        if self.root == PACKAGE_WEIGHTS:
            return f"nicebench/weights/{self.kind}/{self.key}.pt"
        return str(self.path)


def weights_dir() -> Path | None:
    """The folder the lookup reads: the package's, another one named by
    ``$NICEBENCH_SHIPPED_WEIGHTS``, or None when that is ``0``."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in _OFF:
        return None
    return Path(env) if env and env != "1" else PACKAGE_WEIGHTS


@lru_cache(maxsize=4)
def _manifest(root: Path, mtime: float) -> tuple[ShippedModel, ...]:
    data = json.loads((root / "MANIFEST.json").read_text())
    fields = ShippedModel.__dataclass_fields__
    return tuple(
        ShippedModel(**{k: v for k, v in entry.items() if k in fields}, root=root)
        for entry in data["models"]
    )


def shipped_models(root: Path | None = None) -> list[ShippedModel]:
    """The manifest's entries of ``root`` (default: the folder the cache reads, the package's
    when the lookup is off), [] without one."""
    root = Path(root) if root is not None else weights_dir() or PACKAGE_WEIGHTS
    manifest = root / "MANIFEST.json"
    if not manifest.is_file():
        return []
    return list(_manifest(root, manifest.stat().st_mtime))


def _canonical(identity: dict[str, Any]) -> Any:
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def find_shipped(kind: str, key: str, identity: dict[str, Any]) -> ShippedModel | None:
    """The shipped module of ``kind`` with cache key ``key`` and this ``identity``, or None (none
    shipped, the lookup turned off, or ``key`` skipped by :func:`shipped_weights_off`)."""
    root = weights_dir()
    skipped = _SKIPPED.get()
    if root is None or skipped is None or key in skipped:
        return None
    for entry in shipped_models(root):
        if entry.kind == kind and entry.key == key:
            return entry if _canonical(entry.identity) == _canonical(identity) else None
    return None


def read_shipped(entry: ShippedModel) -> bytes:
    """The bytes of ``entry``'s weight file, checked against the manifest's SHA-256."""
    fix = (
        "reinstall nicebench to restore the file, or set NICEBENCH_SHIPPED_WEIGHTS=0 to "
        "train the model instead"
    )
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        raise ShippedWeightsError(
            f"shipped weights {entry.label} ({entry.title}) can't be read "
            f"({type(exc).__name__}); {fix}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ShippedWeightsError(
            f"shipped weights {entry.label} ({entry.title}) do not match their SHA-256 in "
            f"MANIFEST.json (file {digest[:12]}…, manifest {entry.sha256[:12]}…): the file was "
            f"altered or damaged; {fix}"
        )
    return data


def check_shipped(root: Path | None = None) -> list[tuple[ShippedModel, str]]:
    """Every shipped file of ``root`` (default: as :func:`shipped_models`) with "" when its
    SHA-256 matches the manifest's, else what is wrong."""
    out = []
    for entry in shipped_models(root):
        try:
            read_shipped(entry)
            out.append((entry, ""))
        except ShippedWeightsError as exc:
            out.append((entry, str(exc)))
    return out


@contextlib.contextmanager
def shipped_weights_off(keys: Iterable[str] | None = None) -> Iterator[None]:
    """Within the block the cache does not take the shipped weights of ``keys`` (all keys when
    None): those modules train as if none were shipped."""
    current = _SKIPPED.get()
    token = _SKIPPED.set(None if keys is None or current is None else current | frozenset(keys))
    try:
        yield
    finally:
        _SKIPPED.reset(token)
