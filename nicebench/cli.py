"""``nicebench`` command line: list plugins, run a leaderboard, write reports and figures, audit
runs and retrain the shipped reference weights."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# MKL (torch's CPU BLAS) may use fewer threads than asked when the machine is busy
# (MKL_DYNAMIC), which would change the order of its sums and so the last bits of a cell computed
# under load. A fixed thread count keeps a run bit-reproducible for its thread count (what
# `nicebench verify` checks); set before torch's first BLAS call.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__all__ = ["main"]

# Each command imports what it needs inside its function: start-up time. `nicebench report` and
# `figures` never load torch, `list` loads only the plugins; `run` and `verify` load the runner.


def _summary(obj: object) -> str:
    """The first non-empty line of a plugin's own docstring (a metric's description), or ""."""
    from .metric_spec import MetricSpec

    doc = obj.description if isinstance(obj, MetricSpec) else obj.__doc__
    lines = [line.strip() for line in (doc or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _list(args: argparse.Namespace) -> int:
    from . import plugins, registry

    kinds = [args.kind] if args.kind else list(registry.REGISTRIES)
    failed: list[tuple[str, str]] = list(plugins.PLUGIN_ERRORS.items())
    for kind in kinds:
        reg = registry.REGISTRIES[kind]
        print(f"{kind}:")
        for name in reg.names(args.pattern):
            print(f"  {name:<22} {_summary(reg.get(name))}".rstrip())
            for setting in getattr(reg.get(name), "settings", ()) if kind == "metrics" else ():
                print(f"  {'':<22}   setting {setting.describe()}")
        if kind == "metrics":
            from .metric_spec import RUN_SETTINGS

            print("  the run's own settings:")
            for setting in RUN_SETTINGS:
                print(f"  {'':<22}   setting {setting.describe()}")
        failed += sorted(reg.load_errors.items())
    if failed:
        print("failed to load:")
        for name, error in failed:
            print(f"  {name:<22} {error}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from .config import ConfigError, load_config, parse_specs
    from .report.terminal import terminal_summary
    from .runner import default_config, run

    cfg = load_config(args.config) if args.config else default_config()
    for key in ("datasets", "models", "methods", "codecs"):
        if getattr(args, key):
            setattr(cfg, key, parse_specs(getattr(args, key)))
            cfg.set_origin(key, f"--{key}")
    if args.datasets:
        cfg.skipped_datasets = []
    if args.metrics:
        cfg.metrics = [m.strip() for m in ",".join(args.metrics).split(",") if m.strip()]
    for key in (
        "n_images",
        "out",
        "device",
        "batch_size",
        "shard_size",
        "executor",
        "address",
        "cell_timeout",
        "lock_timeout",
    ):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
            cfg.set_origin(key, f"--{key.replace('_', '-')}")
            if key in ("cell_timeout", "lock_timeout"):
                cfg.settings.pop(key, None)  # the flag wins over [settings] cell_timeout
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, not {args.threads}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    for spec, why in cfg.skipped_datasets:
        print(f"skipped dataset {spec}: {why}", file=sys.stderr)
    if args.dry_run:
        from .plan import plan_run

        print("\n".join(plan_run(cfg).lines()))
        return 0
    summary = run(cfg, progress=not args.quiet)
    out = Path(cfg.out)
    print(
        f"{summary.ok} cells computed, {summary.skipped} already in the store, "
        f"{len(summary.failed)} failed, in {summary.seconds:.1f} s"
    )
    for dataset, method, error in summary.failed:
        print(f"  FAILED {dataset} · {method}: {error}")
    files: list[Path] = []
    code = summary.exit_code
    if not args.no_report:
        from .store import RunLock

        try:
            with RunLock(out, cfg.lock_timeout):  # a second run on `out` draws after this one
                files = _write_figures_and_report(out, ("png", "pdf"), record=True)
        except Exception as exc:  # the tables are written: say what failed and go on
            print(
                f"error: figures/report not written ({type(exc).__name__}: {exc}); the tables "
                f"are in {out}; retry with `nicebench report {out}`",
                file=sys.stderr,
            )
            code = 1
    board = pd.read_csv(out / "leaderboard.csv")
    validity = pd.read_csv(out / "validity.csv") if (out / "validity.csv").exists() else None
    print(terminal_summary(board, out, files, validity), end="")
    return code


def _write_figures_and_report(
    run_dir: Path, formats: tuple[str, ...], record: bool = False
) -> list[Path]:
    """The latest run's figures, then the report that shows them: [figures folder, page].
    ``record``: store the wall time of each with the latest run (the figures' before the page is
    drawn, so it shows them; the report's after it)."""
    import time

    from .report.figures import write_figures
    from .report.html import write_report

    keys = _latest_keys(run_dir)
    t0 = time.perf_counter()
    write_figures(run_dir, formats=formats, keys=keys)
    if record:
        _record_timings(run_dir, {"figures": time.perf_counter() - t0})
    t0 = time.perf_counter()
    page = write_report(run_dir, keys)
    if record:
        _record_timings(run_dir, {"report": time.perf_counter() - t0})
    return [run_dir / "figures", page]


def _record_timings(run_dir: Path, seconds: dict[str, float]) -> None:
    from .store import RunStore

    store = RunStore(run_dir)
    try:
        store.record_timings(seconds)
    finally:
        store.close()


def _latest_keys(run_dir: Path) -> set[str] | None:
    """The cells of the run directory's latest run (its tables show the same ones)."""
    from .store import RunStore

    store = RunStore(run_dir)
    try:
        return store.latest_keys()
    finally:
        store.close()


def _run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "store.sqlite").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no run store (store.sqlite): pass the --out "
            "directory of a `nicebench run`"
        )
    return run_dir


def _figures(args: argparse.Namespace) -> int:
    from .report.figures import write_figures

    formats = tuple(f.strip().lower() for f in args.format.split(",") if f.strip())
    bad = sorted(set(formats) - {"png", "pdf", "svg"})
    if bad:
        raise ValueError(f"--format {args.format!r}: unknown format(s) {bad}; use png, pdf, svg")
    run_dir = _run_dir(args.run_dir)
    paths = write_figures(run_dir, formats=formats, keys=_latest_keys(run_dir))
    print(f"wrote {len(paths)} files into {Path(args.run_dir) / 'figures'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.run_dir)
    if args.figures:
        _write_figures_and_report(run_dir, ("png", "pdf"))
    from .report.html import write_report

    print(f"wrote {write_report(run_dir, _latest_keys(run_dir))}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from .store import RunStore

    run_dir = _run_dir(args.run_dir)
    before = (run_dir / "store.sqlite").stat().st_size
    store = RunStore(run_dir).claim()  # no live run may write while the file is rebuilt
    try:
        dropped = store.compact()
    finally:
        store.close()
    after = (run_dir / "store.sqlite").stat().st_size
    print(
        f"{run_dir / 'store.sqlite'}: kept the latest run's cells, dropped {dropped} of earlier "
        f"runs; {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify_run

    report = verify_run(args.run_dir, sample=args.sample, seed=args.seed)
    print("\n".join(report.lines()))
    return 0 if report.passed else 1


def _train(args: argparse.Namespace) -> int:
    from .models.shipped import shipped_models

    if args.list:
        models = shipped_models()
        for m in models:
            print(f"{m.name:<26} {m.kind:<11} {m.bytes:>9,} B  sha256 {m.sha256[:16]}  {m.title}")
        total = sum(m.bytes for m in models)
        print(f"{len(models)} shipped models, {total:,} bytes (nicebench/weights)")
        return 0
    if not args.names and not args.all:
        raise ValueError("name the shipped models to retrain, or pass --all (--list lists them)")
    from .retrain import retrain, select_shipped

    code = 0
    for entry in select_shipped(args.names, args.all):
        result = retrain(entry, keep=Path(args.keep) if args.keep else None)
        print("\n".join(result.lines()), flush=True)
        code = code if result.bitwise else 1
    return code


_PLUGINS_HELP = (
    "local plugin module to load first: a dotted module name or a .py file "
    "(repeatable or comma-separated; also $NICEBENCH_PLUGINS, os.pathsep-separated)"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nicebench", description=__doc__)
    p.add_argument("--plugins", action="append", metavar="MODULE_OR_FILE", help=_PLUGINS_HELP)
    # the same option after the command (`nicebench list --plugins x.py`); SUPPRESS keeps a value
    # given before the command
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--plugins",
        action="append",
        metavar="MODULE_OR_FILE",
        default=argparse.SUPPRESS,
        help=_PLUGINS_HELP,
    )
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser(
        "list",
        parents=[common],
        help="list registered methods, codecs, datasets, models or metrics (and failed plugins)",
    )
    ls.add_argument(
        "kind", nargs="?", choices=["methods", "codecs", "datasets", "models", "metrics"]
    )
    ls.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'nice*'")
    ls.set_defaults(func=_list)

    r = sub.add_parser(
        "run", parents=[common], help="run a leaderboard (default: the offline default leaderboard)"
    )
    r.add_argument("config", nargs="?", help="TOML config; without it, the default leaderboard")
    r.add_argument("--datasets", action="append", help="e.g. scenes:size=128,fashion-mnist")
    r.add_argument(
        "--models",
        action="append",
        help="classifiers, e.g. default,scenecnn:seed=1,torchvision:resnet50:"
        "weights=FILE (default: each dataset's own)",
    )
    r.add_argument("--methods", action="append", help="e.g. nice:lam=5,gradcam")
    r.add_argument(
        "--codecs",
        action="append",
        help="compression-track codecs, the first the reference, e.g. jpeg,webp",
    )
    r.add_argument("--metrics", action="append", help="e.g. deletion,insertion")
    r.add_argument(
        "--n-images",
        type=int,
        dest="n_images",
        help="test images per dataset (default: the config's n_images)",
    )
    r.add_argument(
        "--out",
        help="run directory (store, tables, figures, report); default: "
        "runs/<config name>, runs/default without a config",
    )
    r.add_argument("--device", help="cpu or cuda")
    r.add_argument(
        "--batch-size",
        type=int,
        dest="batch_size",
        help="images per forward batch (default: the config's batch_size)",
    )
    r.add_argument(
        "--shard-size",
        type=int,
        dest="shard_size",
        help="images per shard of a cell (default: the config's shard_size)",
    )
    r.add_argument("--executor", choices=["local", "ray"])
    r.add_argument("--address", help="Ray cluster address (with --executor ray)")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument(
        "--cell-timeout",
        type=float,
        dest="cell_timeout",
        metavar="SECONDS",
        help="fail a cell that runs longer and go on (default: the config's "
        "cell_timeout, 3600; 0: no limit)",
    )
    r.add_argument(
        "--lock-timeout",
        type=float,
        dest="lock_timeout",
        metavar="SECONDS",
        help="wait this long for another live run that holds the run directory, then "
        "resume from its cells (default: the config's lock_timeout, 86400; 0: "
        "stop at once)",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        dest="dry_run",
        help="plan the run and say what it would do, computing and writing nothing: each "
        "cell and whether the run directory's store already holds it, the classifiers and "
        "learned methods that would train (not in the model cache), and an estimate of the "
        "run's time from the store's timings of the same dataset, model and method",
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.add_argument(
        "--no-report",
        action="store_true",
        dest="no_report",
        help="write the tables only (no figures, no HTML report)",
    )
    r.set_defaults(func=_run)

    f = sub.add_parser(
        "figures",
        parents=[common],
        help="draw a run's paper figures into RUN_DIR/figures (no model needed)",
    )
    f.add_argument("run_dir", help="a run directory (the --out of `nicebench run`)")
    f.add_argument("--format", default="png,pdf", help="comma-separated: png, pdf, svg")
    f.set_defaults(func=_figures)

    h = sub.add_parser(
        "report", parents=[common], help="write RUN_DIR/report/index.html, one self-contained page"
    )
    h.add_argument("run_dir", help="a run directory (the --out of `nicebench run`)")
    h.add_argument("--figures", action="store_true", help="redraw the figures first")
    h.set_defaults(func=_report)

    c = sub.add_parser(
        "compact",
        parents=[common],
        help="keep only the latest run's cells in RUN_DIR/store.sqlite and shrink "
        "the file (before committing a reference run)",
    )
    c.add_argument("run_dir", help="a run directory (the --out of `nicebench run`)")
    c.set_defaults(func=_compact)

    v = sub.add_parser(
        "verify",
        parents=[common],
        help="check a run store's integrity and cell keys, recompute a sample of "
        "cells (CPU) and compare every stored value bit for bit",
    )
    v.add_argument("run_dir", help="a run directory (the --out of `nicebench run`)")
    v.add_argument("--sample", type=int, default=5, help="finished cells to recompute (default 5)")
    v.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    v.set_defaults(func=_verify)

    t = sub.add_parser(
        "train",
        parents=[common],
        help="retrain shipped reference weights from their recipes and say, per model, whether "
        "the result is bitwise equal to the shipped file (exit status 0 only when all are), "
        "else how close it is",
    )
    t.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="shipped models to retrain, by name or key prefix (see --list)",
    )
    t.add_argument("--all", action="store_true", help="retrain every shipped model")
    t.add_argument(
        "--list",
        action="store_true",
        help="list the shipped models (name, kind, size, SHA-256, what it is) and exit",
    )
    t.add_argument(
        "--keep",
        metavar="DIR",
        help="a model-cache folder to keep the retrained modules in (default: a temporary "
        "one, removed afterwards)",
    )
    t.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .plugins import load_plugins

        load_plugins(args.plugins)
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, ImportError, ConnectionError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
