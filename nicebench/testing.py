"""The plugin contracts in one call each, run as lists of named rules.

``check_method(MyMethod)``, ``check_gate_method(MyGates)``, ``check_dataset(MyDataset)`` and
``check_codec(MyCodec)`` run their kind's rules in order; the first rule a plugin breaks raises
:class:`ContractError`, whose message starts with the rule's name, then names the plugin, what
was found and the rule. ``print(*rules("method"), sep="\\n")`` lists a kind's rules. A rule marked
``[flag=True]`` applies to plugins with that flag.

Method rules (``METHOD_RULES``; the learned ones, ``learns=True``, are ``LEARNED_METHOD_RULES``):

- ``is-method``: subclass nicebench.Method
- ``flags-are-bools``: the capability flags are bools
- ``learned-method-learns``: a LearnedMethod keeps learns=True
- ``masked-input-needs-gate-mask``: masked_input=True needs gate_mask=True
- ``masks-to-check-with``: the method is checked on a dataset with masks [needs_masks=True]
- ``unusable-before-fit``: a learning method is not usable before fit() [learns=True]
- ``fit-keeps-global-rng``: fit() leaves the global RNG as it was [learns=True]
- ``fit-leaves-fitted``: fit() leaves the method fitted [learns=True]
- ``map-format``: explain() returns a finite float32 [B,1,H,W] tensor on the images' device
- ``batch-independent``: each image explained alone gets the map it gets in the batch
- ``deterministic``: the same batch twice gets the same map [deterministic=True]
- ``needs-masks-enforced``: explain() without masks raises MethodError [needs_masks=True]
- ``needs-indices-enforced``: explain() without indices raises MethodError [needs_indices=True]
- ``with-model``: with_model(model) returns the method (same class) on that model
- ``refit-on``: refit_on(model) returns the method fitted on that model [learns=True]
- ``uses-model-honest``: uses_model=False: the map ignores the classifier; True: it does not
- ``works-without-autograd``: explain() works under inference_mode [needs_gradients=False]
- ``binary-mask-format``: binary_mask() is a bool tensor of the map's shape [gate_mask=True]
- ``composite-keeps-kept-pixels``: composite() keeps the masked-in pixels [masked_input=True]

Gate-method rules (``GATE_METHOD_RULES``; ``check_gate_method`` runs ``is-gate-method``, then the
method rules, then the rest): ``is-gate-method``, ``gate-logits-format``, ``binary-mask-is-gates``,
``map-is-ranked-mask``, ``composite-empty-is-reference``.

Dataset rules (``DATASET_RULES``): ``is-dataset``, ``has-masks-is-bool``, ``known-model-arch``
(the dataset's classifier architecture is registered), ``class-names``, ``normalisation``,
``test-split-not-empty``, ``item-is-tuple``, ``image-format``, ``label-in-range``,
``mask-format``, ``items-deterministic``, ``index-error-past-end``, ``identity-json``,
``train-split``, ``validation-split``, ``items-collate``.

Codec rules (``CODEC_RULES``): ``is-codec``, ``block-is-positive-int``,
``subsamplings-not-empty``, ``encode-gives-bytes``, ``decode-gives-uint8``,
``header-size-in-range``, ``quality-monotone``, ``roundtrip-agrees``, ``bad-quality-rejected``.

:func:`registered` and :func:`restored` change a plugin registry for a block only (tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .codec import Codec
from .config import RunConfig, parse_specs
from .contract.codec_rules import CODEC_RULES, CodecCase
from .contract.dataset_rules import DATASET_RULES, DatasetCase
from .contract.gate_rules import GATE_METHOD_RULES
from .contract.method_rules import FLAGS, LEARNED_METHOD_RULES, METHOD_RULES, MethodCase
from .contract.rules import ContractError, Rule, run_rules
from .data import BenchDataset, load_dataset
from .gates.method import GateMaskMethod
from .method import Method
from .models import build_arch
from .registry import CODECS, METHODS, REGISTRIES, Registry

__all__ = [
    "CODEC_RULES",
    "DATASET_RULES",
    "FLAGS",
    "GATE_METHOD_RULES",
    "LEARNED_METHOD_RULES",
    "METHOD_RULES",
    "TINY_SCENES",
    "tiny_run_config",
    "ContractError",
    "Rule",
    "check_codec",
    "check_dataset",
    "check_gate_method",
    "check_method",
    "registered",
    "restored",
    "rules",
    "tiny_setup",
]

_RULES = {
    "method": METHOD_RULES,
    "learned method": LEARNED_METHOD_RULES,
    "gate method": GATE_METHOD_RULES,
    "dataset": DATASET_RULES,
    "codec": CODEC_RULES,
}

# scenes parameters for end-to-end tests: 32 px, 64 test images, a classifier trained in seconds
TINY_SCENES = {"size": 32, "n": 64, "train_n": 1500, "train_epochs": 3}


def rules(kind: str) -> tuple[Rule, ...]:
    """The rules of a plugin kind, in the order they run: ``"method"``, ``"learned method"``,
    ``"gate method"``, ``"dataset"`` or ``"codec"``; ``str(rule)`` reads ``name: rule``."""
    try:
        return _RULES[kind]
    except KeyError:
        raise ValueError(f"rules(kind={kind!r}): kind is one of {', '.join(_RULES)}") from None


def tiny_run_config(
    out: str | Path,
    methods: list[str],
    metrics: list[str],
    codecs: list[str] = (),
    n_images: int = 8,
    **settings: Any,
) -> RunConfig:
    """A run of ``methods`` (and the compression track's ``codecs``) on :data:`TINY_SCENES`: one
    shard of ``n_images`` images, written to ``out``, 8-step curves unless ``settings`` say
    otherwise; a plugin's end-to-end test runs it with :func:`nicebench.runner.run`."""
    tiny = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
    return RunConfig(
        datasets=parse_specs(tiny),
        methods=parse_specs(list(methods)),
        codecs=parse_specs(list(codecs)),
        metrics=list(metrics),
        n_images=n_images,
        shard_size=n_images,
        batch_size=n_images,
        out=str(out),
        settings={"n_steps": 8, **settings},
    )


def tiny_setup(size: int = 32, n: int = 6, seed: int = 0) -> tuple[nn.Module, BenchDataset]:
    """A randomly initialised (untrained, seeded) scenes classifier and a tiny scenes test set."""
    ds = load_dataset("scenes", size=size, n=n, seed=seed, train_n=64)
    torch.manual_seed(seed)
    model = build_arch(ds.model_arch, ds, seed=seed).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ds


def _method_case(cls, model, dataset, params, n, atol) -> MethodCase:
    if isinstance(cls, str):
        cls = METHODS.get(cls)
    if model is None or dataset is None:
        model, dataset = tiny_setup(n=max(n, 4))
    return MethodCase(cls, model, dataset, params, n, atol)


def _finish(case: MethodCase) -> dict[str, Any]:
    case.report["ok"] = True
    case.report["fitted_method"] = case.method
    return case.report


def check_method(
    cls: type[Method] | str,
    model: nn.Module | None = None,
    dataset: BenchDataset | None = None,
    params: dict[str, Any] | None = None,
    n: int = 4,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Run :data:`METHOD_RULES` on ``cls`` (a class or a registered name); raise
    :class:`ContractError` naming the first rule it breaks.

    Uses a tiny untrained scenes classifier unless ``model``/``dataset`` are given, the dataset's
    first ``n`` images (dataset indices ``0..n-1``) and ``cls.quick_params`` merged under
    ``params``. Returns a report: ``ok``, ``batch_independence_max_diff``,
    ``map_depends_on_model``, ``mask_share`` (gate-mask methods) and the ``fitted_method``.
    """
    case = _method_case(cls, model, dataset, params, n, atol)
    run_rules(METHOD_RULES, case, case.name)
    return _finish(case)


def check_gate_method(
    cls: type[GateMaskMethod] | str,
    model: nn.Module | None = None,
    dataset: BenchDataset | None = None,
    params: dict[str, Any] | None = None,
    n: int = 4,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """:func:`check_method` plus :data:`GATE_METHOD_RULES` (``is-gate-method`` first); the
    report adds the gate ``cell`` in pixels."""
    case = _method_case(cls, model, dataset, params, n, atol)
    is_gate_method, *gate_rules = GATE_METHOD_RULES
    run_rules((is_gate_method, *METHOD_RULES, *gate_rules), case, case.name)
    return _finish(case)


def check_dataset(
    cls_or_instance: type[BenchDataset] | BenchDataset | str,
    params: dict[str, Any] | None = None,
    n: int = 4,
) -> dict[str, Any]:
    """Run :data:`DATASET_RULES` on a dataset class (built as ``cls(split="test", **params)``),
    instance or registered name, reading its first ``n`` items; raise :class:`ContractError`
    naming the first rule it breaks. Returns ``ok``, ``n``, ``n_train`` and ``n_val``."""
    if isinstance(cls_or_instance, str):
        cls_or_instance = load_dataset(cls_or_instance, split="test", **(params or {}))
    case = DatasetCase(cls_or_instance, params, n)
    run_rules(DATASET_RULES, case, f"dataset {case.name}")
    return {
        "dataset": case.name,
        "n": len(case.ds),
        "n_train": len(case.train),
        "n_val": 0 if case.val is None else len(case.val),
        "ok": True,
    }


def check_codec(cls: type[Codec] | str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :data:`CODEC_RULES` on ``cls`` (a class or a registered name) built with ``params``
    (default: none), on seeded textured RGB and grey images; raise :class:`ContractError` naming
    the first rule it breaks. Returns ``ok`` and ``bytes``: channels → the sizes at q10/50/90."""
    if isinstance(cls, str):
        cls = CODECS.get(cls)
    case = CodecCase(cls, params)
    run_rules(CODEC_RULES, case, f"codec {case.name}")
    sizes = {c: [len(s) for s in streams] for c, streams in case.streams.items()}
    return {"codec": case.name, "bytes": sizes, "ok": True}


def _registry(registry: Registry | str) -> Registry:
    if isinstance(registry, Registry):
        return registry
    by_kind = {r.kind: r for r in REGISTRIES.values()}
    if registry not in by_kind:
        raise ValueError(
            f"registry={registry!r}: give a nicebench.registry.Registry or a kind, "
            f"one of {', '.join(sorted(by_kind))}"
        )
    return by_kind[registry]


@contextmanager
def restored(registry: Registry | str, *names: str) -> Iterator[None]:
    """Give ``names`` back what they held in ``registry`` (a Registry or its kind, e.g.
    ``"method"``) before the block, or nothing, even when the block raises: for a block that
    registers plugins itself (a decorator, a plugin file)."""
    reg = _registry(registry)
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(_restored(reg, name))
        yield


@contextmanager
def _restored(reg: Registry, name: str) -> Iterator[None]:
    had = name in reg  # discovers the built-ins and entry points first
    before = reg.get(name) if had else None
    try:
        yield
    finally:
        if had:
            reg.register(name, before, overwrite=True)
        elif name in reg:
            reg.unregister(name)


@contextmanager
def registered(registry: Registry | str, name: str, obj: Any) -> Iterator[Any]:
    """Register ``obj`` as ``name`` in ``registry`` (a Registry or its kind, e.g. ``"method"``)
    for the block only: ``with registered("method", "zz-flat", Flat): ...``. Afterwards ``name``
    holds what it held before, or nothing, and a class's ``registered_name`` is as it was."""
    cls = obj if isinstance(obj, type) else None
    own_name = vars(cls).get("registered_name") if cls is not None else None
    with restored(registry, name):
        try:
            yield _registry(registry).register(name, obj, overwrite=True)
        finally:
            if own_name is not None:
                cls.registered_name = own_name
            elif cls is not None and "registered_name" in vars(cls):
                delattr(cls, "registered_name")
