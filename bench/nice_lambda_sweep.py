"""NICE over a sweep of λ: mask share, accuracy on the masked images, deletion / insertion.

Trains (or loads from the cache) one ``nice`` generator per λ with otherwise default parameters,
evaluates it on the test split and writes ``results/nice_lambda_sweep_<dataset>.csv`` and the mask
grid ``results/figures/nice_masks_over_lambda_<dataset>.png`` (rows: test images; columns: the
image, then the image times its test-time mask at each λ, like the authors' figure). Prints one
JSON line.

    python bench/nice_lambda_sweep.py [--dataset scenes] [--size 64] [--preset nice|authors]
        [--lams 1,2,4] [--params reference=zero,epochs=4] [--n-test 1000] [--n-faith 250]

``--preset authors`` trains with the public NICE code's settings and λ ∈ {1, 5, 10, 15, 20} and
writes ``..._authors.csv`` / ``..._authors.png``; ``--params`` overrides a preset's parameters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

import nicebench as nb
from nicebench.data import collate
from nicebench.metrics import deletion, insertion, pointing_game
from nicebench.metrics.gate import mask_share, masked_correct
from nicebench.registry import get_method_class

# λ sweeps per preset: "nice" = this benchmark's defaults (low-resolution reference, small
# generator, TV); "authors" = the public NICE code's settings (zero reference, one 3×3 conv,
# Adam 1e-3, batch 100, 10 epochs, no TV) with its λ ∈ {1, 5, 10, 15, 20}
PRESETS = {
    "nice": {"lams": [0.2, 0.4, 0.5, 0.55, 0.6, 1, 2], "params": {}},
    "authors": {
        "lams": [1, 5, 10, 15, 20],
        "params": {
            "generator": "tiny",
            "reference": "zero",
            "mu": 0.0,
            "lr": 1e-3,
            "batch_size": 100,
            "epochs": 10,
        },
    },
}


def _parse_params(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        k, v = item.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                continue
        out[k] = v
    return out


def _figure(images: torch.Tensor, masks: list[torch.Tensor], lams: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = images.shape[0], len(lams) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    gray = images.shape[1] == 1
    for r in range(rows):
        panels = [images[r]] + [images[r] * m[r] for m in masks]
        for c, p in enumerate(panels):
            ax = axes[r, c]
            arr = p.permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(arr[..., 0] if gray else arr, cmap="gray" if gray else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("image" if c == 0 else f"λ={lams[c - 1]:g}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scenes")
    ap.add_argument("--size", type=int, default=64, help="image size (scenes only)")
    ap.add_argument("--preset", default="nice", choices=sorted(PRESETS))
    ap.add_argument("--lams", default=None, help="comma-separated λ values")
    ap.add_argument("--params", default="", help="other nice parameters, key=value,...")
    ap.add_argument("--n-test", type=int, default=1000, help="images for share and accuracy")
    ap.add_argument("--n-faith", type=int, default=250, help="images for deletion/insertion")
    ap.add_argument("--n-figure", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    lams = [float(v) for v in args.lams.split(",")] if args.lams else preset["lams"]
    params = {**preset["params"], **_parse_params(args.params)}
    tag = args.dataset + ("" if args.preset == "nice" else f"_{args.preset}")
    dparams = {"size": args.size} if args.dataset == "scenes" else {}
    test = nb.load_dataset(args.dataset, **dparams)
    model = nb.load_model(test, device=args.device)
    n = min(args.n_test, len(test))
    items = collate([test[i] for i in range(n)])
    images, labels = items[0].to(args.device), items[1].to(args.device)
    obj_masks = items[2].to(args.device) if len(items) > 2 else None
    nf = min(args.n_faith, n)
    cls = get_method_class("nice")
    rows, fig_masks = [], []
    t_all = time.perf_counter()
    for lam in lams:
        m = cls(model, lam=lam, **params).fit(test.train_split())
        shares, ok_masked, ok_plain, sal_f = [], [], [], []
        for lo in range(0, n, 250):
            x, y = images[lo : lo + 250], labels[lo : lo + 250]
            keep = m.binary_mask(x)
            shares.append(mask_share(keep))
            ok_masked.append(masked_correct(model, x, keep, m.composite, y))
            with torch.no_grad():
                ok_plain.append((model(x).argmax(1) == y).float())
            if lo < nf:
                sal_f.append(m.explain(x, y))
        sal = torch.cat(sal_f)[:nf]
        xf = images[:nf]
        row = {
            "dataset": args.dataset,
            "size": int(images.shape[-1]),
            "lam": lam,
            "n_images": n,
            "mask_share": torch.cat(shares).mean().item(),
            "accuracy": torch.cat(ok_plain).mean().item(),
            "accuracy_masked": torch.cat(ok_masked).mean().item(),
            "n_faith": nf,
            "deletion_auc": deletion(model, xf, sal).mean().item(),
            "insertion_auc": insertion(model, xf, sal).mean().item(),
            "train_seconds": m.train_info.get("train_seconds"),
            **{k: v for k, v in m.params().items() if k != "lam"},
            "n_train": m.train_info.get("n_train", m.n_train),  # images trained on
        }
        if obj_masks is not None:
            row["pointing_game"] = pointing_game(sal, obj_masks[:nf]).mean().item()
        row["accuracy_gap"] = row["accuracy"] - row["accuracy_masked"]
        rows.append(row)
        fig_masks.append(m.explain(images[: args.n_figure], labels[: args.n_figure]).cpu())
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"nice_lambda_sweep_{tag}.csv"
    df.to_csv(csv, index=False)
    fig = out / "figures" / f"nice_masks_over_lambda_{tag}.png"
    _figure(images[: args.n_figure].cpu(), fig_masks, lams, fig)
    shares = df["mask_share"].tolist()
    print(
        json.dumps(
            {
                "bench": "nice_lambda_sweep",
                "dataset": args.dataset,
                "preset": args.preset,
                "csv": str(csv),
                "figure": str(fig),
                "lams": lams,
                "mask_share": [round(s, 4) for s in shares],
                "accuracy": round(rows[0]["accuracy"], 4),
                "accuracy_masked": [round(r["accuracy_masked"], 4) for r in rows],
                "deletion_auc": [round(r["deletion_auc"], 4) for r in rows],
                "insertion_auc": [round(r["insertion_auc"], 4) for r in rows],
                "pointing_game": [round(r.get("pointing_game", float("nan")), 4) for r in rows],
                "train_seconds": [
                    r["train_seconds"] and round(r["train_seconds"], 1) for r in rows
                ],
                "sparsity_monotone": all(a >= b for a, b in zip(shares, shares[1:], strict=False)),
                "seconds": round(time.perf_counter() - t_all, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
