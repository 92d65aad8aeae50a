"""What keeping the figures' data costs a run: time and store size, side by side in one process.

Runs the same config (default: the default leaderboard's metrics and fast methods on scenes-64,
100 images) into two fresh run directories, alternately with and without the figure data (every
image's deletion/insertion curves, the sample's maps, gate masks and images), ``--repeat`` times,
in alternating order, and prints one JSON line: the best wall time of each, their ratio, and
both stores' sizes.
Run: ``python bench/figure_data.py [--methods random,gradcam,nice] [--n-images 100]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import torch

from nicebench import runner
from nicebench.config import parse_specs
from nicebench.metrics import MetricContext


def _no_keep(*args, **kwargs) -> None:  # keeps nothing
    return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="scenes:size=64")
    p.add_argument("--methods", default="random,center,saliency,gradcam,rtsal,nice")
    p.add_argument("--codecs", default="jpeg,webp")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    cfg = runner.default_config(
        datasets=parse_specs(args.datasets),
        methods=parse_specs(args.methods),
        codecs=parse_specs(args.codecs),
        n_images=args.n_images,
    )
    runner.run(replace(cfg, out=tempfile.mkdtemp()), progress=False)  # train, warm caches
    times: dict[str, list[float]] = {"keep": [], "none": []}
    sizes: dict[str, int] = {}
    for rep in range(args.repeat):
        for mode in ("keep", "none") if rep % 2 == 0 else ("none", "keep"):  # alternate order
            out = Path(tempfile.mkdtemp())
            with contextlib.ExitStack() as stack:
                if mode == "none":
                    stack.enter_context(mock.patch.object(MetricContext, "keep", _no_keep))
                    stack.enter_context(mock.patch.object(runner, "_keep_sample", _no_keep))
                t0 = time.perf_counter()
                runner.run(replace(cfg, out=str(out)), progress=False)
                times[mode].append(time.perf_counter() - t0)
            sizes[mode] = (out / "store.sqlite").stat().st_size
            shutil.rmtree(out)
    best = {mode: min(t) for mode, t in times.items()}
    print(
        json.dumps(
            {
                "bench": "figure_data",
                "datasets": args.datasets,
                "methods": args.methods,
                "codecs": args.codecs,
                "n_images": args.n_images,
                "threads": torch.get_num_threads(),
                "seconds_with": round(best["keep"], 2),
                "seconds_without": round(best["none"], 2),
                "time_ratio": round(best["keep"] / best["none"], 3),
                "store_mb_with": round(sizes["keep"] / 2**20, 2),
                "store_mb_without": round(sizes["none"] / 2**20, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
