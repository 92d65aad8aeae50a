"""Local plugin modules: dotted module names or ``.py`` files, imported before plugins are listed.

``nicebench --plugins MODULE_OR_FILE`` and ``$NICEBENCH_PLUGINS`` (``os.pathsep``-separated) name
them; each module registers its plugins with the decorators when imported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["PLUGINS_ENV", "PLUGIN_ERRORS", "PluginLoadError", "load_plugins", "load_env_plugins"]

PLUGINS_ENV = "NICEBENCH_PLUGINS"


class PluginLoadError(ImportError):
    """A plugin module named on the command line or in ``NICEBENCH_PLUGINS`` failed to load."""


_LOADED: dict[str, Any] = {}
# $NICEBENCH_PLUGINS entries that failed when a registry's discovery loaded them (shown by
# `nicebench list`; the command line loads them first and stops with the error instead)
PLUGIN_ERRORS: dict[str, str] = {}
_ENV_LOADED = False


def load_env_plugins() -> None:
    """Load ``$NICEBENCH_PLUGINS`` once per process (registry discovery calls it); failures go
    to :data:`PLUGIN_ERRORS`."""
    global _ENV_LOADED
    if _ENV_LOADED:
        return
    _ENV_LOADED = True
    for item in os.environ.get(PLUGINS_ENV, "").split(os.pathsep):
        if item.strip():
            try:
                _load_one(item.strip())
            except PluginLoadError as exc:
                PLUGIN_ERRORS[item.strip()] = f"{PLUGINS_ENV}: {exc}"


def load_plugins(items: Iterable[str] | str | None = None, *, env: bool = True) -> list[Any]:
    """Import local plugin modules: dotted module names or paths of ``.py`` files.

    ``items`` may be comma-separated strings (the ``--plugins`` option); with ``env``, the
    ``os.pathsep``-separated entries of ``$NICEBENCH_PLUGINS`` come first. Each module registers
    its plugins with the decorators when imported; a module loads once per process. Raises
    :class:`PluginLoadError` naming the module or file that failed.
    """
    if isinstance(items, str):
        items = [items]
    wanted = [p for item in items or () for p in item.split(",")]
    if env:
        wanted = os.environ.get(PLUGINS_ENV, "").split(os.pathsep) + wanted
    return [_load_one(item.strip()) for item in wanted if item.strip()]


def _load_one(item: str) -> Any:
    is_file = item.endswith(".py") or os.sep in item or "/" in item
    key = str(Path(item).resolve()) if is_file else item
    if key in _LOADED:
        return _LOADED[key]
    if is_file:
        path = Path(key)
        if not path.is_file():
            raise PluginLoadError(f"plugin file {item} does not exist")
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        module_name = f"nicebench_plugin_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PluginLoadError(f"plugin file {item}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise PluginLoadError(f"plugin file {path} failed to load: {_describe(exc)}") from exc
    else:
        try:
            module = importlib.import_module(item)
        except Exception as exc:
            raise PluginLoadError(
                f"plugin module {item!r} failed to load: {_describe(exc)}"
            ) from exc
    _LOADED[key] = module
    return module


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
