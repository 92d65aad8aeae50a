"""Run configuration: datasets × models × (methods + codecs) × metrics, from TOML or the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

__all__ = [
    "PluginSpec", "RunConfig", "parse_specs", "parse_value", "load_config", "parse_config",
    "available", "default_config_text",
]  # fmt: skip


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
    settings: dict[str, Any] = field(default_factory=dict)
    skipped_datasets: list[tuple[str, str]] = field(default_factory=list, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("skipped_datasets")
        d["datasets"] = [str(s) for s in self.datasets]
        d["models"] = [str(s) for s in self.models]
        d["methods"] = [str(s) for s in self.methods]
        d["codecs"] = [str(s) for s in self.codecs]
        return d

    def run_codecs(self) -> list[PluginSpec]:
        """:attr:`codecs`, or the setting ``codec`` (default ``jpeg``) when none is listed."""
        return list(self.codecs) or parse_specs(str(self.settings.get("codec", "jpeg")))


_KEYS = {"n_images", "shard_size", "batch_size", "device", "seed", "out", "executor", "address"}
_LISTS = {"datasets", "optional_datasets", "models", "methods", "codecs", "metrics", "settings"}


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
        raise ValueError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(raw) - _KEYS - _LISTS
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}; "
                         f"known: {sorted(_KEYS | _LISTS)}")  # fmt: skip
    skipped: list[tuple[str, str]] = []
    cfg = RunConfig(
        datasets=parse_specs(raw.get("datasets"))
        + available(parse_specs(raw.get("optional_datasets")), skipped),
        methods=parse_specs(raw.get("methods")),
        codecs=parse_specs(raw.get("codecs")),
        metrics=list(raw.get("metrics", [])),
        settings=dict(raw.get("settings", {})),
    )
    cfg.skipped_datasets = skipped
    cfg.out = f"runs/{Path(source).stem}" if source != "<config>" else cfg.out
    if raw.get("models"):
        cfg.models = parse_specs(raw["models"])
    for key in _KEYS & set(raw):
        setattr(cfg, key, raw[key])
    return cfg


def available(
    datasets: list[PluginSpec], skipped: list[tuple[str, str]] | None = None
) -> list[PluginSpec]:
    """The datasets whose test split loads on this machine; the others are appended to
    ``skipped`` as (spec, the loader's message saying how to get the files)."""
    from .data import DatasetMissingError, load_dataset

    out = []
    for spec in datasets:
        try:
            load_dataset(spec.name, split="test", **spec.kwargs)
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
