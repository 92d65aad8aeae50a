"""Figures drawn from a run's tables (no models needed): the rate–accuracy plot per dataset
(and classifier, when a run has several)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["rate_accuracy_figures"]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def rate_accuracy_figures(points: pd.DataFrame, out: str | Path) -> list[Path]:
    """One PNG per dataset: every method's operating points (ratio to the reference file vs the
    classifier's accuracy on the decoded images) and each codec's quality-sweep curve (the rows of
    ``kind`` ``"codec"``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for (dataset, model), part in points.groupby(["dataset", "model"], sort=False):
        if model != "default":
            dataset = f"{dataset} · {model}"
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 colours: a dozen methods stay apart
        sweep_mask = part["kind"] == "codec"
        styles = ["-", "--", "-.", ":"]  # one line style per codec, in grey: not a method's colour
        for i, (method, pts) in enumerate(part[sweep_mask].groupby("method", sort=False)):
            pts = pts.sort_values("ratio")
            ax.plot(pts.ratio, 100 * pts.accuracy, styles[i % len(styles)], color="0.25", lw=1.6,
                    label=f"{method} quality sweep")  # fmt: skip
        for method, pts in part[~sweep_mask].groupby("method", sort=False):
            pts = pts.sort_values("ratio")
            ax.plot(pts.ratio, 100 * pts.accuracy, "o-", ms=4, lw=0.8, label=method)
        ref = part.accuracy_reference.mean()
        ax.axhline(100 * ref, color="0.6", ls=":", lw=1)
        ax.axhline(100 * (ref - 0.01), color="0.6", ls="--", lw=0.8, label="reference − 1 pt")
        ax.set_xlabel("bytes / bytes of the reference image (same codec and quality)")
        ax.set_ylabel("accuracy on decoded images (%)")
        ax.set_title(f"Rate–accuracy, {dataset}")
        ax.set_xlim(0, max(1.2, float(part.ratio.max()) * 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        fig.tight_layout()
        path = out / f"rate_accuracy_{_safe(dataset)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
