"""rtsal explain throughput against the classifier's own forward throughput (one JSON line).

Same batch of scenes test images, same device, interleaved repeats, median times. The rtsal
decoder is trained on first use (cached under NICEBENCH_CACHE) before timing starts.

    python bench/rtsal_speed.py [--size 64] [--batch 256] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import nicebench as nb
from nicebench.registry import get_method_class


def _time(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    ds = nb.load_dataset("scenes", size=args.size)
    model = nb.load_model(ds, device=device)
    method = get_method_class("rtsal")(model)
    t0 = time.perf_counter()
    method.fit(ds.train_split())
    fit_s = time.perf_counter() - t0
    images, labels = nb.collate([ds[i][:2] for i in range(args.batch)])
    images, labels = images.to(device), labels.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def explain() -> None:
        method.explain(images, labels)

    forward(), explain(), sync()  # warm-up
    t_fwd, t_exp = [], []
    for _ in range(args.repeats):
        t_fwd.append(_time(forward, sync))
        t_exp.append(_time(explain, sync))
    fwd, exp = statistics.median(t_fwd), statistics.median(t_exp)
    print(
        json.dumps(
            {
                "bench": "rtsal_speed",
                "dataset": f"scenes-{args.size}",
                "device": str(device),
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "classifier_images_per_s": round(args.batch / fwd, 1),
                "rtsal_images_per_s": round(args.batch / exp, 1),
                "ratio": round(fwd / exp, 3),
                "fit_or_load_s": round(fit_s, 2),
                "taps": [name for name, _ in method.taps],
            }
        )
    )


if __name__ == "__main__":
    main()
