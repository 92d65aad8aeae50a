"""The deletion engine against the forward-pass limit (issue 15); prints one JSON line.

For each model and batch size B: one ``nb.metrics.deletion`` call with ``n_steps`` steps (target
"pred", as the runner's default) against ``n_steps + 1`` plain batched forward passes of the same
B images in inference mode through the model the engine runs (``nb.models.forward_model``:
BatchNorm folded; ``folded_forward_speedup`` is its gain over the model as loaded) — the forward
passes the definition needs and no more. The ratio
``t(forwards) / t(deletion)`` is 1.0 at the limit; it can pass 1 where the engine's chunks run
faster per image than batch B. Both arms alternate, best of ``--repeats`` rounds or as many more as
give each arm ``--min-seconds`` in all (short timings are noisy; at most 100); same device, dtype and
memory format. Models: the scenes-64 classifier's architecture (scenecnn, weights drawn from seed
0: speed does not depend on training; channels-last on a CPU, as ``nb.load_model`` runs it) and a torchvision ResNet (random init) at 224 px,
channels-last on a GPU.

    python bench/deletion_engine.py [--device cpu|cuda] [--batches 16 64 256] [--n-steps 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torchvision

import nicebench as nb
from nicebench.metrics import deletion
from nicebench.models import forward_model
from nicebench.models.architectures import build_arch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _ratio(model, images, n_steps, device, repeats, min_seconds=2.0) -> dict:
    gen = torch.Generator().manual_seed(0)
    sal = torch.rand(len(images), 1, *images.shape[-2:], generator=gen).to(device)

    fast = forward_model(model)  # what the engine runs: BatchNorm folded

    def forwards():
        with torch.inference_mode():
            for _ in range(n_steps + 1):
                fast(images)

    def unfolded():
        with torch.inference_mode():
            for _ in range(n_steps + 1):
                model(images)

    def engine():
        deletion(model, images, sal, n_steps=n_steps)

    t_f, t_d, t_u = [], [], []
    # alternate the arms so load changes hit both
    while len(t_f) < repeats or (min(sum(t_f), sum(t_d)) < min_seconds and len(t_f) < 100):
        t_f.append(_best(forwards, device, 1))
        t_d.append(_best(engine, device, 1))
        t_u.append(_best(unfolded, device, 1))
    return {
        "batch": len(images),
        "forward_limit_s": round(min(t_f), 4),
        "deletion_s": round(min(t_d), 4),
        "ratio": round(min(t_f) / min(t_d), 3),
        "folded_forward_speedup": round(min(t_u) / min(t_f), 3),
        "rounds": len(t_f),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--resnet", default=None, help="resnet18 on CPU, resnet50 on a GPU")
    p.add_argument("--resnet-batches", type=int, nargs="+", default=None)
    p.add_argument("--n-steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=2.0)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    out = {
        "bench": "deletion_engine",
        "device": torch.cuda.get_device_name(device)
        if gpu
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "n_steps": args.n_steps,
        "models": {},
    }

    ds = nb.load_dataset("scenes", split="test", size=64, n=max(args.batches))
    # as nb.load_model runs it: channels-last on a CPU (where it is faster), NCHW on a GPU
    small = build_arch("scenecnn", ds, seed=0).to(device).eval().use_channels_last(not gpu)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).to(device)
    out["models"]["scenecnn-64"] = [
        _ratio(small, x[:b], args.n_steps, device, args.repeats, args.min_seconds)
        for b in args.batches
    ]
    name = args.resnet or ("resnet50" if gpu else "resnet18")
    big = getattr(torchvision.models, name)(weights=None).to(device).eval()
    if gpu:
        big = big.to(memory_format=torch.channels_last)
    rb = args.resnet_batches or ([16, 64] if gpu else [16])
    gen = torch.Generator().manual_seed(1)
    xr = torch.rand(max(rb), 3, 224, 224, generator=gen).to(device)
    if gpu:
        xr = xr.contiguous(memory_format=torch.channels_last)
    out["models"][f"{name}-224"] = [
        _ratio(big, xr[:b], args.n_steps, device, args.repeats, args.min_seconds) for b in rb
    ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
