"""The check of a whole run before it does any work: run keys and every plugin's parameters."""

from __future__ import annotations

import typing
from typing import Any

from .config import (
    ConfigError,
    PluginSpec,
    RunConfig,
    check_run_keys,
    check_settings,
    parse_specs,
)
from .metric_spec import BASELINE
from .models import check_model_spec, torchvision_classifier
from .params import Parameter, check_params, constructor_parameters, function_parameters
from .registry import CODECS, DATASETS, METHODS, METRICS

__all__ = ["MODEL_PARAMS", "check_run"]

# What a model spec takes besides its name (nicebench.models.loading): ``seed`` and ``weights``,
# and the recipe overrides (RECIPE_KEYS) as train_classifier reads them.
MODEL_PARAMS: dict[str, Any] = {
    "seed": int,
    "weights": str,
    "epochs": int,
    "lr": float,
    "batch_size": int,
    "weight_decay": float,
    "jpeg_p": float,
    "flip": bool,
}


def check_run(cfg: RunConfig) -> None:
    """Check a whole run before any work starts: the run keys by range, the ``[settings]`` keys
    (:func:`nicebench.config.check_settings`) and every plugin spec's name and parameters (datasets, models, methods, codecs); raise :class:`ConfigError` naming
    where the bad value came from (the config file and line, or the command-line flag)."""
    check_run_keys(cfg)
    # a config's [settings] were checked against its metrics when it was read; here every key
    # must be one some registered metric declares (`--metrics` may have narrowed the selection)
    check_settings(cfg.settings, METRICS.names())
    for spec in cfg.datasets:
        _check_class(
            "dataset",
            _get(DATASETS, spec, cfg.origin("datasets", spec)),
            spec,
            cfg.origin("datasets", spec),
        )
    for spec in cfg.models:
        _check_model(spec, cfg.origin("models", spec))
    for spec in cfg.methods:
        where = cfg.origin("methods", spec)
        if spec.name in CODECS and spec.name not in METHODS:
            raise ConfigError(
                f"{where + ': ' if where else ''}{spec.name!r} is a codec, not a "
                "method: list it under codecs (TOML `codecs = [...]`, CLI --codecs)"
            )
        cls = _get(METHODS, spec, where)
        typed, _ = constructor_parameters(cls, skip=("model",))
        # create_method takes exactly the keyword parameters with defaults (Method.__init__
        # refuses the rest), so a method's names are checked even behind **kwargs
        accepted = {
            k: typed.get(k, Parameter(k, default=v)) for k, v in cls.default_params().items()
        }
        check_params("method", spec.name, spec.kwargs, accepted, where=where)
    for spec in cfg.run_codecs():
        where = cfg.origin("codecs", spec)
        _check_class("codec", _get(CODECS, spec, where), spec, where)
    _check_baseline(cfg)


def _check_baseline(cfg: RunConfig) -> None:
    """The ``baseline`` setting (an ablation's default row) must be one of the run's methods."""
    baseline = BASELINE.get(cfg.settings)
    if not baseline:
        return
    try:
        specs = parse_specs(str(baseline))
    except ValueError as exc:
        raise ConfigError(f"[settings]: baseline = {baseline!r}: {exc}") from None
    labels = [m.label for m in cfg.methods]
    if len(specs) != 1 or specs[0].label not in labels:
        raise ConfigError(
            f"[settings]: baseline = {baseline!r} is not one of the run's methods "
            f"({', '.join(map(str, cfg.methods))}): name the default row as the methods list it"
        )


def _check_class(kind: str, cls: type, spec: PluginSpec, where: str) -> None:
    accepted, takes_kwargs = constructor_parameters(cls)
    # **kwargs that no base class's constructor names may take any name: then only the
    # parameters the signature does name are checked (by type)
    check_params(kind, spec.name, spec.kwargs, accepted, open_names=takes_kwargs, where=where)


def _check_model(spec: PluginSpec, where: str) -> None:
    try:
        check_model_spec(spec)
    except (KeyError, ValueError) as exc:
        _reraise(exc, where)
    if spec.name.startswith("torchvision:"):
        accepted, _ = function_parameters(torchvision_classifier, skip=("name",))
    else:
        accepted = {k: Parameter(k, hint) for k, hint in MODEL_PARAMS.items()}
    check_params("model", spec.name, spec.kwargs, accepted, where=where)


def _get(registry: Any, spec: PluginSpec, where: str) -> type:
    try:
        return registry.get(spec.name)
    except KeyError as exc:
        _reraise(exc, where)


def _reraise(exc: Exception, where: str) -> typing.NoReturn:
    """``exc`` again (an unknown name: the registry's error with its close matches), its
    message prefixed with where the name was set."""
    if not where:
        raise exc
    raise type(exc)(f"{where}: {exc}") from None
