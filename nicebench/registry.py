"""Plugin registries in the style of timm: decorators, wildcard listing, entry points.

Built-in plugins live in the ``methods/`` and ``datasets/`` folders of the repository, installed as
``nicebench.methods`` / ``nicebench.datasets``, and the built-in codecs in ``nicebench.codec``;
third-party packages register through the entry-point groups ``nicebench.methods``,
``nicebench.datasets`` and ``nicebench.codecs``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from importlib import metadata
from typing import Any

__all__ = [
    "Registry",
    "METHODS",
    "DATASETS",
    "METRICS",
    "CODECS",
    "register_method",
    "register_dataset",
    "register_metric",
    "register_codec",
    "list_methods",
    "list_datasets",
    "list_metrics",
    "list_codecs",
    "get_method_class",
    "get_dataset_class",
    "get_metric",
    "get_codec_class",
    "UnknownPluginError",
]


class UnknownPluginError(KeyError):
    """An unknown plugin name; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class Registry:
    """A name → object map filled by decorators; discovers built-ins and entry points lazily."""

    def __init__(self, kind: str, builtin_package: str | None, entry_point_group: str | None):
        self.kind = kind
        self.builtin_package = builtin_package
        self.entry_point_group = entry_point_group
        self._items: dict[str, Any] = {}
        self._discovered = False
        self.load_errors: dict[str, str] = {}

    def register(self, name: str, obj: Any = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``."""

        def add(target: Any) -> Any:
            if name in self._items and self._items[name] is not target and not overwrite:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {self._items[name]!r}; "
                    "pick another name or pass overwrite=True"
                )
            self._items[name] = target
            if isinstance(target, type) or hasattr(target, "__dict__"):
                try:
                    target.registered_name = name
                except (AttributeError, TypeError):
                    pass
            return target

        return add(obj) if obj is not None else add

    def discover(self) -> None:
        """Import the built-in plugin modules (a package's modules, or one module) and load entry
        points (once)."""
        if self._discovered:
            return
        self._discovered = True
        if self.builtin_package:
            package = importlib.import_module(self.builtin_package)
            for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
                if info.name.startswith("_"):
                    continue
                importlib.import_module(f"{self.builtin_package}.{info.name}")
        if self.entry_point_group:
            for ep in metadata.entry_points(group=self.entry_point_group):
                try:
                    loaded = ep.load()
                except Exception as exc:  # a broken third-party plugin must not break the suite
                    self.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                    continue
                if ep.name not in self._items:
                    self.register(ep.name, loaded)

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a shell wildcard such as ``"nice*"``."""
        self.discover()
        names = sorted(self._items)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def get(self, name: str) -> Any:
        self.discover()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownPluginError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: "
                f"{', '.join(sorted(self._items))}. See `nicebench list {self.kind}s`."
            ) from None

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._items


METHODS = Registry("method", "nicebench.methods", "nicebench.methods")
DATASETS = Registry("dataset", "nicebench.datasets", "nicebench.datasets")
METRICS = Registry("metric", None, None)
CODECS = Registry("codec", "nicebench.codec", "nicebench.codecs")


def register_method(name: str, *, overwrite: bool = False) -> Callable[[type], type]:
    """Class decorator: ``@register_method("gradcam")`` on a :class:`nicebench.Method` subclass."""
    return METHODS.register(name, overwrite=overwrite)


def register_dataset(name: str, *, overwrite: bool = False) -> Callable[[type], type]:
    """Class decorator: ``@register_dataset("scenes")`` on a :class:`nicebench.BenchDataset`."""
    return DATASETS.register(name, overwrite=overwrite)


def register_metric(name: str, *, overwrite: bool = False) -> Callable[[Any], Any]:
    """Register a metric (a per-image metric function or a metric track)."""
    return METRICS.register(name, overwrite=overwrite)


def register_codec(name: str, *, overwrite: bool = False) -> Callable[[type], type]:
    """Class decorator: ``@register_codec("jpeg")`` on a :class:`nicebench.Codec` subclass."""
    return CODECS.register(name, overwrite=overwrite)


def list_methods(pattern: str | None = None) -> list[str]:
    """Registered method names, e.g. ``list_methods("nice*")``."""
    return METHODS.names(pattern)


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names."""
    return DATASETS.names(pattern)


def list_metrics(pattern: str | None = None) -> list[str]:
    """Registered metric names."""
    import nicebench.metrics  # noqa: F401  (registers the built-in metrics)

    return METRICS.names(pattern)


def list_codecs(pattern: str | None = None) -> list[str]:
    """Registered codec names."""
    return CODECS.names(pattern)


def get_method_class(name: str) -> type:
    return METHODS.get(name)


def get_dataset_class(name: str) -> type:
    return DATASETS.get(name)


def get_codec_class(name: str) -> type:
    return CODECS.get(name)


def get_metric(name: str) -> Any:
    import nicebench.metrics  # noqa: F401

    return METRICS.get(name)
