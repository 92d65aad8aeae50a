"""Cost of explaining with the trained NICE generator vs one classifier forward pass per image.

Both run on the same batch, on the same device, interleaved, repeated; the median per-image times
and their ratio are printed as one JSON line. Trains (or loads from the cache) ``nice`` with its
default parameters first.

    python bench/nice_explain.py [--dataset scenes] [--size 64] [--batch 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import nicebench as nb
from nicebench.data import collate
from nicebench.registry import get_method_class


def _time(fn, sync) -> float:
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scenes")
    ap.add_argument("--size", type=int, default=64, help="image size (scenes only)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--generator", default="small")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dparams = {"size": args.size} if args.dataset == "scenes" else {}
    test = nb.load_dataset(args.dataset, **dparams)
    model = nb.load_model(test, device=args.device)
    nice = get_method_class("nice")(model, generator=args.generator).fit(test.train_split())
    images, labels = collate([test[i] for i in range(args.batch)])[:2]
    images, labels = images.to(args.device), labels.to(args.device)

    def sync() -> None:
        if images.device.type == "cuda":
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def explain() -> None:
        nice.explain(images, labels)

    for _ in range(3):  # warm-up
        forward()
        explain()
    t_fwd, t_exp = [], []
    for _ in range(args.repeats):
        t_fwd.append(_time(forward, sync))
        t_exp.append(_time(explain, sync))
    fwd, exp = statistics.median(t_fwd), statistics.median(t_exp)
    print(
        json.dumps(
            {
                "bench": "nice_explain",
                "dataset": args.dataset,
                "size": int(images.shape[-1]),
                "generator": args.generator,
                "device": str(images.device),
                "threads": args.threads,
                "batch": args.batch,
                "classifier_forward_ms_per_image": round(1e3 * fwd / args.batch, 4),
                "nice_explain_ms_per_image": round(1e3 * exp / args.batch, 4),
                "ratio_explain_to_forward": round(exp / fwd, 3),
                "target_ratio_max": 2.0,
            }
        )
    )


if __name__ == "__main__":
    main()
