"""Plugin registries in the style of timm: decorators, wildcard listing, entry points.

Built-in plugins live in the ``methods/`` and ``datasets/`` folders of the repository, installed as
``nicebench.methods`` / ``nicebench.datasets``; third-party packages register through the
entry-point groups ``nicebench.methods``, ``nicebench.datasets`` and ``nicebench.metrics``. A local
module or ``.py`` file loads with :func:`load_plugins` (``nicebench --plugins``, or the
``NICEBENCH_PLUGINS`` environment variable). A plugin that fails to load never breaks the others:
its error is kept in :attr:`Registry.load_errors` and shown by ``nicebench list``. Codecs: the built-ins
in ``nicebench.codec``, entry-point group ``nicebench.codecs``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from importlib import metadata
from typing import Any

from .metric_spec import MetricSpec
from .plugins import PLUGIN_ERRORS, PLUGINS_ENV, PluginLoadError, load_env_plugins, load_plugins

__all__ = [
    "Registry",
    "METHODS",
    "DATASETS",
    "METRICS",
    "REGISTRIES",
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
    "load_plugins",
    "PLUGINS_ENV",
    "PLUGIN_ERRORS",
    "PluginLoadError",
    "get_codec_class",
    "UnknownPluginError",
    "MODELS",
    "register_arch",
    "list_models",
]

# Checks an object about to be registered from an entry point; returns what to register or raises
# TypeError saying what was expected.
Coerce = Callable[["Registry", str, Any], Any]


class UnknownPluginError(KeyError):
    """An unknown plugin name; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class Registry:
    """A name → object map filled by decorators; discovers built-ins and entry points lazily."""

    def __init__(
        self,
        kind: str,
        builtin_package: str | None,
        entry_point_group: str | None,
        coerce: Coerce | None = None,
    ):
        self.kind = kind
        self.builtin_package = builtin_package
        self.entry_point_group = entry_point_group
        self.coerce = coerce
        self._items: dict[str, Any] = {}
        self._discovered = False
        # plugin (entry point name, or built-in module) → "what failed: ExceptionType: message"
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
            if isinstance(target, type):
                try:
                    target.registered_name = name
                except TypeError:  # a built-in type
                    pass
            return target

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> Any:
        """Remove ``name`` and return what it held (``KeyError`` if it holds nothing): for a
        plugin registered for a while, see :func:`nicebench.testing.registered`."""
        return self._items.pop(name)

    def discover(self) -> None:
        """Import the built-in plugin modules and load entry points (once); record failures."""
        if self._discovered:
            return
        self._discovered = True
        load_env_plugins()
        if self.builtin_package:
            self._import_builtins()
        if self.entry_point_group:
            for ep in metadata.entry_points(group=self.entry_point_group):
                self._load_entry_point(ep)

    def _import_builtins(self) -> None:
        package = importlib.import_module(self.builtin_package)
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
            if info.name.startswith("_"):
                continue
            module = f"{self.builtin_package}.{info.name}"
            try:
                importlib.import_module(module)
            except Exception as exc:  # one broken built-in module must not hide the others
                self.load_errors[module] = f"built-in module {module}: {_describe(exc)}"

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        where = f"entry point {ep.name!r} ({ep.value}) in group {self.entry_point_group!r}"
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break the suite
            self.load_errors[ep.name] = f"{where}: {_describe(exc)}"
            return
        try:
            item = self.coerce(self, ep.name, loaded) if self.coerce else loaded
        except TypeError as exc:
            self.load_errors[ep.name] = f"{where}: {exc}"
            return
        existing = self._items.get(ep.name)
        if existing is None:
            self.register(ep.name, item)
        elif existing is not item:
            self.load_errors[ep.name] = (
                f"{where}: the name is already taken by {existing!r}; the entry point is ignored"
            )

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
            pass
        if name in self.load_errors:
            raise UnknownPluginError(
                f"{self.kind} {name!r} failed to load: {self.load_errors[name]}"
            )
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        failed = (
            f" {len(self.load_errors)} {self.kind} plugin(s) failed to load."
            if self.load_errors
            else ""
        )
        raise UnknownPluginError(
            f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: "
            f"{', '.join(sorted(self._items))}.{failed} See `nicebench list {self.kind}s`."
        )

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._items


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _what(obj: Any) -> str:
    """``class pkg.mod.Name``, ``function pkg.mod.name`` or ``int 3``: what an entry point gave."""
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if inspect.isfunction(obj):
        return f"function {obj.__module__}.{obj.__qualname__}"
    text = repr(obj)
    return f"{type(obj).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _subclass_of(module: str, base: str) -> Coerce:
    """A coerce function accepting subclasses of ``module.base`` (imported when first needed)."""

    def coerce(registry: Registry, name: str, obj: Any) -> Any:
        cls = getattr(importlib.import_module(module), base)
        if not (isinstance(obj, type) and issubclass(obj, cls)):
            raise TypeError(
                f"loads {_what(obj)}, but a {registry.kind} plugin must be a "
                f"subclass of nicebench.{base}"
            )
        return obj

    return coerce


def _metric_entry(registry: Registry, name: str, obj: Any) -> Any:
    """A metric entry point loads a ``MetricSpec``, or a function that its module registered
    (``@register_metric(name, higher_is_better=...)``) under the entry point's name."""
    if isinstance(obj, MetricSpec):
        return obj
    registered = registry._items.get(name)
    if callable(obj) and isinstance(registered, MetricSpec) and registered.fn is obj:
        return registered
    raise TypeError(
        f"loads {_what(obj)}, but a metric plugin must be a nicebench MetricSpec "
        f"or a function registered with @register_metric({name!r}, higher_is_better=...)"
    )


METHODS = Registry(
    "method", "nicebench.methods", "nicebench.methods", _subclass_of("nicebench.method", "Method")
)
DATASETS = Registry(
    "dataset",
    "nicebench.datasets",
    "nicebench.datasets",
    _subclass_of("nicebench.data", "BenchDataset"),
)
METRICS = Registry("metric", "nicebench.metrics", "nicebench.metrics", _metric_entry)
CODECS = Registry(
    "codec", "nicebench.codec", "nicebench.codecs", _subclass_of("nicebench.codec", "Codec")
)
MODELS = Registry("model", "nicebench.models", "nicebench.models")  # classifier architectures
REGISTRIES = {
    "methods": METHODS,
    "codecs": CODECS,
    "datasets": DATASETS,
    "models": MODELS,
    "metrics": METRICS,
}


def register_method(name: str, *, overwrite: bool = False) -> Callable[[type], type]:
    """Class decorator: ``@register_method("gradcam")`` on a :class:`nicebench.Method` subclass."""
    return METHODS.register(name, overwrite=overwrite)


def register_dataset(name: str, *, overwrite: bool = False) -> Callable[[type], type]:
    """Class decorator: ``@register_dataset("scenes")`` on a :class:`nicebench.BenchDataset`."""
    return DATASETS.register(name, overwrite=overwrite)


def register_metric(
    name: Any,
    fn: Callable | None = None,
    *,
    column: str | None = None,
    higher_is_better: bool | None = None,
    needs_masks: bool = False,
    description: str = "",
    applies: Callable[[Any], bool] | None = None,
    settings: tuple[Any, ...] = (),
    overwrite: bool = False,
) -> Any:
    """Register a metric: a per-image function ``fn(ctx) -> Tensor[B]`` or a full ``MetricSpec``.

    ``register_metric(spec)`` registers a :class:`nicebench.metrics.MetricSpec` under its name.
    ``register_metric("name", fn, higher_is_better=...)`` or the decorator
    ``@register_metric("name", higher_is_better=...)`` wraps a plain function ``fn(ctx)``
    (``ctx``: :class:`nicebench.metrics.MetricContext`) in a spec; ``higher_is_better`` is required
    for it, ``column`` defaults to the name, ``settings`` are the
    :class:`~nicebench.metric_spec.Setting` s it reads from the run's ``[settings]``. The
    decorator returns the function unchanged.
    """
    options = {
        "column": column,
        "higher_is_better": higher_is_better,
        "applies": applies,
        "needs_masks": needs_masks or None,
        "description": description or None,
        "settings": tuple(settings) or None,
    }
    given = sorted(k for k, v in options.items() if v is not None)
    if isinstance(name, MetricSpec):
        if fn is not None or given:
            raise TypeError(
                f"register_metric({name.name!r}): a MetricSpec carries its own "
                f"options; got {['fn', *given] if fn is not None else given}"
            )
        return METRICS.register(name.name, name, overwrite=overwrite)
    if not isinstance(name, str):
        raise TypeError(f"register_metric: expected a metric name or a MetricSpec, got {name!r}")

    def add(target: Any) -> Any:
        if isinstance(target, MetricSpec):
            if given:
                raise TypeError(
                    f"register_metric({name!r}): a MetricSpec carries its own options; got {given}"
                )
            if target.name != name:
                raise ValueError(
                    f"register_metric({name!r}) got a MetricSpec named {target.name!r}"
                )
            return METRICS.register(name, target, overwrite=overwrite)
        if not callable(target):
            raise TypeError(
                f"register_metric({name!r}): expected a function fn(ctx) -> "
                f"Tensor[B] or a MetricSpec, got {target!r}"
            )
        if not isinstance(higher_is_better, bool):
            raise TypeError(
                f"register_metric({name!r}): a metric function needs higher_is_better=True or "
                "False (which way is better decides the leaderboard's notes and rankings)"
            )
        spec = MetricSpec(
            name,
            target,
            column or name,
            higher_is_better,
            needs_masks,
            applies or _always,
            description,
            settings=tuple(settings),
        )
        METRICS.register(name, spec, overwrite=overwrite)
        return target

    return add(fn) if fn is not None else add


def _always(method: Any) -> bool:
    return True


def register_arch(name: str, *, overwrite: bool = False) -> Callable[[Any], Any]:
    """Register a classifier architecture (see :mod:`nicebench.models.architectures`)."""
    return MODELS.register(name, overwrite=overwrite)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered architecture names, e.g. ``list_models("res*")``."""
    return MODELS.names(pattern)


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
    return METRICS.get(name)
