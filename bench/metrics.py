"""Deletion + insertion throughput on scenes-64, side by side with its two yardsticks.

1. The forward-pass floor: the batched forward throughput (images/s) of the model the metrics run
   (``nb.models.forward_model``: BatchNorm folded; ``folded_forward_speedup`` its gain) divided by the
   forward passes the two metrics need per image (2 × (n_steps + 1)).
2. A straightforward per-image loop of the same definition (one forward pass per step).

ROAD and SRG (``road_*``, ``srg_*`` keys) against the same forward-pass floor: ROAD needs
2 orders × 9 percentages forward passes per image, SRG with the mean and blur fills 2 fills ×
2 orders × (n_steps + 1). ROAD runs with ``solver="auto"`` (scipy's sparse LU on a CPU, one
image per thread; the batched block-Cholesky solve on CUDA) and again with ``solver="torch"``
(``road_torch_images_per_s``); ``road_solve_ms_per_image`` times the sparse LU alone on one
thread (ROAD's imputation before issue 29), ``road_batch_solve_ms_per_image`` the batched
solve alone, ``road_solve_share`` the first over ROAD's time.

Prints one JSON line. Run: ``python bench/metrics.py [--n-images 64] [--n-steps 64]
[--road-images 16]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import nicebench as nb
from nicebench.metrics import deletion, insertion
from nicebench.metrics.reference import deletion_loop, insertion_loop
from nicebench.metrics.road import (
    ROAD_PERCENTAGES,
    linear_impute,
    linear_impute_batch,
    removal_masks,
    road_curves,
)
from nicebench.metrics.srg import morf_lerf_curves
from nicebench.models import forward_model


def _timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (CUDA work finished before the clock stops)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--loop-images", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--road-images", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    ds = nb.load_dataset("scenes", size=64, n=args.n_images)
    model = nb.load_model(ds, device=args.device)
    images = torch.stack([ds[i][0] for i in range(args.n_images)]).to(args.device)
    sal = nb.create_method("gradcam", model).explain(images, model(images).argmax(1))
    n_fwd = 2 * (args.n_steps + 1)

    batch = images.repeat_interleave(max(1, args.batch_size // len(images)), 0)[: args.batch_size]
    fast = forward_model(model)  # the metrics' forward passes: BatchNorm folded
    with torch.no_grad():
        fast(batch)
        t_fwd = _timed(lambda: fast(batch), repeat=3)
        model(batch)
        t_unfolded = _timed(lambda: model(batch), repeat=3)
    fwd_ips = len(batch) / t_fwd
    floor_ips = fwd_ips / n_fwd

    def vectorised():
        deletion(model, images, sal, n_steps=args.n_steps, batch_size=args.batch_size)
        insertion(model, images, sal, n_steps=args.n_steps, batch_size=args.batch_size)

    vectorised()
    vec_ips = args.n_images / _timed(vectorised, repeat=2)

    k = args.loop_images

    def loop():
        deletion_loop(model, images[:k], sal[:k], n_steps=args.n_steps)
        insertion_loop(model, images[:k], sal[:k], n_steps=args.n_steps)

    loop_ips = k / _timed(loop)
    extra = _road_srg(model, images, sal, args, fwd_ips)
    print(
        json.dumps(
            {
                "bench": "metrics",
                "device": args.device,
                "threads": torch.get_num_threads(),
                "n_images": args.n_images,
                "n_steps": args.n_steps,
                "forward_passes_per_image": n_fwd,
                "forward_images_per_s": round(fwd_ips, 1),
                "floor_images_per_s": round(floor_ips, 2),
                "folded_forward_speedup": round(t_unfolded / t_fwd, 3),
                "vectorised_images_per_s": round(vec_ips, 2),
                "loop_images_per_s": round(loop_ips, 3),
                "ratio_to_floor": round(vec_ips / floor_ips, 3),
                "speedup_vs_loop": round(vec_ips / loop_ips, 1),
                **extra,
            }
        )
    )


def _road_srg(model, images, sal, args, fwd_ips: float) -> dict:
    """ROAD's and SRG's (mean + blur fills) images/s and their ratio to the forward-pass floor;
    the share of ROAD's time in the sparse imputation."""
    with torch.no_grad():
        targets = model(images).argmax(1)
    r = min(args.road_images, len(images))
    road_fwd = 2 * len(ROAD_PERCENTAGES)

    def road(solver: str = "auto"):
        road_curves(
            model, images[:r], sal[:r], targets[:r], batch_size=args.batch_size, solver=solver
        )

    road()
    t_road = _timed(road, repeat=2)
    t_road_torch = _timed(lambda: road("torch"))
    ranks = nb.metrics.pixel_ranks(sal[:r])
    masks = removal_masks(ranks).cpu().numpy().reshape(r, road_fwd, *images.shape[-2:])
    host = images[:r].cpu().numpy()

    def solves():
        for i in range(r):
            for m in range(road_fwd):
                linear_impute(host[i], masks[i, m])

    t_solve = _timed(solves)  # one thread, as ROAD's imputation ran before issue 29
    stacked = images[:r, None].expand(-1, road_fwd, -1, -1, -1).flatten(0, 1)
    removed = torch.from_numpy(masks).to(images.device).flatten(0, 1)
    t_batch = _timed(lambda: linear_impute_batch(stacked, removed))
    srg_fwd = 2 * 2 * (args.n_steps + 1)

    def srg():
        for fill in ("mean", "blur"):
            morf_lerf_curves(
                model, images, sal, targets, fill, n_steps=args.n_steps, batch_size=args.batch_size
            )

    srg()
    srg_ips = len(images) / _timed(srg, repeat=2)
    road_ips = r / t_road
    return {
        "road_images": r,
        "road_forward_passes_per_image": road_fwd,
        "road_images_per_s": round(road_ips, 2),
        "road_floor_images_per_s": round(fwd_ips / road_fwd, 2),
        "road_ratio_to_floor": round(road_ips / (fwd_ips / road_fwd), 3),
        "road_solver": "torch" if images.device.type == "cuda" else "scipy",
        "road_torch_images_per_s": round(r / t_road_torch, 2),
        # the imputation alone: sparse LU on one thread (ROAD before issue 29), the batched solve
        "road_solve_ms_per_image": round(1000 * t_solve / r, 1),
        "road_batch_solve_ms_per_image": round(1000 * t_batch / r, 1),
        "road_solve_share": round(t_solve / t_road, 3),
        "srg_forward_passes_per_image": srg_fwd,
        "srg_images_per_s": round(srg_ips, 2),
        "srg_floor_images_per_s": round(fwd_ips / srg_fwd, 2),
        "srg_ratio_to_floor": round(srg_ips / (fwd_ips / srg_fwd), 3),
    }


if __name__ == "__main__":
    main()
