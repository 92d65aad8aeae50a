"""The runner: expand a config into cells, skip finished ones, execute, store, write the tables.

A cell is (dataset, model, method with parameters, shard of images). Its key hashes the cell's
config and the code version, so a rerun of the same config resumes where a killed run stopped
and a code change recomputes.
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

import tomllib
import torch

from .config import PluginSpec, RunConfig, default_config_text, parse_config
from .data import BenchDataset, collate, load_dataset
from .method import Method, create_method
from .metrics import MetricContext, MetricSpec, get_metric_spec
from .models import DEFAULT_MODEL, check_model_spec, load_model
from .registry import METHODS, METRICS
from .store import CellResult, RunStore

__all__ = [
    "Cell",
    "plan_cells",
    "run_cell",
    "run",
    "code_version",
    "default_config",
    "versions",
]

COMPRESSION = "compression"
# The default leaderboard (nicebench/configs/default.toml): its methods and metrics
_DEFAULT = tomllib.loads(default_config_text())
DEFAULT_METHODS: list[str] = list(_DEFAULT["methods"])
DEFAULT_METRICS: list[str] = list(_DEFAULT["metrics"])


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the core's and the built-in plugins' source files."""
    import nicebench
    import nicebench.datasets
    import nicebench.methods

    h = hashlib.sha256()
    roots = [Path(nicebench.__file__).parent]
    roots += [Path(p) for pkg in (nicebench.methods, nicebench.datasets) for p in pkg.__path__]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def versions() -> dict[str, str]:
    import captum
    import numpy
    import PIL
    import skimage

    import nicebench

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
    """One unit of work: a shard of a dataset, its classifier ``model`` explained by one method."""

    dataset: PluginSpec
    method: PluginSpec
    start: int
    stop: int
    shard: int
    metrics: tuple[str, ...]
    settings: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 50
    device: str = "cpu"
    track: str = "explain"
    model: PluginSpec = DEFAULT_MODEL

    @property
    def key(self) -> str:
        blob = json.dumps(
            [str(self.dataset), str(self.model), str(self.method), self.start, self.stop,
             self.metrics, self.settings, self.track, code_version()],
            default=str,
        )  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


# -- caches shared by the cells of one worker process ------------------------------------------------
@functools.lru_cache(maxsize=8)
def _dataset(spec: PluginSpec) -> BenchDataset:
    return load_dataset(spec.name, split="test", **spec.kwargs)


@functools.lru_cache(maxsize=8)
def _model(spec: PluginSpec, model: PluginSpec, device: str) -> torch.nn.Module:
    return load_model(_dataset(spec), device=device, model=model)


@functools.lru_cache(maxsize=32)
def _method(dspec: PluginSpec, model: PluginSpec, mspec: PluginSpec, device: str) -> Method:
    method = create_method(mspec.name, _model(dspec, model, device), **mspec.kwargs)
    if method.learns:
        method.fit(_dataset(dspec).train_split())
    return method


def _metric_specs(names: tuple[str, ...], ds: BenchDataset, method: Method) -> list[MetricSpec]:
    specs = [get_metric_spec(n) for n in names if n != COMPRESSION]
    return [s for s in specs if (ds.has_masks or not s.needs_masks) and s.applies(method)]


def run_cell(cell: Cell) -> CellResult:
    """Compute one cell; never raises: a failure is recorded in the result's status and error."""
    t0 = time.perf_counter()
    res = CellResult(
        key=cell.key, dataset=cell.dataset.label, model=cell.model.label,
        method=cell.method.label, method_name=cell.method.name, shard=cell.shard,
        track=cell.track, code_version=code_version(),
        spec={"dataset": str(cell.dataset), "model": str(cell.model), "method": str(cell.method),
              "images": [cell.start, cell.stop], "metrics": list(cell.metrics),
              "settings": dict(cell.settings)},
    )  # fmt: skip
    try:
        _compute(cell, res)
    except Exception as exc:  # a failing cell is recorded and the run goes on
        res.status = "failed"
        res.error = f"{type(exc).__name__}: {exc}"
        res.image_rows, res.cell_values, res.tables = [], {}, {}
        res.spec["traceback"] = traceback.format_exc(limit=6)
    res.seconds = time.perf_counter() - t0
    return res


def _compute(cell: Cell, res: CellResult) -> None:
    device = cell.device
    ds = _dataset(cell.dataset)
    model = _model(cell.dataset, cell.model, device)
    method = _method(cell.dataset, cell.model, cell.method, device)
    settings = dict(cell.settings)
    stop = min(cell.stop, len(ds))
    items = collate([ds[i] for i in range(cell.start, stop)])
    images, labels = items[0].to(device), items[1].to(device)
    masks = items[2].to(device) if len(items) > 2 else None
    with torch.no_grad():
        preds = torch.cat(
            [model(images[i : i + 256]).argmax(1) for i in range(0, len(images), 256)]
        )
    targets = labels if settings.get("target", "pred") == "label" else preds
    if method.needs_masks and masks is None:
        raise ValueError(f"method {method.name!r} needs masks and dataset {ds.registered_name!r} "
                         "has none")  # fmt: skip

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t_explain = time.perf_counter()
    maps = []
    for i in range(0, len(images), cell.batch_size):
        kw = {"masks": masks[i : i + cell.batch_size]} if method.needs_masks else {}
        maps.append(method.explain(images[i : i + cell.batch_size], targets[i : i + cell.batch_size],
                                   **kw))  # fmt: skip
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        res.peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        res.peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sal = torch.cat(maps)
    res.explain_ms_per_image = 1000 * (time.perf_counter() - t_explain) / len(images)
    if not torch.isfinite(sal).all():
        bad = (~torch.isfinite(sal)).flatten(1).any(1).sum().item()
        raise ValueError(f"method {method.name!r} returned NaN/inf in {bad} of {len(sal)} maps")

    idx = list(range(cell.start, stop))
    lab, prd = labels.tolist(), preds.tolist()
    rows = res.image_rows
    correct = (preds == labels).float().tolist()
    rows += [(i, lab[j], prd[j], "correct", correct[j]) for j, i in enumerate(idx)]
    ctx = MetricContext(model=model, images=images, labels=labels, saliency=sal, preds=preds,
                        masks=masks, method=method, settings=settings)  # fmt: skip
    if COMPRESSION in cell.metrics:
        res.tables["compression"] = compression_track(ctx)
    if getattr(method, "codec_only", False):
        res.n_images = len(idx)
        return
    for spec in _metric_specs(cell.metrics, ds, method):
        values = spec.fn(ctx)
        if values is None:
            continue
        values = values.detach().float().cpu().tolist()
        rows += [(i, lab[j], prd[j], spec.column, values[j]) for j, i in enumerate(idx)]
    res.n_images = len(idx)


def compression_track(ctx: MetricContext) -> list[dict[str, Any]]:
    """Per-image × operating-point rows of the compression track (SPEC §6) for one batch.

    A codec-only method contributes its quality sweep; any other method its map's top-k masks
    (``keeps``) and, for gate-mask methods, its own binary mask, as mixed-resolution images.
    """
    from .compression import compression_rows, quality_sweep_rows

    s, m = ctx.settings, ctx.method
    if getattr(m, "codec_only", False):
        return quality_sweep_rows(ctx.model, ctx.images, ctx.labels, m.codec, m.qualities,
                                  subsampling=m.subsampling, reference_quality=s.get("quality", 75))  # fmt: skip
    gate = ctx.gate_mask() if m.gate_mask else None
    return compression_rows(
        ctx.model, ctx.images, ctx.labels, ctx.saliency, gt_masks=ctx.masks,
        codec=s.get("codec", "jpeg"), quality=s.get("quality", 75),
        keeps=tuple(s.get("keeps", (0.05, 0.1, 0.2, 0.3, 0.5))), factor=s.get("factor", 4),
        dilate=s.get("dilate", 0), binary_mask=gate,
    )  # fmt: skip


def default_config(**overrides: Any) -> RunConfig:
    """The default leaderboard, ``nicebench/configs/default.toml``: :data:`DEFAULT_METHODS` on
    ``scenes`` (64 px) and, when its files are on this machine, ``fashion-mnist``; 100 test images
    each. ``overrides`` set other :class:`RunConfig` fields."""
    return replace(parse_config(default_config_text(), "nicebench/configs/default.toml"),
                   **overrides)  # fmt: skip


def plan_cells(cfg: RunConfig) -> list[Cell]:
    """Expand a config into cells (methods that can't apply to a dataset are left out)."""
    metrics = tuple(cfg.metrics or DEFAULT_METRICS)
    for name in metrics:
        if name != COMPRESSION and name not in METRICS:
            get_metric_spec(name)  # raises with close matches
    settings = tuple(sorted({"seed": cfg.seed, **cfg.settings}.items()))
    methods = list(cfg.methods)
    codec = cfg.settings.get("codec", "jpeg")
    if COMPRESSION in metrics and not any(m.name == codec for m in methods):
        methods.append(PluginSpec.make(codec))  # the quality sweep every method is measured against
    models = [check_model_spec(m) for m in cfg.models or [DEFAULT_MODEL]]
    cells = []
    for dspec in cfg.datasets:
        ds = _dataset(dspec)
        n = min(cfg.n_images, len(ds))
        for model, mspec in itertools.product(models, methods):
            cls = METHODS.get(mspec.name)
            if cls.needs_masks and not ds.has_masks:
                continue
            track = "compression" if getattr(cls, "codec_only", False) else "explain"
            for shard, start in enumerate(range(0, n, cfg.shard_size)):
                cells.append(Cell(dspec, mspec, start, min(start + cfg.shard_size, n), shard,
                                  metrics, settings, cfg.batch_size, cfg.device, track,
                                  model))  # fmt: skip
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
    from .executors import get_executor
    from .report.tables import write_tables

    t0 = time.perf_counter()
    cells = plan_cells(cfg)  # validates names first: a bad config leaves no store behind
    out = Path(cfg.out)
    store = RunStore(out)
    store.record_run(cfg.to_dict(), versions())
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    summary = RunSummary(out, len(cells), len(cells) - len(todo), 0)
    executor = get_executor(cfg.executor, address=cfg.address)
    for res in executor.map(run_cell, todo, progress=progress):
        store.write(res)
        if res.status == "ok":
            summary.ok += 1
        else:
            where = f"{res.dataset} · {res.model}" if res.model != "default" else res.dataset
            summary.failed.append((where, res.method, res.error))
    write_tables(store, {c.key for c in cells}, out)
    store.close()
    summary.seconds = time.perf_counter() - t0
    return summary
