"""Benchmark of the batch gate optimizer (``nice-opt``); prints one JSON line.

1. CPU: the batched optimizer (one ``explain`` call on a batch of scenes-64 test images, trained
   classifier from ``nb.load_model``) against a per-image loop of the same optimizer and the same
   reference gate step (``explain`` on one image at a time), images/s each, measured side by side
   with the same parameters (per-image early stopping applies to both, identically), each at
   fp32 and at bf16 autocast; the headline speed-up takes the batched optimizer at its default
   precision against the faster of the loop's two.
2. GPU (skipped with a note when there is no CUDA device or no Triton): the fused gate step
   (Triton, forward + backward) against the unfused PyTorch ops on the same tensors; and the whole
   optimizer's images/s on torchvision ResNet-50 (random init) at 224 px against the limit
   ``T × (one forward+backward of the classifier)`` at the same batch, bf16 autocast and
   channels_last, as a ratio.

    NICEBENCH_CACHE="$(mktemp -d)" OMP_NUM_THREADS=1 python bench/gate_optimizer.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import nicebench as nb
from nicebench.gates import fused
from nicebench.models import native_cpu_bf16, predict
from nicebench.registry import METHODS


def _cpu(args: argparse.Namespace) -> dict:
    model = nb.load_model("scenes", size=64)
    ds = nb.load_dataset("scenes", split="test", size=64, n=args.batch)
    images, _, _ = nb.collate([ds[i] for i in range(len(ds))])
    targets = predict(model, images)
    cls = METHODS.get("nice-opt")
    precisions = ("fp32", "bf16")

    def batched(precision: str) -> tuple[float, torch.Tensor, dict]:
        m = cls(model, steps=args.steps, precision=precision)
        t0 = time.perf_counter()
        maps = m.explain(images, targets)
        return time.perf_counter() - t0, maps, m.last_stats

    def loop(precision: str) -> tuple[float, torch.Tensor, float]:
        maps, steps = [], []
        t0 = time.perf_counter()
        for i in range(args.loop_images):
            m = cls(model, steps=args.steps, precision=precision)
            maps.append(m.explain(images[i : i + 1], targets[i : i + 1]))
            steps.append(m.last_stats["steps_mean"])
        return time.perf_counter() - t0, torch.cat(maps), sum(steps) / len(steps)

    # interleave the arms so load changes on a shared machine hit all of them
    t_b = {p: [] for p in precisions}
    t_l = {p: [] for p in precisions}
    maps_b, maps_l, stats, loop_steps = {}, {}, {}, {}
    for _ in range(args.repeats):
        for p in precisions:
            tb, maps_b[p], stats[p] = batched(p)
            tl, maps_l[p], loop_steps[p] = loop(p)
            t_b[p].append(tb)
            t_l[p].append(tl)
    ips_b = {p: args.batch / min(t_b[p]) for p in precisions}
    ips_l = {p: args.loop_images / min(t_l[p]) for p in precisions}
    default = "bf16" if cls(model).uses_bf16("cpu") else "fp32"
    best_loop = max(precisions, key=ips_l.get)
    n = args.loop_images
    return {
        "dataset": "scenes-64 test",
        "classifier": "scenecnn (nb.load_model('scenes', size=64))",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "loop_images": n,
        "params": {**cls.default_params(), "steps": args.steps},
        "gate_impl": fused.resolve_impl("cpu"),
        "native_cpu_bf16": native_cpu_bf16(),
        "default_precision": default,
        "batched_images_per_s": {p: round(v, 2) for p, v in ips_b.items()},
        "loop_images_per_s": {p: round(v, 2) for p, v in ips_l.items()},
        "speedup": round(ips_b[default] / ips_l[best_loop], 2),
        "speedup_against": f"batched at {default} (the default) vs the loop at {best_loop} "
        "(the faster precision for one image at a time)",
        "speedup_same_precision": {p: round(ips_b[p] / ips_l[p], 2) for p in precisions},
        "batched_seconds": {p: [round(t, 3) for t in v] for p, v in t_b.items()},
        "loop_seconds": {p: [round(t, 3) for t in v] for p, v in t_l.items()},
        "steps_mean_batched": {p: v["steps_mean"] for p, v in stats.items()},
        "steps_mean_loop": loop_steps,
        "max_map_diff_loop_vs_batch": {
            p: (maps_l[p] - maps_b[p][:n]).abs().max().item() for p in precisions
        },
        "binary_mask_agreement_bf16_vs_fp32": (
            ((maps_b["bf16"] >= 0.5) == (maps_b["fp32"] >= 0.5)).float().mean().item()
        ),
    }


def _cuda_time(fn, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs, timed with CUDA events after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def _gpu(args: argparse.Namespace) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine: the GPU figures are owed"}
    if not fused.HAS_TRITON:
        return {"skipped": "Triton is not installed: the GPU figures are owed"}
    import torchvision

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    b, size, cell, samples = args.gpu_batch, 224, 8, 1
    h = size // cell
    x = torch.rand(b, 3, size, size, device=dev, generator=gen)
    r = torch.rand(b, 3, size, size, device=dev, generator=gen)
    la = torch.randn(b, 1, h, h, device=dev, generator=gen).requires_grad_(True)
    seeds = torch.arange(b, device=dev)
    g_out = torch.randn(samples * b, 3, size, size, device=dev, generator=gen)
    g_vec = torch.randn(b, device=dev, generator=gen)

    def step(fn):
        def run():
            out, l0, tv = fn(la, x, r, seeds, 0, cell=cell, samples=samples)
            loss = (out * g_out).sum() + (l0 * g_vec).sum() + (tv * g_vec).sum()
            torch.autograd.grad(loss, la)

        return run

    def step_ops(fn):  # forward + backward of the gate step alone, without the loss reductions
        def run():
            out, l0, tv = fn(la, x, r, seeds, 0, cell=cell, samples=samples)
            torch.autograd.backward((out, l0, tv), (g_out, g_vec, g_vec))

        return run

    t_fused = _cuda_time(step_ops(fused.gate_step_triton), args.reps)
    t_ref = _cuda_time(step_ops(fused.gate_step_reference), args.reps)
    t_fused_loss = _cuda_time(step(fused.gate_step_triton), args.reps)
    t_ref_loss = _cuda_time(step(fused.gate_step_reference), args.reps)

    net = torchvision.models.resnet50(weights=None).to(dev).eval().requires_grad_(False)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = torch.randint(0, 1000, (b,), device=dev, generator=gen)

    def fwd_bwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = net(xc)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        torch.autograd.grad(loss, xc)

    t_fb = _cuda_time(fwd_bwd, args.reps)
    steps = args.gpu_steps
    cls = METHODS.get("nice-opt")  # a fresh method per run: explain memoises its last batch
    t_opt = _cuda_time(
        lambda: cls(net, steps=steps, cell=cell, patience=0).explain(x, y), max(3, args.reps // 5)
    )
    limit = b / (steps * t_fb)
    achieved = b / t_opt
    return {
        "device": torch.cuda.get_device_name(dev),
        "gate_step": {
            "shape": [b, 3, size, size],
            "cell": cell,
            "samples": samples,
            "fused_ms": round(t_fused * 1e3, 3),
            "unfused_ms": round(t_ref * 1e3, 3),
            "speedup": round(t_ref / t_fused, 2),
            "with_loss_fused_ms": round(t_fused_loss * 1e3, 3),
            "with_loss_unfused_ms": round(t_ref_loss * 1e3, 3),
        },
        "optimizer_resnet50_224": {
            "batch": b,
            "steps": steps,
            "gate_impl": fused.resolve_impl(dev),
            "fwd_bwd_ms": round(t_fb * 1e3, 3),
            "limit_images_per_s": round(limit, 2),
            "images_per_s": round(achieved, 2),
            "ratio_to_limit": round(achieved / limit, 3),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64, help="images in the batched CPU run")
    p.add_argument("--loop-images", type=int, default=16, help="images in the per-image loop")
    p.add_argument("--steps", type=int, default=40, help="T on CPU")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--gpu-steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--skip-cpu", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = {"bench": "gate_optimizer", "host": platform.node(), "torch": torch.__version__}
    out["cpu"] = {"skipped": "--skip-cpu"} if args.skip_cpu else _cpu(args)
    out["gpu"] = _gpu(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
