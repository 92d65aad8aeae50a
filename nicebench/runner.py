"""The runner: expand a config into cells, skip finished ones, execute, store, write the tables.

A cell is (dataset, model, method or codec with parameters, shard of images). A method cell
explains its images and applies the metrics; a codec cell (``kind="codec"``) explains nothing and
applies the table metrics (the compression track's quality sweep). Its key hashes the cell's config
and the code version, so a rerun of the same config resumes where a killed run stopped and a code
change recomputes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import platform
import resource
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import torch

from .codec import Codec, create_codec
from .config import PluginSpec, RunConfig, default_config_text, parse_config
from .data import BenchDataset, collate, load_run_dataset
from .executors import get_executor
from .faults import checkpoint
from .method import Method, create_method
from .metric_spec import CELL_TIMEOUT, SAMPLE_IMAGES, TARGET, MetricSpec
from .metric_spec import catalogue as metric_catalogue
from .metrics import MetricContext, get_metric_spec
from .metrics.audit import audit_rows
from .models import DEFAULT_MODEL, check_model_spec, load_model
from .models.external import load_state_dict_file
from .preflight import check_run
from .registry import DATASETS, METHODS
from .report.tables import write_tables
from .store import RUN_PHASES, CellResult, RunStore, StoreError, describe_write_error
from .timelimit import CellTimeout, time_limit

__all__ = [
    "Cell",
    "plan_cells",
    "run_cell",
    "failed_result",
    "run",
    "code_version",
    "default_config",
    "versions",
]

COMPRESSION = "compression"
METHOD, CODEC = "method", "codec"
# The default leaderboard (nicebench/configs/default.toml): its methods, codecs and metrics
_DEFAULT = tomllib.loads(default_config_text())
DEFAULT_METHODS: list[str] = list(_DEFAULT["methods"])
DEFAULT_CODECS: list[str] = list(_DEFAULT["codecs"])
DEFAULT_METRICS: list[str] = list(_DEFAULT["metrics"])


# What draws, audits or plans a run from its store, so a change to it recomputes no cell.
PRESENTATION = frozenset({"report", "cli.py", "verify.py", "plan.py"})


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the source files that compute cells: the core's and the built-in plugins'
    (not :data:`PRESENTATION`: tables, figures and the report are drawn from the store)."""
    # Here, not at the top: the core never imports a plugin package at load, only to hash its files.
    import nicebench
    import nicebench.datasets
    import nicebench.methods

    h = hashlib.sha256()
    roots = [Path(nicebench.__file__).parent]
    roots += [Path(p) for pkg in (nicebench.methods, nicebench.datasets) for p in pkg.__path__]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.relative_to(root).parts[0] in PRESENTATION and root == roots[0]:
                continue
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def versions() -> dict[str, str]:
    import captum
    import numpy
    import PIL
    import skimage

    import nicebench  # the package itself, for its version: a submodule cannot import it at load

    return {
        "nicebench": nicebench.__version__,
        "code": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "numpy": numpy.__version__,
        "scikit-image": skimage.__version__,
        "pillow": PIL.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": str(torch.get_num_threads()),
    }


@dataclass(frozen=True)
class Cell:
    """One unit of work: a shard of a dataset, its classifier ``model`` explained by one method
    and scored, or (``kind`` ``"codec"``) coded by one codec; ``method`` holds the method's or the
    codec's spec. ``reference``: the run's reference codec (its first), None when no codec is in
    the run."""

    dataset: PluginSpec
    method: PluginSpec
    start: int
    stop: int
    shard: int
    metrics: tuple[str, ...]
    settings: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 50
    device: str = "cpu"
    kind: str = METHOD
    reference: PluginSpec | None = None
    model: PluginSpec = DEFAULT_MODEL
    codecs: tuple[PluginSpec, ...] = ()  # the run's codecs, which code a method's images

    @property
    def key(self) -> str:
        return self.key_for(code_version())

    def key_for(self, code: str) -> str:
        """The key this cell has under code version ``code`` (:attr:`key`: the installed code's;
        ``nicebench verify`` checks stored keys against the specs stored with them)."""
        blob = json.dumps(
            [
                str(self.dataset),
                str(self.model),
                str(self.method),
                self.start,
                self.stop,
                self.metrics,
                self.settings,
                self.kind,
                str(self.reference),
                code,
                [str(c) for c in self.codecs],
            ],
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


# -- caches shared by the cells of one worker process ------------------------------------------------
@functools.lru_cache(maxsize=8)
def _dataset(spec: PluginSpec) -> BenchDataset:
    return load_run_dataset(spec.name, **spec.kwargs)


@functools.lru_cache(maxsize=8)
def _model(spec: PluginSpec, model: PluginSpec, device: str) -> torch.nn.Module:
    return load_model(_dataset(spec), device=device, model=model)


@functools.lru_cache(maxsize=32)
def _method(dspec: PluginSpec, model: PluginSpec, mspec: PluginSpec, device: str) -> Method:
    method = create_method(mspec.name, _model(dspec, model, device), **mspec.kwargs)
    if method.learns:
        method.fit(_dataset(dspec).train_split())
    return method


@functools.lru_cache(maxsize=16)
def _codec(spec: PluginSpec) -> Codec:
    return create_codec(spec.name, **spec.kwargs)


def _metric_specs(
    names: tuple[str, ...], ds: BenchDataset, method: Method | None
) -> list[MetricSpec]:
    """The metrics that apply to a cell, table metrics first: a codec cell (``method`` None) gets
    only the table metrics."""
    specs = sorted((get_metric_spec(n) for n in names), key=lambda s: s.kind != "table")
    if method is None:
        return [s for s in specs if s.kind == "table"]
    return [s for s in specs if (ds.has_masks or not s.needs_masks) and s.applies(method)]


def _spec_params(spec: PluginSpec | None) -> list | None:
    return None if spec is None else [spec.name, [list(p) for p in spec.params]]


def _new_result(cell: Cell) -> CellResult:
    """An empty result of ``cell``; its ``spec`` holds what rebuilds the cell (``cell``: the exact
    plugin specs, the reference codec and batch size, see :func:`nicebench.verify.cell_from_spec`)."""
    return CellResult(
        key=cell.key,
        dataset=cell.dataset.label,
        model=cell.model.label,
        method=cell.method.label,
        method_name=cell.method.name,
        shard=cell.shard,
        kind=cell.kind,
        code_version=code_version(),
        spec={
            "dataset": str(cell.dataset),
            "model": str(cell.model),
            "method": str(cell.method),
            "images": [cell.start, cell.stop],
            "metrics": list(cell.metrics),
            "settings": dict(cell.settings),
            "cell": {
                "dataset": _spec_params(cell.dataset),
                "model": _spec_params(cell.model),
                "method": _spec_params(cell.method),
                "reference": _spec_params(cell.reference),
                "codecs": [_spec_params(c) for c in cell.codecs],
                "batch_size": cell.batch_size,
                "device": cell.device,
            },
        },
    )


def _fail(res: CellResult, error: str, trace: str | None = None) -> CellResult:
    res.status, res.error = "failed", error
    res.image_rows, res.cell_values, res.tables = [], {}, {}
    res.artifacts, res.samples = [], []
    if trace:
        res.spec["traceback"] = trace
    return res


def failed_result(cell: Cell, error: str) -> CellResult:
    """The failed result of a cell that returned nothing (its worker timed out or died): what
    the driver writes for it."""
    return _fail(_new_result(cell), error)


def run_cell(cell: Cell, timeout: float | None = None) -> CellResult:
    """Compute one cell; never raises: a failure is recorded in the result's status and error.
    ``timeout``: seconds after which the cell stops and is failed with "timed out after N s"
    (see :mod:`nicebench.timelimit`)."""
    t0 = time.perf_counter()
    res = _new_result(cell)
    try:
        with time_limit(timeout):
            _compute(cell, res)
    except CellTimeout as exc:
        _fail(res, str(exc), traceback.format_exc(limit=6))
    except Exception as exc:  # a failing cell is recorded and the run goes on
        _fail(res, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=6))
    res.seconds = time.perf_counter() - t0
    return res


def _compute(cell: Cell, res: CellResult) -> None:
    device = cell.device
    ds = _dataset(cell.dataset)
    t_models = time.perf_counter()  # loading or training the classifier, fitting the method
    model = _model(cell.dataset, cell.model, device)
    method = _method(cell.dataset, cell.model, cell.method, device) if cell.kind == METHOD else None
    res.timings[("models", "")] = time.perf_counter() - t_models
    settings = dict(cell.settings)
    stop = min(cell.stop, len(ds))
    items = collate([ds[i] for i in range(cell.start, stop)])
    images, labels = items[0].to(device), items[1].to(device)
    masks = items[2].to(device) if len(items) > 2 else None
    with torch.no_grad():
        logits = [model(images[i : i + 256]) for i in range(0, len(images), 256)]
        preds = torch.cat([lo.argmax(1) for lo in logits])
    targets = labels if TARGET.get(settings) == "label" else preds
    if method is None:
        sal, res.explain_ms_per_image = None, 0.0  # a codec explains nothing: no explain time
    else:
        sal = _explain(cell, res, method, images, targets, masks)

    idx = list(range(cell.start, stop))
    lab, prd = labels.tolist(), preds.tolist()
    rows = res.image_rows
    correct = (preds == labels).float().tolist()
    rows += [(i, lab[j], prd[j], "correct", correct[j]) for j, i in enumerate(idx)]
    ref = cell.reference
    codec_spec = cell.method if cell.kind == CODEC else ref  # a method is coded with the reference
    codec = _codec(codec_spec) if codec_spec is not None else None
    ctx = MetricContext(
        model=model,
        images=images,
        labels=labels,
        saliency=sal,
        preds=preds,
        masks=masks,
        method=method,
        settings=settings,
        kind=cell.kind,
        codec=codec,
        bd_codec=ref.label if ref else "",
        start=cell.start,
        sample_images=SAMPLE_IMAGES.get(settings),
        codecs=tuple((c.label, _codec(c)) for c in cell.codecs),
        dataset=ds,
    )
    ctx.record(
        "classifier",
        [
            {
                "dataset_classes": ds.num_classes,
                "model_classes": int(logits[0].shape[1]) if logits else 0,
            }
        ],
    )
    specs = _metric_specs(cell.metrics, ds, method)
    for spec in specs:  # each metric's wall time (what an earlier one cached in ctx is free)
        t_metric = time.perf_counter()
        try:
            if spec.kind == "table":
                res.tables[spec.name] = spec.fn(ctx)
                continue
            values = spec.fn(ctx)
            if values is None:
                continue
            values = values.detach().float().cpu().tolist()
        finally:
            res.timings[("metrics", spec.name)] = time.perf_counter() - t_metric
        rows += [(i, lab[j], prd[j], spec.column, values[j]) for j, i in enumerate(idx)]
        checkpoint("cell")
    t_audit = time.perf_counter()
    audit = audit_rows(ctx, specs)  # the validity audit's side passes (randomised model, noise)
    res.timings[("audit", "")] = time.perf_counter() - t_audit
    if audit:
        res.tables["audit"] = audit
        res.spec["audit_seconds"] = round(res.timings[("audit", "")], 3)
    res.tables.update(ctx.records)
    res.n_images = len(idx)
    _keep_sample(ctx, res)


def _keep_sample(ctx: MetricContext, res: CellResult) -> None:
    """What figures need of the cell beyond its scores: the arrays the metrics kept, the sample
    images' maps (float16, each divided by its largest magnitude) and binary gate masks, and the
    sample images themselves (uint8 HWC, with their ground-truth masks and labels)."""
    rows = ctx.sample_rows
    if rows and ctx.saliency is not None:
        maps = ctx.saliency[rows].detach().float().sum(1)  # channels summed: [k, H, W]
        scale = maps.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None]
        ctx.keep("map", maps / scale, list(range(len(rows))), dtype="float16")
        if ctx.method.gate_mask:
            gate = ctx.cache.get("gate_mask")
            if gate is None:  # no metric needed the gate mask: compute it for the sample only
                kw = {"masks": ctx.masks[rows]} if ctx.method.needs_masks else {}
                gate = ctx.method.binary_mask(ctx.images[rows], ctx.targets[rows], **kw)
            else:
                gate = gate[rows]
            ctx.keep(
                "gate_mask",
                gate.reshape(len(rows), *gate.shape[-2:]),
                list(range(len(rows))),
                dtype="uint8",
            )
    res.artifacts = ctx.kept
    images = (ctx.images[rows].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu()
    for j in rows:
        i = ctx.start + j
        res.samples.append((i, "image", images[j].numpy()))
        res.samples.append((i, "label", np.asarray(int(ctx.labels[j]))))
        if ctx.masks is not None:
            res.samples.append((i, "mask", (ctx.masks[j, 0] > 0.5).byte().cpu().numpy()))


def _explain(cell: Cell, res: CellResult, method: Method, images, targets, masks) -> torch.Tensor:
    """The method's maps of the cell's images, timed (explain time and peak memory into ``res``)."""
    device = cell.device
    if method.needs_masks and masks is None:
        raise ValueError(
            f"method {method.name!r} needs masks and dataset {cell.dataset.name!r} has none"
        )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t_explain = time.perf_counter()
    maps = []
    for i in range(0, len(images), cell.batch_size):
        kw = {"masks": masks[i : i + cell.batch_size]} if method.needs_masks else {}
        idx = torch.arange(cell.start + i, cell.start + min(i + cell.batch_size, len(images)))
        maps.append(
            method.explain(
                images[i : i + cell.batch_size], targets[i : i + cell.batch_size], indices=idx, **kw
            )
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        res.peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        res.peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sal = torch.cat(maps)
    res.timings[("explain", "")] = time.perf_counter() - t_explain
    res.explain_ms_per_image = 1000 * res.timings[("explain", "")] / len(images)
    if not torch.isfinite(sal).all():
        bad = (~torch.isfinite(sal)).flatten(1).any(1).sum().item()
        raise ValueError(f"method {method.name!r} returned NaN/inf in {bad} of {len(sal)} maps")
    return sal


def default_config(**overrides: Any) -> RunConfig:
    """The default leaderboard, ``nicebench/configs/default.toml``: :data:`DEFAULT_METHODS` and
    :data:`DEFAULT_CODECS` on ``scenes`` (64 px) and, when its files are on this machine,
    ``fashion-mnist``; 100 test images each. ``overrides`` set other :class:`RunConfig` fields."""
    cfg = replace(
        parse_config(default_config_text(), "nicebench/configs/default.toml"), **overrides
    )
    cfg.origins = {k: v for k, v in cfg.origins.items() if k.split(":")[0] not in overrides}
    return cfg


def run_catalogue(cfg: RunConfig) -> dict[str, Any]:
    """What the report reads of the run's metrics and methods, stored with the run
    (:class:`nicebench.report.columns.Catalogue`): each metric's
    :func:`~nicebench.metric_spec.catalogue` row under the run's settings, and the methods that
    read the ground-truth masks."""
    names = list(dict.fromkeys(cfg.metrics or DEFAULT_METRICS))
    settings = {"seed": cfg.seed, **cfg.settings}
    gt = sorted({m.name for m in cfg.methods if METHODS.get(m.name).needs_masks})
    classes = {
        d.name: list(c)
        for d in cfg.datasets  # declared on the plugin's class
        if isinstance(c := getattr(DATASETS.get(d.name), "classes", None), (list, tuple))
    }
    return {
        "metrics": metric_catalogue([get_metric_spec(n) for n in names], settings),
        "ground_truth_methods": gt,
        "classes": classes,
    }


def plan_cells(cfg: RunConfig) -> list[Cell]:
    """Expand a config into cells: methods (those that can't apply to a dataset are left out),
    then, when the ``compression`` metric is on, the run's codecs (:meth:`RunConfig.run_codecs`).
    The whole config is checked first (:func:`nicebench.preflight.check_run`): a bad key or plugin
    parameter raises :class:`nicebench.config.ConfigError` before any dataset or model loads."""
    check_run(cfg)
    metrics = tuple(dict.fromkeys(cfg.metrics or DEFAULT_METRICS))  # a metric listed twice: once
    for name in metrics:
        get_metric_spec(name)  # raises with close matches
    settings = {"seed": cfg.seed, **cfg.settings}
    settings.pop("cell_timeout", None)  # a limit on the run, not part of what a cell computes
    settings.pop("baseline", None)  # what the report compares, not part of what a cell computes
    settings = tuple(sorted(settings.items()))
    codecs = cfg.run_codecs() if COMPRESSION in metrics else []
    reference = codecs[0] if codecs else None
    units = [(m, METHOD) for m in cfg.methods] + [(c, CODEC) for c in codecs]
    models = [check_model_spec(m) for m in cfg.models or [DEFAULT_MODEL]]
    for model in models:  # a weights file that is no state dict stops the run before any write
        if model.kwargs.get("weights"):
            load_state_dict_file(model.kwargs["weights"])
    cells = []
    for dspec in cfg.datasets:
        ds = _dataset(dspec)
        n = min(cfg.n_images, len(ds))
        for model, (spec, kind) in itertools.product(models, units):
            if kind == METHOD and METHODS.get(spec.name).needs_masks and not ds.has_masks:
                continue
            for shard, start in enumerate(range(0, n, cfg.shard_size)):
                cells.append(
                    Cell(
                        dspec,
                        spec,
                        start,
                        min(start + cfg.shard_size, n),
                        shard,
                        metrics,
                        settings,
                        cfg.batch_size,
                        cfg.device,
                        kind,
                        reference,
                        model,
                        tuple(codecs),
                    )
                )
    return cells


@dataclass
class RunSummary:
    out: Path
    total: int
    skipped: int
    ok: int
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def run(cfg: RunConfig, progress: bool = True) -> RunSummary:
    """Run ``cfg``: compute the cells not yet in the store, then write the leaderboard tables."""
    t0 = time.perf_counter()
    cells = plan_cells(cfg)  # validates names first: a bad config leaves no store behind
    out = Path(cfg.out)
    store = RunStore(out).claim(wait=cfg.lock_timeout)  # one writer; a second waits for it
    store.record_run(cfg.to_dict(), versions(), [c.key for c in cells], run_catalogue(cfg))
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    summary = RunSummary(out, len(cells), len(cells) - len(todo), 0)
    executor = get_executor(cfg.executor, address=cfg.address)
    limit = (
        CELL_TIMEOUT.get(cfg.settings) if CELL_TIMEOUT.name in cfg.settings else cfg.cell_timeout
    )
    timeout = float(limit or 0) or None
    phases = dict.fromkeys(RUN_PHASES[:-2], 0.0)  # the computed cells' parts, then the tables
    try:
        cells_out = executor.map(
            functools.partial(run_cell, timeout=timeout),
            todo,
            progress=progress,
            timeout=timeout,
            fail=failed_result,
        )
        for res in cells_out:
            store.write(res)
            for phase, sec in res.phase_seconds().items():
                phases[phase] += sec
            if res.status == "ok":
                summary.ok += 1
            else:
                where = f"{res.dataset} · {res.model}" if res.model != "default" else res.dataset
                summary.failed.append((where, res.method, res.error))
        t_tables = time.perf_counter()
        _write_tables_whole(write_tables, store, {c.key for c in cells}, out)
        phases["tables"] = time.perf_counter() - t_tables
        store.record_timings(phases, computed=len(todo), stored=summary.skipped)
    finally:
        store.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_tables_whole(write_tables, store: RunStore, keys: set[str], out: Path) -> None:
    """``write_tables`` into a scratch folder, then each file renamed into ``out``: a table is
    replaced whole or not at all (a full disk leaves the previous tables as they were)."""
    import os
    import shutil
    import tempfile

    for stale in out.glob(".tables-*"):  # a run killed while writing its tables (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".tables-", dir=out))
    except OSError as exc:
        raise StoreError(describe_write_error(out, exc)) from None
    try:
        write_tables(store, keys, scratch)
        for path in sorted(scratch.rglob("*")):
            target = out / path.relative_to(scratch)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                checkpoint("tables")
                os.replace(path, target)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else out
        if scratch in where.parents:  # name the table, not the scratch copy
            where = out / where.relative_to(scratch)
        raise StoreError(describe_write_error(where, exc, tables=True)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
