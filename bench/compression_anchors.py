"""Reproduce the docs/design.md §6 compression anchors on scenes (JPEG q75 4:2:0, optimize=True).

For each size: the reference bytes and header, accuracy on the originals and on the reference,
uniform quality q50/q30, and the oracle mask (the dataset's ground-truth mask, snapped to the 8×8
grid, dilated one block unless noted) with the background ×4 bilinear, ×8 bilinear, ×8 nearest.
Each mixed-resolution point is set beside uniform-quality coding at the same ratio (the JPEG
sweep q5…q95, accuracy interpolated) and at the same accuracy (ratio interpolated with PCHIP),
so the output says plainly when uniform quality reduction wins. ``--methods`` adds the per-method
summary (headline ratio, BD rate) for maps that need no training.

    OMP_NUM_THREADS=1 NICEBENCH_CACHE="$(mktemp -d)" python bench/compression_anchors.py --sizes 64

Prints one JSON line and writes ``results/compression_anchors.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.interpolate import PchipInterpolator

import nicebench as nb
from nicebench.codec import Coded
from nicebench.compression import compress, summarise
from nicebench.compression.rate import operating_points, pareto_front
from nicebench.metrics.compression_track import compression_rows, quality_sweep_rows
from nicebench.models import load_model_path

ORACLE = {  # name: compression settings for the ground-truth mask
    "oracle_x4_bilinear": {"factor": 4, "upsample": "bilinear", "dilate": 1},
    "oracle_x8_bilinear": {"factor": 8, "upsample": "bilinear", "dilate": 1},
    "oracle_x8_nearest": {"factor": 8, "upsample": "nearest", "dilate": 1},
    "oracle_x8_nearest_undilated": {"factor": 8, "upsample": "nearest", "dilate": 0},
    "oracle_x8_nearest_mcu16": {"factor": 8, "upsample": "nearest", "dilate": 0, "block": 16},
}
SPEC_64 = {  # docs/design.md §6, the scenes-64 prototype (500 images): (ratio, accuracy)
    "reference_bytes": 1281,
    "accuracy_original": 0.942,
    "accuracy_reference": 0.900,
    "uniform_q50": (0.74, 0.822),
    "uniform_q30": (0.60, 0.746),
    "oracle_x8_bilinear": (0.75, 0.896),
    "oracle_x4_bilinear": (0.81, 0.900),
    "oracle_x8_nearest_undilated": (0.57, 0.878),
    "jpeg_header": 285,
}


def _flat_jpeg_bytes(size: int) -> int:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(
        buf, format="JPEG", quality=75, optimize=True, subsampling=2
    )
    return len(buf.getvalue())


def _uniform_at(sw: pd.DataFrame, ratio: float, accuracy: float) -> dict[str, float]:
    """Uniform-quality accuracy at ``ratio`` and ratio at ``accuracy`` (NaN outside the sweep)."""
    by_ratio = sw.sort_values("ratio")
    acc_at_ratio = float(np.interp(ratio, by_ratio["ratio"], by_ratio["accuracy"], np.nan, np.nan))
    b, a = pareto_front(sw["ratio"].to_numpy(), sw["accuracy"].to_numpy())
    ratio_at_acc = float("nan")
    if len(a) >= 2 and a[0] <= accuracy <= a[-1]:
        ratio_at_acc = float(np.exp(PchipInterpolator(a, np.log(b))(accuracy)))
    return {
        "uniform_accuracy_at_equal_ratio": round(acc_at_ratio, 4),
        "uniform_ratio_at_equal_accuracy": round(ratio_at_acc, 4),
        "bytes_saved_vs_uniform_at_equal_accuracy": round(1 - ratio / ratio_at_acc, 4),
    }


def bytes_only(size: int, n: int) -> dict:
    """Ratios without a classifier: uniform q50/q30, the oracle settings and the floor (the
    object on a flat background of the image's mean colour)."""
    t0 = time.perf_counter()
    ds = nb.load_dataset("scenes", size=size, n=n)
    x, _, m = nb.collate([ds[i] for i in range(n)])
    mask = m > 0.5
    ref = compress(x, torch.ones_like(mask))
    out: dict = {
        "size": size,
        "n_images": n,
        "accuracy": "no trained classifier in the cache",
        "reference_bytes": round(float(ref.ref_nbytes.mean()), 1),
        "reference_header_bytes": round(float(ref.ref_header.mean()), 1),
        "flat_image_jpeg_bytes": _flat_jpeg_bytes(size),
    }
    for q in (50, 30):
        r = compress(x, torch.ones_like(mask), quality=q)
        out[f"uniform_q{q}"] = {"ratio": round(float(r.nbytes.sum() / ref.ref_nbytes.sum()), 4)}
    settings = {**ORACLE, "floor_flat_background": {"factor": size, "dilate": 0}}
    for name, cfg in settings.items():
        r = compress(x, mask, reference=roundtrip_of(ref), **cfg)
        out[name] = {
            "ratio": round(r.total_ratio, 4),
            "payload_ratio": round(
                float((r.nbytes - r.header).sum() / (r.ref_nbytes - r.ref_header).sum()), 4
            ),
            "area": round(float(r.area.mean()), 4),
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def roundtrip_of(res) -> Coded:
    """The reference of a :class:`CompressionResult` as a :class:`Coded`, to reuse it."""
    return Coded(
        streams=[],
        nbytes=res.ref_nbytes,
        header=res.ref_header,
        decoded=(res.reference * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(),
    )


def _method_maps(name: str, model, x, y, m) -> torch.Tensor:
    method = nb.registry.get_method_class(name)(model)
    kw = {"masks": m} if method.needs_masks else {}
    return torch.cat(
        [
            method.explain(
                x[i : i + 100], y[i : i + 100], **{k: v[i : i + 100] for k, v in kw.items()}
            )
            for i in range(0, len(x), 100)
        ]
    )


def anchors(size: int, n: int, methods: list[str], factors: tuple[int, ...] = (4, 8)) -> dict:
    t0 = time.perf_counter()
    ds = nb.load_dataset("scenes", size=size, n=n)
    x, y, m = nb.collate([ds[i] for i in range(n)])
    model = nb.load_model("scenes", size=size)
    sweep = pd.DataFrame(quality_sweep_rows(model, x, y, "jpeg"))
    sw = operating_points(sweep, "quality").set_index("quality", drop=False)
    out: dict = {
        "size": size,
        "n_images": n,
        "classifier": load_model_path(ds).stem,
        "reference_bytes": round(float(sweep["ref_bytes"].iloc[:n].mean()), 1),
        "reference_header_bytes": round(float(sweep["ref_header_bytes"].iloc[:n].mean()), 1),
        "flat_image_jpeg_bytes": _flat_jpeg_bytes(size),
        "reference_bpp": round(float(sweep["ref_bpp"].iloc[:n].mean()), 3),
        "accuracy_original": round(float(sweep["correct_original"].iloc[:n].mean()), 4),
        "accuracy_reference": round(float(sweep["correct_reference"].iloc[:n].mean()), 4),
    }
    for q in (50, 30):
        r = sw.loc[q]
        out[f"uniform_q{q}"] = {
            "ratio": round(r["ratio"], 4),
            "payload_ratio": round(r["payload_ratio"], 4),
            "accuracy": round(r["accuracy"], 4),
            "agreement": round(r["agreement"], 4),
        }
    out["jpeg_sweep"] = {
        int(q): [round(r["ratio"], 4), round(r["accuracy"], 4)] for q, r in sw.iterrows()
    }
    for name, cfg in {**ORACLE, "floor_flat_background": {"factor": size, "dilate": 0}}.items():
        rows = pd.DataFrame(compression_rows(model, x, y, None, binary_mask=m, **cfg))
        r = operating_points(rows, "point").iloc[0]
        out[name] = {
            "ratio": round(r["ratio"], 4),
            "payload_ratio": round(r["payload_ratio"], 4),
            "accuracy": round(r["accuracy"], 4),
            "agreement": round(r["agreement"], 4),
            "area": round(float(rows["area"].mean()), 4),
            "psnr": round(r["psnr"], 2),
            **_uniform_at(sw, r["ratio"], r["accuracy"]),
        }

    def brief(s: dict) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}

    if methods:  # the codec-only row: JPEG's own sweep against itself (BD 0 by construction)
        out["jpeg_codec_only"] = brief(summarise(sweep, sweep))
    for factor in factors:
        summaries = {}
        for name in methods:
            sal = _method_maps(name, model, x, y, m)
            pts = compression_rows(model, x, y, sal, gt_masks=m, factor=factor)
            summaries[name] = brief(summarise(pts, sweep))
        if summaries:
            out[f"methods_keep_sweep_x{factor}"] = summaries
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _finite(obj):
    """NaN → None, so the output is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--methods", nargs="*", default=["oracle", "random", "center"])
    p.add_argument("--factors", type=int, nargs="+", default=[4, 8], help="for --methods")
    p.add_argument("--out", default="results/compression_anchors.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {
        "codec": "jpeg",
        "quality": 75,
        "subsampling": "4:2:0",
        "optimize": True,
        "spec_64": SPEC_64,
        "sizes": {},
    }
    for size in args.sizes:
        ds = nb.load_dataset("scenes", size=size)
        if load_model_path(ds).exists():
            result["sizes"][str(size)] = anchors(size, args.n, args.methods, tuple(args.factors))
        else:
            result["sizes"][str(size)] = bytes_only(size, args.n)
    line = json.dumps(_finite(result))
    print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(_finite(result), indent=1) + "\n")


if __name__ == "__main__":
    main()
