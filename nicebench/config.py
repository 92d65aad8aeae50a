"""Run configuration: datasets × models × (methods + codecs) × metrics, from TOML or the CLI."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from .metric_spec import CODEC, MetricSpec, SettingError, declared_settings
from .registry import METRICS

__all__ = [
    "PluginSpec",
    "RunConfig",
    "ConfigError",
    "parse_specs",
    "parse_value",
    "load_config",
    "parse_config",
    "check_run_keys",
    "available",
    "default_config_text",
]


class ConfigError(ValueError):
    """A run config that can't run: the message names the key or plugin parameter, where it was
    set (the config file and line, or the command-line flag) and what is accepted."""


def parse_value(text: str) -> Any:
    """``"5"`` → 5, ``"0.5"`` → 0.5, ``"true"`` → True, ``"none"`` → None, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


@dataclass(frozen=True)
class PluginSpec:
    """A plugin name with parameters, e.g. ``nice:lam=5`` → ``PluginSpec("nice", {"lam": 5})``."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, name: str, params: dict[str, Any] | None = None) -> PluginSpec:
        """A spec of ``name`` with ``params`` (list values, as TOML gives them, become tuples so
        that the spec stays hashable)."""
        items = ((k, tuple(v) if isinstance(v, list) else v) for k, v in (params or {}).items())
        return cls(name, tuple(sorted(items)))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def label(self) -> str:
        """``name`` or ``name(k=v,...)``: how the leaderboard names it."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in self.params)})"

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}:{','.join(f'{k}={v}' for k, v in self.params)}"


def parse_specs(items: str | list[str] | None) -> list[PluginSpec]:
    """Parse ``"nice:lam=5,mu=0.1,gradcam"`` (and lists of such strings) into specs.

    After ``NAME:``, a comma-separated token with ``=`` is a parameter of the current plugin;
    a token without ``=`` starts the next plugin. A name may itself hold colons: in
    ``torchvision:resnet50:weights=F`` the last colon before ``=`` ends the name.
    """
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    specs: list[PluginSpec] = []
    for item in items:
        if isinstance(item, dict):
            params = {k: v for k, v in item.items() if k != "name"}
            if "name" not in item:
                raise ValueError(f"plugin table {item!r} has no 'name'")
            specs.append(PluginSpec.make(item["name"], params))
            continue
        name, params = None, {}
        for token in filter(None, (t.strip() for t in item.split(","))):
            if "=" not in token:
                token = token.removesuffix(":")
            elif ":" in token.split("=", 1)[0]:  # NAME:key=value starts the next plugin
                if name:
                    specs.append(PluginSpec.make(name, params))
                name = token.split("=", 1)[0].rsplit(":", 1)[0]
                token, params = token[len(name) + 1 :], {}
            if "=" in token:
                if name is None:
                    raise ValueError(
                        f"parameter {token!r} comes before any plugin name in {item!r}"
                    )
                key, value = token.split("=", 1)
                params[key.strip()] = parse_value(value)
            else:
                if name:
                    specs.append(PluginSpec.make(name, params))
                name, params = token, {}
        if name:
            specs.append(PluginSpec.make(name, params))
    return specs


@dataclass
class RunConfig:
    """Everything that defines a run; each (dataset, model, method, shard) is one cell of it.

    ``models`` are model specs (:mod:`nicebench.models.loading`); ``default`` is each dataset's
    own classifier.

    ``codecs``: the codecs of the compression track; the first is the reference every row's
    ``bd_rate`` is measured against and codes the methods' images. Empty: the setting ``codec``,
    else ``jpeg``.

    ``out``: the run directory; by default ``runs/<config file's stem>`` (``runs/default`` for
    the default leaderboard), so a user's run never writes into the committed reference results
    (``results/``) unless named. ``skipped_datasets``: the optional datasets left out because
    their files are not on this machine, each with the message that says how to get them.

    ``cell_timeout``: seconds a cell may run before it is recorded failed ("timed out after N s")
    and the run goes on (TOML: top-level ``cell_timeout = 600`` or ``cell_timeout`` under
    ``[settings]``; it is not part of any cell's key, so changing it recomputes nothing). ``0``
    turns the limit off.

    ``lock_timeout``: seconds a run waits for another live run that holds its run directory (it
    then resumes from the cells that run stored); ``0`` stops at once, naming that run's pid.

    ``origins``: where the values were set, for error messages (see :meth:`origin`).
    """

    datasets: list[PluginSpec] = field(default_factory=list)
    models: list[PluginSpec] = field(default_factory=lambda: [PluginSpec("default")])
    methods: list[PluginSpec] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    codecs: list[PluginSpec] = field(default_factory=list)
    n_images: int = 200
    shard_size: int = 100
    batch_size: int = 50
    device: str = "cpu"
    seed: int = 0
    out: str = "runs/default"
    executor: str = "local"
    address: str | None = None
    cell_timeout: float = 3600.0
    lock_timeout: float = 86400.0
    settings: dict[str, Any] = field(default_factory=dict)
    skipped_datasets: list[tuple[str, str]] = field(default_factory=list, compare=False)
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, key: str, spec: PluginSpec | None = None) -> str:
        """Where ``key`` was set (with ``spec``: that spec of the plugin list ``key``): ``FILE,
        line N``, a command-line flag such as ``--methods``, or "" when not known."""
        return self.origins.get(f"{key}:{spec}", "") or self.origins.get(key, "")

    def set_origin(self, key: str, where: str) -> None:
        """Record that ``key`` (a run key or a whole plugin list) was set at ``where``."""
        self.origins = {k: v for k, v in self.origins.items() if not k.startswith(f"{key}:")}
        self.origins[key] = where

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("skipped_datasets")
        d.pop("origins")
        d["datasets"] = [str(s) for s in self.datasets]
        d["models"] = [str(s) for s in self.models]
        d["methods"] = [str(s) for s in self.methods]
        d["codecs"] = [str(s) for s in self.codecs]
        return d

    def run_codecs(self) -> list[PluginSpec]:
        """:attr:`codecs`, or the setting ``codec`` (default ``jpeg``) when none is listed."""
        return list(self.codecs) or parse_specs(str(CODEC.get(self.settings)))


_KEYS = {
    "n_images",
    "shard_size",
    "batch_size",
    "device",
    "seed",
    "out",
    "executor",
    "address",
    "cell_timeout",
    "lock_timeout",
}
_LISTS = {"datasets", "optional_datasets", "models", "methods", "codecs", "metrics", "settings"}
_PLUGIN_LISTS = ("datasets", "optional_datasets", "models", "methods", "codecs")
# what each scalar key must hold: (check, what it must be, an example line)
_CHECKS: dict[str, tuple[Any, str, str]] = {
    "n_images": (lambda v: _is_int(v) and v > 0, "a positive integer", "n_images = 100"),
    "shard_size": (lambda v: _is_int(v) and v > 0, "a positive integer", "shard_size = 100"),
    "batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer", "batch_size = 50"),
    "seed": (lambda v: _is_int(v), "an integer", "seed = 0"),
    "device": (lambda v: isinstance(v, str), "a string", 'device = "cpu"'),
    "out": (lambda v: isinstance(v, str) and v.strip(), "a non-empty string", 'out = "runs/x"'),
    "executor": (lambda v: v in ("local", "ray"), '"local" or "ray"', 'executor = "local"'),
    "address": (lambda v: isinstance(v, str), "a string", 'address = "ray://head:10001"'),
    "cell_timeout": (
        lambda v: _is_number(v) and v >= 0,
        "a number of seconds >= 0 (0: no limit)",
        "cell_timeout = 3600",
    ),
    "lock_timeout": (
        lambda v: _is_number(v) and v >= 0,
        "a number of seconds >= 0 (0: don't wait)",
        "lock_timeout = 86400",
    ),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def key_line(text: str, key: str, table: str | None = None) -> int | None:
    """The 1-based line where TOML ``text`` sets ``key`` (top level, or inside ``[table]``), or
    where its ``[key]``/``[[key]]`` table starts; None when not found."""
    k = re.escape(key)
    name = rf"""(?:{k}|"{k}"|'{k}')"""
    assign = re.compile(rf"\s*{name}\s*[.=]")
    header = re.compile(rf"\s*\[\[?\s*{name}\s*\]")
    current = None  # the table the lines belong to (None: top level)
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]", line)
        if m:
            if table is None and header.match(line):
                return n
            current = m.group(1).strip().strip("\"'")
            continue
        if current == table and assign.match(line):
            return n
    return None


def _where(source: str, text: str, key: str, table: str | None = None) -> str:
    line = key_line(text, key, table)
    return f"{source}, line {line}" if line else source


def _must(key: str, value: Any, where: str) -> str:
    """The message for a run key that holds a value it can't: what it must be, and an example
    (a flag's own when the value came from the command line)."""
    _, must, example = _CHECKS[key]
    if where.startswith("--"):  # a command-line flag names the key itself
        return (
            f"{where} must be {must}, not {value!r}; e.g. {where} {example.split('=')[1].strip()}"
        )
    return (
        f"{where + ': ' if where else ''}{key} must be {must}, not {value!r} "
        f"({type(value).__name__}); e.g. {example}"
    )


def check_run_keys(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` for the first run key of ``cfg`` out of its range or of the
    wrong type (``n_images`` a positive integer, ...), naming where it was set."""
    for key, (ok, _, _) in _CHECKS.items():
        value = getattr(cfg, key)
        if not (key == "address" and value is None) and not ok(value):
            raise ConfigError(_must(key, value, cfg.origin(key)))


def _check_raw(raw: dict[str, Any], text: str, source: str) -> None:
    """Raise a ``ValueError`` naming the line and key of the first bad entry of a parsed config."""
    unknown = sorted(set(raw) - _KEYS - _LISTS)
    if unknown:
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(_KEYS | _LISTS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{_where(source, text, key)}: unknown key {key!r}; {hint}"
            f"known: {sorted(_KEYS | _LISTS)}"
        )
    for key, value in raw.items():
        where = _where(source, text, key)
        if key in _CHECKS:
            if not _CHECKS[key][0](value):
                raise ConfigError(_must(key, value, where))
        elif key == "settings":
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{where}: settings must be a table ([settings] with "
                    f"key = value lines), not {value!r}"
                )
            if "cell_timeout" in value and not _CHECKS["cell_timeout"][0](value["cell_timeout"]):
                raise ConfigError(
                    f"{_where(source, text, 'cell_timeout', 'settings')}: cell_timeout must be "
                    f"{_CHECKS['cell_timeout'][1]}, not {value['cell_timeout']!r}"
                )
        elif key == "metrics":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in items):
                raise ConfigError(
                    f"{where}: metrics must be a list of metric names, e.g. "
                    f'metrics = ["deletion", "insertion"], not {value!r}'
                )
        elif key in _PLUGIN_LISTS:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict) and "name" not in item:
                    raise ConfigError(
                        f"{where}: a [[{key}]] table needs a name, e.g. "
                        f'name = "gradcam"; got {item!r}'
                    )
                if not isinstance(item, str | dict):
                    raise ConfigError(
                        f"{where}: {key} entries are plugin specs like "
                        f'"nice:lam=5" or tables with a name, not {item!r}'
                    )


def default_metrics() -> list[str]:
    """The metrics of a run that names none: the default leaderboard's."""
    return list(tomllib.loads(default_config_text())["metrics"])


def check_settings(
    settings: dict[str, Any],
    metrics: list[str] | tuple[str, ...],
    where: Callable[[str], str] = lambda key: "[settings]",
) -> None:
    """Refuse a ``[settings]`` key that neither the run (:data:`nicebench.metric_spec.RUN_SETTINGS`)
    nor any of ``metrics`` (names; the default leaderboard's when empty) declares, and a value
    its :class:`~nicebench.metric_spec.Setting` can't take; ``where(key)`` names the line."""
    specs = [METRICS.get(name) for name in metrics or default_metrics()]
    declared = declared_settings(s for s in specs if isinstance(s, MetricSpec))
    for key, value in settings.items():
        if key not in declared:
            close = difflib.get_close_matches(key, sorted(declared), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise SettingError(
                f"{where(key)}: unknown setting {key!r}; {hint}the run's metrics "
                f"({', '.join(metrics or default_metrics())}) and the run declare: "
                f"{', '.join(sorted(declared))} (`nicebench list metrics` shows each one's "
                "meaning and default)"
            )
        try:
            declared[key].parse(value)
        except SettingError as exc:
            raise SettingError(f"{where(key)}: {exc}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML run config (see ``configs/`` for examples)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    return parse_config(path.read_text(), str(path))


def parse_config(text: str, source: str = "<config>") -> RunConfig:
    """A run config from TOML text. ``optional_datasets`` are added to ``datasets`` when their
    files are on this machine (loading their test split raises no ``DatasetMissingError``)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    _check_raw(raw, text, source)
    metrics = raw.get("metrics", [])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    settings = dict(raw.get("settings", {}))
    check_settings(settings, metrics, lambda key: _where(source, text, key, "settings"))
    timeout = settings.pop("cell_timeout", None)  # a run setting, never part of a cell's key
    skipped: list[tuple[str, str]] = []
    cfg = RunConfig(
        datasets=parse_specs(raw.get("datasets"))
        + available(parse_specs(raw.get("optional_datasets")), skipped),
        methods=parse_specs(raw.get("methods")),
        codecs=parse_specs(raw.get("codecs")),
        metrics=list(metrics),
        settings=settings,
    )
    cfg.skipped_datasets = skipped
    cfg.out = f"runs/{Path(source).stem}" if source != "<config>" else cfg.out
    if raw.get("models"):
        cfg.models = parse_specs(raw["models"])
    if timeout is not None:
        cfg.cell_timeout = float(timeout)
    for key in _KEYS & set(raw):
        setattr(cfg, key, float(raw[key]) if key in ("cell_timeout", "lock_timeout") else raw[key])
    cfg.origins = _origins(raw, text, source)
    return cfg


def _origins(raw: dict[str, Any], text: str, source: str) -> dict[str, str]:
    """Where each key of a parsed config is set, and each plugin spec (``"methods:rise"``): the
    line of its own list entry where it can be found, else its key's line."""
    origins = {key: _where(source, text, key) for key in raw}
    lines = text.splitlines()
    for key in _PLUGIN_LISTS:
        items = raw.get(key, [])
        start = key_line(text, key) or 1
        for item in items if isinstance(items, list) else [items]:
            needle = item["name"] if isinstance(item, dict) else item
            at = next(
                (
                    n
                    for n in range(start, len(lines) + 1)
                    if f'"{needle}"' in lines[n - 1] or f"'{needle}'" in lines[n - 1]
                ),
                None,
            )
            for spec in parse_specs([item]):
                list_key = "datasets" if key == "optional_datasets" else key
                origins[f"{list_key}:{spec}"] = f"{source}, line {at}" if at else origins[key]
    return origins


def available(
    datasets: list[PluginSpec], skipped: list[tuple[str, str]] | None = None
) -> list[PluginSpec]:
    """The datasets whose scored split (the test split unless ``split=``) loads on this machine;
    the others are appended to ``skipped`` as (spec, the loader's message saying how to get the
    files)."""
    from .data import DatasetMissingError, load_run_dataset  # lazy: config stays torch-free

    out = []
    for spec in datasets:
        try:
            load_run_dataset(spec.name, **spec.kwargs)
        except DatasetMissingError as exc:
            if skipped is not None:
                skipped.append((str(spec), str(exc)))
            continue
        out.append(spec)
    return out


def default_config_text() -> str:
    """The default leaderboard's TOML, shipped in the package as ``nicebench/configs/default.toml``
    (``configs/default.toml`` in the repository links to it)."""
    return resources.files("nicebench").joinpath("configs", "default.toml").read_text()
