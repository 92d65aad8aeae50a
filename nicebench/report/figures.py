"""Paper figures drawn from what a run keeps in its store (no model needed).

:func:`write_figures` writes ``RUN_DIR/figures/`` (vector PDF and 300-dpi PNG) and
``leaderboard.tex``; each figure also has its own function returning the matplotlib ``Figure``
(or ``None`` when the run lacks what it needs), so a script or a test can draw or inspect one:

- ``saliency_grid_<d>``: sample images (rows) × methods (columns), each map over the image, the
  ground-truth outline, gate methods' binary masks outlined (:func:`saliency_grid`);
- ``curves``: deletion and insertion, each method's mean curve with its 95% bootstrap band, one
  panel per dataset (:func:`curves_figure`);
- ``cascade``: cascading model randomisation, each method's similarity (Spearman, SSIM of
  ``|map|``) between the trained and the randomised model per number of top layers randomised
  (:func:`cascade_figure`);
- ``forest_<metric>``: per dataset each row's mean and 95% interval, sorted best first, baselines
  and codecs marked (:func:`forest_figure`);
- ``rate_accuracy_<d>``: the compression track's operating points against the codecs' quality
  sweeps, Pareto fronts where the points carry ``on_front`` (:func:`rate_accuracy_figure`);
- ``nice_masks_over_lambda_<d>`` and ``nice_lambda_tradeoff``: a gate method swept over ``lam``,
  the masks of the sample per λ and mask share against masked accuracy and deletion
  (:func:`lambda_mask_grid`, :func:`lambda_tradeoff`);
- ``mixed_resolution_<d>``: one sample image coded by each method's mask beside the reference
  codec at about equal bytes (:func:`mixed_resolution_examples`);
- ``rankings_<d>``: how far the ranking can be trusted: P(row ranks above column) on a headline
  metric, Kendall τ between the metrics' rankings, the combined rank with its interval
  (:func:`rankings_figure`, from :func:`nicebench.report.trust.analyse`);
- ``ablation_<d>``: with the run's ``baseline`` setting, each variant − the default row, paired
  per image, one panel per metric, with its 95% paired-bootstrap interval and P
  (:func:`ablation_forest`, from :func:`nicebench.report.ablation.ablation`);
- ``leaderboard.tex``: the leaderboard, booktabs, best per column in bold
  (:func:`leaderboard_latex`).

``<d>`` is the dataset's label (with the classifier's label when a run has several), made
file-name safe. Figures a run cannot feed (no masks, no compression, no gate method, no λ sweep,
no coded examples) are skipped without error.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..config import parse_specs  # noqa: E402
from ..store import RunStore  # noqa: E402
from . import style  # noqa: E402
from .ablation import ablation  # noqa: E402
from .columns import Catalogue, catalogue  # noqa: E402
from .scores import compression_points, per_image  # noqa: E402
from .style import DOUBLE_COLUMN, SINGLE_COLUMN, Palette  # noqa: E402
from .tables import leaderboard  # noqa: E402
from .trust import SEPARABLE, analyse  # noqa: E402
from .validity import not_valid, rank_exclusions, validity  # noqa: E402

__all__ = [
    "write_figures",
    "saliency_grid",
    "curves_figure",
    "forest_figure",
    "forest_metrics",
    "rate_accuracy_figure",
    "rate_accuracy_figures",
    "lambda_sweeps",
    "lambda_mask_grid",
    "lambda_tradeoff",
    "mixed_resolution_examples",
    "leaderboard_latex",
    "latex_columns",
    "run_palette",
    "wrap_label",
    "masked_view",
    "METRIC_LABELS",
    "rankings_figure",
    "cascade_figure",
    "ablation_forest",
]

# How a leaderboard column is named on an axis or in a table header.
METRIC_LABELS = {
    "deletion_auc": "Deletion AUC",
    "insertion_auc": "Insertion AUC",
    "pointing_game": "Pointing game",
    "energy_pointing_game": "Energy pointing game",
    "mask_auroc": "Mask AUROC",
    "saliency_metric": "Saliency metric",
    "sanity_spearman": "Sanity (Spearman)",
    "mask_share": "Mask share",
    "masked_accuracy": "Masked accuracy",
    "explain_ms_per_image": "ms / image",
    "compression_ratio": "Compression ratio",
    "bd_rate": "BD-rate",
    "bpp": "bpp",
    "accuracy_compressed": "Accuracy (coded)",
    "accuracy_original": "Accuracy",
    "payload_ratio": "Payload ratio",
    "combined_rank": "Combined rank",
    "deletion_blur_auc": "Deletion AUC (blur fill)",
    "road_morf": "ROAD MoRF",
    "road_lerf": "ROAD LeRF",
    "srg_mean": "SRG (mean fill)",
    "srg_blur": "SRG (blur fill)",
    "srg_road": "SRG (ROAD fill)",
    "cascade_spearman": "Cascade (Spearman)",
    "cascade_ssim": "Cascade (SSIM)",
    "random_logit": "Random logit",
    "infidelity": "Infidelity",
    "sensitivity_max": "Sensitivity-max",
    "sparseness": "Sparseness",
    "entropy": "Entropy",
}
# Leaderboard columns that describe the run rather than rank its rows
_NOT_SCORES = {
    "n_images",
    "accuracy_original",
    "accuracy_reference",
    "operating_point",
    "within_tolerance",
    "bd_codec",
    "payload_ratio",
}
_ROW = ["dataset", "model", "method", "kind"]
_GT_OUTLINE = "#FFFFFF"  # ground truth: a white line
_GATE_OUTLINE = style.OKABE_ITO["sky blue"]  # gate mask: a dashed sky-blue line


# -- helpers ---------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_")


def _where(dataset: str, model: str) -> str:
    return dataset if model == "default" else f"{dataset} · {model}"


def wrap_label(label: str, width: int = 14) -> str:
    """A leaderboard label over several lines for a narrow column: the plugin name, then its
    parameters, at most ``width`` characters a line where a parameter allows
    (``"nice(lam=0.2,epochs=2)"`` → ``"nice\n(lam=0.2,\nepochs=2)"``)."""
    if len(label) <= width or "(" not in label:
        return label
    name, rest = label.split("(", 1)
    lines, current = [name], "("
    for part in rest.split(","):
        piece = part if current == "(" else "," + part
        if current != "(" and len(current) + len(piece) > width:
            lines.append(current + ",")
            current = part
        else:
            current += piece
    lines.append(current)
    return "\n".join(lines)


def _groups(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, model) pairs of ``df`` in their order of appearance."""
    if df.empty:
        return []
    return list(dict.fromkeys(zip(df["dataset"], df["model"], strict=True)))


def _by_index(samples: pd.DataFrame, name: str) -> dict[int, np.ndarray]:
    """A dataset's sample arrays called ``name``, by image index."""
    part = samples[samples.name == name]
    return dict(zip(part.image_index.astype(int), part["array"], strict=True))


def _ok_cells(store: RunStore, keys: set[str] | None) -> pd.DataFrame:
    cells = store.cells(keys)
    return cells[cells.status == "ok"]


def run_palette(store: RunStore, keys: set[str] | None = None) -> Palette:
    """The palette of a run: every method and codec of its cells, so that a name has the same
    style in all of the run's figures."""
    cells = store.cells(keys)
    methods = cells.loc[cells.kind != "codec", "method"].tolist()
    codecs = cells.loc[cells.kind == "codec", "method"].tolist()
    return Palette(methods, codecs)


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show_image(ax, image: np.ndarray, **kw) -> None:
    """``image`` uint8 HWC (C = 1 or 3) as it is (grey for one channel)."""
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, **kw)
    else:
        ax.imshow(image, **kw)


def _grey(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32) / 255
    return img.mean(-1) if img.ndim == 3 else img


def _outline(ax, mask: np.ndarray, color: str, linestyle: str = "-", lw: float = 0.7) -> None:
    if mask is None or not np.any(mask) or np.all(mask):
        return
    ax.contour(
        mask.astype(float), levels=[0.5], colors=[color], linewidths=lw, linestyles=[linestyle]
    )


def _image_grid(
    nrows: int,
    ncols: int,
    width: float = DOUBLE_COLUMN,
    max_cell: float = 0.9,
    top: float = 0.3,
    bottom: float = 0.0,
    left: float = 0.35,
    gap: float = 0.03,
) -> tuple[Figure, np.ndarray]:
    """A grid of square image panels of at most ``max_cell`` inches within ``width`` (panels
    ``gap`` of a cell apart), with ``top``/``bottom``/``left`` inches of margin for titles, a
    legend and row labels: the figure is exactly as tall as it needs to be."""
    cell = min((width - left) / (ncols + gap * (ncols - 1)), max_cell)
    w = left + cell * (ncols + gap * (ncols - 1)) + 0.02
    h = top + bottom + cell * (nrows + gap * (nrows - 1))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False)
    fig.subplots_adjust(
        left=left / w,
        right=1 - 0.02 / w,
        bottom=bottom / h,
        top=1 - top / h,
        wspace=gap,
        hspace=gap,
    )
    return fig, axes


def _bootstrap_band(
    curves: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve over images and the percentile bootstrap band (images resampled with
    replacement, ``n_boot`` times; multinomial weights, one matrix product)."""
    n = len(curves)
    mean = curves.mean(0)
    if n < 2:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=n_boot) / n
    boots = weights @ curves
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return mean, lo, hi


# -- 1. saliency grid ------------------------------------------------------------------------------
def _stretched(sal: np.ndarray) -> np.ndarray:
    """A map's positive evidence scaled to [0, 1] per image (min to max): only the ranking of a
    map's pixels matters to the metrics, so an offset (RISE's mean score, a mask's floor) is not
    shown as importance."""
    v = np.clip(sal.astype(np.float32), 0, None)
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def saliency_grid(
    store: RunStore,
    dataset: str,
    model: str = "default",
    keys: set[str] | None = None,
    n_images: int = 8,
) -> Figure | None:
    """Sample images (rows, by image index) × methods (columns, in run order), the first column the
    image itself. Each map (its positive part, stretched from its minimum to its maximum: see
    :func:`_stretched`) is drawn with ``inferno`` over the image in grey; the ground-truth object outline (white) where the
    dataset has masks; for gate methods (binary ``gate_mask`` kept) the gate mask's outline,
    dashed sky blue, over the method's map. ``None`` when the run kept no maps."""
    maps = store.artifacts("map", keys)
    maps = maps[(maps.dataset == dataset) & (maps.model == model) & (maps.kind == "method")]
    if maps.empty:
        return None
    samples = store.samples(dataset)
    images = _by_index(samples, "image")
    gt = _by_index(samples, "mask")
    labels = {
        int(r.image_index): int(np.asarray(r["array"]).ravel()[0])
        for _, r in samples[samples.name == "label"].iterrows()
    }
    index = sorted(set(maps.image_index) & set(images))[:n_images]
    if not index:
        return None
    methods = list(dict.fromkeys(maps.method))
    gates = store.artifacts("gate_mask", keys)
    gates = gates[(gates.dataset == dataset) & (gates.model == model)]
    gate = {(r.method, int(r.image_index)): r["array"] for _, r in gates.iterrows()}
    lookup = {(r.method, int(r.image_index)): r["array"] for _, r in maps.iterrows()}
    ncols, nrows = len(methods) + 1, len(index)
    has_gate = any(m in {k[0] for k in gate} for m in methods)
    legend = 0.25 if (gt or has_gate) else 0.0
    # many columns are too narrow for level titles: tilt them (one line each) instead
    tilted = ncols > 12
    titles = [wrap_label(m, 24 if tilted else 12 if ncols > 8 else 16) for m in methods]
    title_lines = max(t.count("\n") + 1 for t in titles)
    top = 0.3 + (0.1 * title_lines + 0.4 if tilted else 0.1 * title_lines)
    with style.context():
        fig, axes = _image_grid(nrows, ncols, top=top, bottom=legend)
        for r, i in enumerate(index):
            image = images[i]
            ax = axes[r, 0]
            _show_image(ax, image)
            _blank(ax)
            ax.set_ylabel(
                f"#{i}" + (f"\nclass {labels[i]}" if i in labels else ""),
                fontsize=6,
                rotation=0,
                ha="right",
                va="center",
                linespacing=1.1,
            )
            for c, method in enumerate(methods, start=1):
                ax = axes[r, c]
                _blank(ax)
                sal = lookup.get((method, i))
                if sal is None:
                    continue
                ax.imshow(_grey(image), cmap="gray", vmin=0, vmax=1)
                ax.imshow(_stretched(sal), cmap="inferno", vmin=0, vmax=1, alpha=0.65)
                _outline(ax, gt.get(i), _GT_OUTLINE)
                if (method, i) in gate:
                    _outline(ax, gate[(method, i)], _GATE_OUTLINE, "--")
        axes[0, 0].set_title("image", fontsize=6, pad=2)
        for c, title in enumerate(titles, start=1):
            if tilted:
                axes[0, c].text(
                    0.3,
                    1.04,
                    title,
                    transform=axes[0, c].transAxes,
                    fontsize=6,
                    rotation=40,
                    ha="left",
                    va="bottom",
                    linespacing=1.0,
                    rotation_mode="anchor",
                )
            else:
                axes[0, c].set_title(title, fontsize=6, pad=2, linespacing=1.0)
        fig.suptitle(
            f"Saliency maps, {_where(dataset, model)} (each stretched min to max)", y=1.0, va="top"
        )
        handles = []
        if gt:
            stroke = patheffects.withStroke(linewidth=2.2, foreground="0.2")
            handles.append(
                Line2D(
                    [],
                    [],
                    color="white",
                    lw=1.0,
                    label="ground-truth object",
                    path_effects=[stroke],
                )
            )
        if has_gate:
            handles.append(
                Line2D(
                    [], [], color=_GATE_OUTLINE, ls="--", lw=1.0, label="gate mask (gate methods)"
                )
            )
        if handles:
            fig.legend(
                handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, 0.0)
            )
    fig.nicebench_index = index  # the image indices of the rows, for tests and captions
    return fig


def _legend_below(fig: Figure, handles: dict[str, Line2D], max_cols: int) -> None:
    """One legend entry per method under the panels (at most ``max_cols`` a row), the panels laid
    out above it."""
    ncol = max(1, min(len(handles), max_cols))
    rows = math.ceil(len(handles) / ncol)
    fig.legend(
        handles=list(handles.values()),
        labels=list(handles),
        loc="lower center",
        ncol=ncol,
        bbox_to_anchor=(0.5, 0.0),
        handlelength=2.2,
    )
    fig.tight_layout(rect=(0, (0.05 + 0.16 * rows) / fig.get_figheight(), 1, 1))


# -- 2. deletion / insertion curves ----------------------------------------------------------------
def curves_figure(
    store: RunStore,
    keys: set[str] | None = None,
    which: Sequence[str] = ("deletion", "insertion"),
    palette: Palette | None = None,
    n_boot: int = 1000,
) -> Figure | None:
    """Rows: deletion, insertion; columns: one panel per dataset (and classifier). Each method's
    mean curve over the run's images (softmax probability of the target class against the share of
    pixels deleted / inserted, most salient first) with its 95% percentile bootstrap band over
    images. ``None`` when the run kept no curves."""
    curves = store.artifacts("curve/%", keys)
    curves = curves[curves.kind == "method"]
    if curves.empty:
        return None
    which = [w for w in which if (curves.name == f"curve/{w}").any()]
    if not which:  # other metrics' curves only (e.g. the cascade's)
        return None
    groups = _groups(curves)
    palette = palette or run_palette(store, keys)
    ncols, nrows = len(groups), len(which)
    width = DOUBLE_COLUMN if ncols > 1 else SINGLE_COLUMN
    with style.context():
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(width, 1.9 * nrows + 0.6),
            squeeze=False,
            sharex=True,
            sharey="row",
        )
        handles: dict[str, Line2D] = {}
        band_alpha = 0.12 if curves.method.nunique() <= 6 else 0.06  # many bands: fainter
        for r, name in enumerate(which):
            for c, (dataset, model) in enumerate(groups):
                ax = axes[r, c]
                part = curves[
                    (curves.name == f"curve/{name}")
                    & (curves.dataset == dataset)
                    & (curves.model == model)
                ]
                for method, g in part.groupby("method", sort=False):
                    data = np.stack(g.sort_values("image_index")["array"].to_list()).astype(float)
                    mean, lo, hi = _bootstrap_band(data, n_boot=n_boot)
                    x = np.linspace(0, 1, data.shape[1])
                    st = palette.line(method)
                    (line,) = ax.plot(
                        x, mean, color=st["color"], ls=st["linestyle"], lw=1.0, label=method
                    )
                    ax.fill_between(x, lo, hi, color=st["color"], alpha=band_alpha, lw=0)
                    handles.setdefault(method, line)
                ax.set_xlim(0, 1)
                if name == "deletion":
                    ax.set_ylim(bottom=0)
                ax.grid(True)
                if r == 0:
                    ax.set_title(_where(dataset, model))
                if r == nrows - 1:
                    done = {"deletion": "deleted", "insertion": "inserted"}[name]
                    ax.set_xlabel(
                        f"share of pixels {done}"
                        if nrows == 1
                        else "share of pixels deleted / inserted"
                    )
                if c == 0:
                    ax.set_ylabel(f"{name.capitalize()}\np(target class)")
        _legend_below(fig, handles, 7 if ncols > 1 else 3)
    return fig


# -- 2a. validity: does the curve have range? -----------------------------------------------------
def validity_curves_figure(
    store: RunStore,
    dataset: str,
    model: str = "default",
    keys: set[str] | None = None,
    board: pd.DataFrame | None = None,
    n_boot: int = 1000,
) -> Figure | None:
    """One panel per curve metric the run kept curves of (deletion, insertion, …) on one
    dataset: the mean curve of ``oracle`` (where the dataset has it), the best method on the
    metric (a contender: methods that read the ground truth left out) and ``random``, with 95%
    bootstrap bands over images, and chance as a dotted line. A metric with range starts (or
    ends) near chance, and separates the three; a saturated one draws three lines on top of each
    other near the top. The panel's title carries the metric's verdict from the validity audit."""
    curves = store.artifacts("curve/%", keys)
    curves = curves[
        (curves.kind == "method") & (curves.dataset == dataset) & (curves.model == model)
    ]
    names = [n for n in ("deletion", "insertion") if (curves.name == f"curve/{n}").any()]
    if not names:
        return None
    board = leaderboard(store, keys) if board is None else board
    rows = board[(board.dataset == dataset) & (board.model == model) & (board.kind == "method")]
    table = validity(store, keys)
    table = table[(table.dataset == dataset) & (table.model == model)]
    cat = catalogue(store)
    directions = cat.higher_is_better()
    colours = {"oracle": style.OKABE_ITO["bluish green"], "random": "0.45"}
    with style.context():
        fig, axes = plt.subplots(
            1, len(names), figsize=(SINGLE_COLUMN * min(2, len(names)), 2.3), squeeze=False
        )
        for ax, name in zip(axes[0], names, strict=True):
            column = f"{name}_auc"
            contenders = rows[
                ~rows.method.map(cat.reads_ground_truth).astype(bool) & (rows.method != "random")
            ]
            scores = pd.to_numeric(contenders.get(column), errors="coerce").dropna()
            best = None
            if len(scores):
                at = scores.idxmax() if directions.get(column, True) else scores.idxmin()
                best = contenders.method[at]
            part = curves[curves.name == f"curve/{name}"]
            for method, colour in (
                ("oracle", colours["oracle"]),
                (best, style.OKABE_ITO["vermillion"]),
                ("random", colours["random"]),
            ):
                g = part[part.method == method] if method else part.iloc[:0]
                if g.empty:
                    continue
                data = np.stack(g.sort_values("image_index")["array"].to_list()).astype(float)
                mean, lo, hi = _bootstrap_band(data, n_boot=n_boot)
                x = np.linspace(0, 1, data.shape[1])
                label = f"{method} (best)" if method == best else method
                ax.plot(
                    x,
                    mean,
                    color=colour,
                    lw=1.2,
                    label=label,
                    ls="--" if method == "random" else "-",
                )
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
            verdict = table[table.metric == column]
            if len(verdict):
                chance = pd.to_numeric(verdict.chance, errors="coerce").iloc[0]
                if pd.notna(chance):
                    ax.axhline(chance, color="0.3", ls=":", lw=0.8, label="chance")
                v = str(verdict.verdict.iloc[0])
                ax.set_title(
                    f"{name.capitalize()}: {v}",
                    color="0.1" if v == "valid" else style.OKABE_ITO["vermillion"],
                )
            else:
                ax.set_title(name.capitalize())
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.grid(True)
            done = {"deletion": "deleted", "insertion": "inserted"}[name]
            ax.set_xlabel(f"share of pixels {done}")
            ax.set_ylabel("p(target class)")
            ax.legend(loc="best", fontsize=6)
        fig.suptitle(_where(dataset, model), x=0.01, ha="left", fontweight="bold")
        fig.tight_layout()
    return fig


# -- 2b. cascading randomisation -------------------------------------------------------------------
_CASCADE = (("cascade_spearman", "Spearman of |map|"), ("cascade_ssim", "SSIM of |map|"))


def _cascade_ticks(spec_json: str, n_steps: int, default: str | None) -> list[str]:
    """The x tick labels of a cascade of ``n_steps`` steps from a cell's stored spec (its
    ``cascade`` setting, else ``default``, the metric's declared one): the number of top layers
    randomised at each step ("all" for the whole network)."""
    try:
        settings = json.loads(spec_json).get("settings", {})
    except (TypeError, ValueError):
        settings = {}
    text = str(settings.get("cascade", default)).strip().lower()
    if text == "every":
        labels = [str(k) for k in range(1, n_steps + 1)]
        return labels[:-1] + [f"all ({n_steps})"] if labels else labels
    parts = [p.strip() for p in text.split(",") if p.strip()]
    numbers = sorted({int(p) for p in parts if p.isdigit()})
    labels = [str(k) for k in numbers] + (["all"] if "all" in parts else [])
    return labels if len(labels) == n_steps else [str(k) for k in range(1, n_steps + 1)]


def cascade_figure(
    store: RunStore,
    keys: set[str] | None = None,
    palette: Palette | None = None,
    n_boot: int = 1000,
) -> Figure | None:
    """Cascading model randomisation (Adebayo et al. 2018), the similarity curve per layer: rows
    Spearman and SSIM of ``|map|`` between the trained and the randomised model, columns one
    panel per dataset (and classifier); x the number of top layers randomised (logits first),
    each method's mean over the images the metric explained with its 95% bootstrap band.
    ``None`` when the run kept no cascade curves."""
    curves = store.artifacts("curve/cascade_%", keys)
    curves = curves[curves.kind == "method"]
    if curves.empty:
        return None
    which = [(n, label) for n, label in _CASCADE if (curves.name == f"curve/{n}").any()]
    groups = _groups(curves)
    default = catalogue(store).default("cascade_spearman", "cascade")
    palette = palette or run_palette(store, keys)
    specs = store.cells(keys).set_index("key")["spec"]
    with style.context():
        fig, axes = plt.subplots(
            len(which),
            len(groups),
            squeeze=False,
            sharey=True,
            figsize=(DOUBLE_COLUMN if len(groups) > 1 else SINGLE_COLUMN, 1.9 * len(which) + 0.9),
        )
        handles: dict[str, Line2D] = {}
        for r, (name, label) in enumerate(which):
            for c, (dataset, model) in enumerate(groups):
                ax = axes[r, c]
                part = curves[
                    (curves.name == f"curve/{name}")
                    & (curves.dataset == dataset)
                    & (curves.model == model)
                ]
                ticks: list[str] = []
                for method, g in part.groupby("method", sort=False):
                    data = np.stack(g.sort_values("image_index")["array"].to_list()).astype(float)
                    # images past sanity_images, and images with a step undefined (a constant map
                    # has no Spearman), are left out, so that every step averages the same images
                    # (the column instead averages each image over its defined steps)
                    data = data[np.isfinite(data).all(1)]
                    if not len(data):
                        continue
                    mean, lo, hi = _bootstrap_band(data, n_boot=n_boot)
                    x = np.arange(1, data.shape[1] + 1)
                    st = palette.line(method)
                    (line,) = ax.plot(
                        x,
                        mean,
                        color=st["color"],
                        ls=st["linestyle"],
                        lw=1.0,
                        marker="o",
                        ms=2.5,
                        label=method,
                    )
                    ax.fill_between(x, lo, hi, color=st["color"], alpha=0.08, lw=0)
                    handles.setdefault(method, line)
                    if not ticks:
                        ticks = _cascade_ticks(
                            specs.get(g["cell_key"].iloc[0], ""), data.shape[1], default
                        )
                if ticks:
                    ax.set_xticks(np.arange(1, len(ticks) + 1), ticks)
                ax.axhline(0, color="0.6", lw=0.6)
                ax.grid(True)
                if r == 0:
                    ax.set_title(_where(dataset, model))
                if r == len(which) - 1:
                    ax.set_xlabel("top layers randomised (logits first)")
                if c == 0:
                    ax.set_ylabel(f"{label}\ntrained vs randomised")
        _legend_below(fig, handles, 6 if len(groups) > 1 else 3)
    return fig


# -- 3. forest plots -------------------------------------------------------------------------------
def forest_metrics(board: pd.DataFrame) -> list[str]:
    """The leaderboard columns a forest plot is drawn for: the scores with a bootstrap interval
    that some row has, and the compression track's headline columns."""
    cols = [c for c in board.columns if f"{c}_lo" in board.columns and c not in _NOT_SCORES]
    cols += [c for c in ("compression_ratio", "bd_rate") if c in board.columns and c not in cols]
    cols = [c for c in cols if c != "combined_rank"]  # drawn by rankings_figure
    return [c for c in cols if pd.to_numeric(board[c], errors="coerce").notna().any()]


def forest_figure(
    board: pd.DataFrame,
    metric: str,
    palette: Palette | None = None,
    directions: dict[str, bool] | None = None,
    marks: dict[tuple[str, str], dict[str, str]] | None = None,
) -> Figure | None:
    """One panel per dataset: each row's mean of ``metric`` with its 95% interval (where the
    leaderboard has one), best at the top (``directions``: column → higher is better, default
    :func:`nicebench.report.tables.higher_is_better`). Baselines (``random``, ``center``,
    ``edges``, ``oracle``) and codec rows are drawn as open grey squares with grey italic names.
    ``marks``: (dataset, model) → the metrics not valid there (:func:`~nicebench.report.validity.
    not_valid`): such a panel's title says so in red, and its ranking is not to be read."""
    if directions is None:
        directions = Catalogue.from_registry().higher_is_better()
    higher = directions.get(metric, True)
    if metric not in board:
        return None
    data = board[pd.to_numeric(board[metric], errors="coerce").notna()]
    if data.empty:
        return None
    palette = palette or Palette(
        data.loc[data.kind != "codec", "method"], data.loc[data.kind == "codec", "method"]
    )
    groups = _groups(data)
    nmax = max(len(data[(data.dataset == d) & (data.model == m)]) for d, m in groups)
    width = DOUBLE_COLUMN if len(groups) > 1 else SINGLE_COLUMN
    with style.context():
        fig, axes = plt.subplots(
            1, len(groups), figsize=(width, 0.8 + 0.17 * max(nmax, 3)), squeeze=False
        )
        for c, (dataset, model) in enumerate(groups):
            ax = axes[0, c]
            part = data[(data.dataset == dataset) & (data.model == model)].copy()
            part["_v"] = part[metric].astype(float)
            # best first, drawn at the top
            part = part.sort_values("_v", ascending=not higher, kind="stable")
            y = np.arange(len(part))[::-1]
            for yi, (_, row) in zip(y, part.iterrows(), strict=True):
                base = style.is_baseline(row.method, row.kind)
                colour = "0.5" if base else palette.color(row.method, row.kind)
                lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
                _interval_point(ax, row._v, lo, hi, yi, colour, base)
            ax.set_yticks(y, _tick_labels([str(m) for m in part.method], width=30))
            for tick, (_, row) in zip(ax.get_yticklabels(), part.iterrows(), strict=True):
                if style.is_baseline(row.method, row.kind):
                    tick.set_color("0.4")
                    tick.set_fontstyle("italic")
            ax.set_ylim(-0.7, len(part) - 0.3)
            ax.grid(True, axis="x")
            bad = (marks or {}).get((dataset, model), {}).get(metric)
            if bad:
                ax.set_title(
                    f"{_where(dataset, model)}\n† not valid here: {bad.split(':')[0]}",
                    color=style.OKABE_ITO["vermillion"],
                )
            else:
                ax.set_title(_where(dataset, model))
            arrow = "↑" if higher else "↓"
            ax.set_xlabel(f"{METRIC_LABELS.get(metric, metric)} ({arrow} better)")
        has_ci = f"{metric}_lo" in data and data[f"{metric}_lo"].notna().any()
        lw = 1.2 if has_ci else 0
        bases = [style.is_baseline(m, k) for m, k in zip(data.method, data.kind, strict=True)]
        handles = []
        if not all(bases):
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    color="0.2",
                    lw=lw,
                    ms=4,
                    label="method (95% CI)" if has_ci else "method",
                )
            )
        if any(bases):
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="s",
                    color="0.5",
                    mfc="white",
                    lw=lw,
                    ms=4,
                    label="baseline / codec",
                )
            )
        fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.22 / fig.get_figheight(), 1, 1))
    return fig


# -- 4. rate–accuracy ------------------------------------------------------------------------------
def rate_accuracy_figure(
    points: pd.DataFrame,
    dataset: str,
    model: str = "default",
    palette: Palette | None = None,
    zoom: float = 5.0,
) -> Figure | None:
    """Bytes relative to the reference image (x) against the classifier's accuracy on the decoded
    images (y). Codecs (``kind == "codec"``) in grey, one line style each; methods in their
    colours. With an ``on_front`` column, each method's and codec's Pareto front is a line and its
    other points are faint markers; without one, methods are plain markers and codecs a line
    through their quality sweep. The reference accuracy is a dotted line and the headline's bar,
    one point below it, a dashed one. With a reference accuracy and ``zoom`` > 0 a second panel
    shows the top ``zoom`` points of accuracy (where the headline ratios are read), at the bytes
    the points there need."""
    part = points[(points.dataset == dataset) & (points.model == model)] if len(points) else points
    if part.empty:
        return None
    palette = palette or Palette(
        part.loc[part.kind != "codec", "method"], part.loc[part.kind == "codec", "method"]
    )
    front = "on_front" in part.columns
    ref = float(part.accuracy_reference.mean()) if "accuracy_reference" in part else None
    zoomed = ref is not None and zoom > 0 and np.isfinite(ref)
    with style.context():
        n_entries = part.groupby(["method", "kind"]).ngroups + 1 + int(ref is not None)
        ncol = 4 if zoomed else 3
        legend_rows = math.ceil(n_entries / ncol)
        fig, axes = plt.subplots(
            1,
            2 if zoomed else 1,
            squeeze=False,
            figsize=(DOUBLE_COLUMN if zoomed else SINGLE_COLUMN, 2.6 + 0.15 * legend_rows),
        )
        order = sorted(
            part.groupby(["method", "kind"], sort=False).groups, key=lambda mk: mk[1] == "codec"
        )  # methods, then codecs
        for i, ax in enumerate(axes[0]):
            label = (lambda text: text) if i == 0 else (lambda text: f"_{text}")
            for method, kind in order:
                pts = part[(part.method == method) & (part.kind == kind)]
                pts = pts.sort_values("ratio")
                st = palette.line(method, kind)
                name = label(f"{method} (quality sweep)" if kind == "codec" else method)
                if front:
                    on = pts[pts.on_front.astype(bool)]
                    ax.plot(
                        pts.ratio,
                        100 * pts.accuracy,
                        st["marker"],
                        color=st["color"],
                        alpha=0.3,
                        ms=3,
                        lw=0,
                    )
                    ax.plot(
                        on.ratio,
                        100 * on.accuracy,
                        color=st["color"],
                        ls=st["linestyle"],
                        marker=st["marker"],
                        ms=3.5,
                        lw=1.0,
                        label=name,
                    )
                elif kind == "codec":
                    ax.plot(
                        pts.ratio,
                        100 * pts.accuracy,
                        color=st["color"],
                        ls=st["linestyle"],
                        lw=1.0,
                        label=name,
                    )
                else:
                    ax.plot(
                        pts.ratio,
                        100 * pts.accuracy,
                        st["marker"],
                        color=st["color"],
                        ms=3.5,
                        lw=0,
                        label=name,
                    )
            if ref is not None:
                ax.axhline(100 * ref, color="0.5", ls=":", lw=0.8, label=label("reference image"))
                ax.axhline(
                    100 * ref - 1,
                    color="0.5",
                    ls="--",
                    lw=0.7,
                    label=label("1 point below it (headline)"),
                )
            ax.set_xlabel("bytes / bytes of the reference image")
            ax.grid(True)
        ax = axes[0, 0]
        ax.set_ylabel("accuracy on decoded images (%)")
        ax.set_title(f"Rate–accuracy, {_where(dataset, model)}")
        ax.set_xlim(0, max(1.05, float(part.ratio.max()) * 1.03))
        if zoomed:
            ax = axes[0, 1]
            top = 100 * max(ref, float(part.accuracy.max()))
            near = part[100 * part.accuracy >= 100 * ref - zoom]
            right = float(near.ratio.max()) if len(near) else 1.05
            ax.set_ylim(100 * ref - zoom, top + 0.3)
            ax.set_xlim(0, min(max(right * 1.03, 0.1), 1.05))  # past the reference's bytes: no gain
            ax.set_title(f"within {zoom:g} points of the reference")
        fig.legend(
            loc="lower center",
            ncol=ncol,
            bbox_to_anchor=(0.5, 0.0),
            columnspacing=1.0,
            handlelength=1.8,
        )
        fig.tight_layout(rect=(0, (0.05 + 0.15 * legend_rows) / fig.get_figheight(), 1, 1))
    return fig


def rate_accuracy_figures(
    points: pd.DataFrame, out: str | Path, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """:func:`rate_accuracy_figure` for every dataset of ``points``, written into ``out``."""
    paths: list[Path] = []
    palette = None
    if len(points):
        palette = Palette(
            points.loc[points.kind != "codec", "method"],
            points.loc[points.kind == "codec", "method"],
        )
    for dataset, model in _groups(points):
        fig = rate_accuracy_figure(points, dataset, model, palette)
        paths += _save(fig, Path(out), f"rate_accuracy_{_safe(_where(dataset, model))}", formats)
    return paths


# -- 5. NICE over λ --------------------------------------------------------------------------------
def lambda_sweeps(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """The gate-method cells of a λ sweep: per (dataset, model, plugin, other parameters) with at
    least two ``lam`` values, one row per method label with ``dataset, model, method, method_name,
    lam, sweep`` (``sweep``: the plugin and its other parameters)."""
    cells = _ok_cells(store, keys)
    cells = cells[cells.method_name.isin(style.GATE_METHODS) & (cells.kind == "method")]
    rows = []
    for _, c in cells.drop_duplicates(["dataset", "model", "method"]).iterrows():
        try:
            spec = parse_specs(json.loads(c.spec)["method"])[0]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        params = dict(spec.params)
        if "lam" not in params:
            continue
        try:
            lam = float(params.pop("lam"))
        except (TypeError, ValueError):
            continue
        other = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        sweep = f"{spec.name}({other})" if other else spec.name
        rows.append(
            {
                "dataset": c.dataset,
                "model": c.model,
                "method": c.method,
                "method_name": c.method_name,
                "lam": lam,
                "sweep": sweep,
            }
        )
    df = pd.DataFrame(rows, columns=["dataset", "model", "method", "method_name", "lam", "sweep"])
    if df.empty:
        return df
    n = df.groupby(["dataset", "model", "sweep"]).lam.transform("nunique")
    return df[n >= 2].sort_values(["dataset", "model", "sweep", "lam"]).reset_index(drop=True)


_CLOSED = np.array([0x00, 0x72, 0xB2], dtype=np.float32)  # Okabe-Ito blue


def masked_view(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (uint8 HWC) where ``mask`` (HW) is set; elsewhere a dark blue tint of it
    (35% blue + 25% image), so closed gates show on black backgrounds too. uint8 HW3."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    closed = (0.35 * _CLOSED + 0.25 * rgb.astype(np.float32)).round().astype(np.uint8)
    return np.where((np.asarray(mask) > 0)[..., None], rgb, closed)


def lambda_mask_grid(
    store: RunStore,
    dataset: str,
    model: str = "default",
    keys: set[str] | None = None,
    n_images: int = 6,
    sweeps: pd.DataFrame | None = None,
) -> Figure | None:
    """The authors' figure: sample images (rows) × λ (columns, increasing), the first column the
    image, then the image where the binary gate mask kept at each λ is open and a dark blue tint of
    it where closed (:func:`masked_view`: a zero reference would hide a mask on the black
    background of MNIST-like images). The first sweep of the
    dataset when a run has several. ``None`` without a λ sweep or kept gate masks."""
    sweeps = lambda_sweeps(store, keys) if sweeps is None else sweeps
    sw = sweeps[(sweeps.dataset == dataset) & (sweeps.model == model)] if len(sweeps) else sweeps
    if sw.empty:
        return None
    sw = sw[sw.sweep == sw.sweep.iloc[0]].drop_duplicates("lam")
    gates = store.artifacts("gate_mask", keys)
    gates = gates[
        (gates.dataset == dataset) & (gates.model == model) & gates.method.isin(sw.method)
    ]
    if gates.empty:
        return None
    samples = store.samples(dataset)
    images = _by_index(samples, "image")
    mask = {(r.method, int(r.image_index)): r["array"] for _, r in gates.iterrows()}
    index = sorted(set(gates.image_index) & set(images))[:n_images]
    if not index:
        return None
    ncols, nrows = len(sw) + 1, len(index)
    with style.context():
        fig, axes = _image_grid(nrows, ncols, max_cell=0.85, top=0.55, left=0.3, bottom=0.22)
        for r, i in enumerate(index):
            image = images[i]
            _show_image(axes[r, 0], image)
            _blank(axes[r, 0])
            axes[r, 0].set_ylabel(f"#{i}", fontsize=6, rotation=0, ha="right", va="center")
            for c, (_, s) in enumerate(sw.iterrows(), start=1):
                ax = axes[r, c]
                _blank(ax)
                m = mask.get((s.method, i))
                if m is None:
                    continue
                _show_image(ax, masked_view(image, m))
        axes[0, 0].set_title("image", fontsize=7)
        for c, (_, s) in enumerate(sw.iterrows(), start=1):
            axes[0, c].set_title(f"λ = {s.lam:g}", fontsize=7)
        fig.suptitle(
            f"Gate masks over λ, {_where(dataset, model)}\n{sw.sweep.iloc[0]}",
            y=1.0,
            va="top",
            fontsize=7,
            linespacing=1.2,
        )
        closed = masked_view(np.full((1, 1, 3), 160, np.uint8), np.zeros((1, 1)))[0, 0] / 255
        fig.legend(
            handles=[
                Patch(
                    facecolor=tuple(closed), edgecolor="none", label="gates closed (image tinted)"
                )
            ],
            loc="lower center",
            bbox_to_anchor=(0.5, 0.0),
        )
    fig.nicebench_lams = sw.lam.tolist()
    fig.nicebench_index = index
    return fig


def lambda_tradeoff(
    store: RunStore,
    keys: set[str] | None = None,
    board: pd.DataFrame | None = None,
    sweeps: pd.DataFrame | None = None,
) -> Figure | None:
    """Per dataset (rows): the share of pixels kept (x, mean ``mask_share``) against the masked
    accuracy and the deletion AUC (columns), one point per λ with its 95% intervals, joined in λ
    order and labelled with λ; every sweep of the run. ``None`` without a λ sweep."""
    sweeps = lambda_sweeps(store, keys) if sweeps is None else sweeps
    if sweeps.empty:
        return None
    if board is None:
        board = leaderboard(store, keys)
    data = sweeps.merge(board, on=["dataset", "model", "method"], how="left")
    if "mask_share" not in data or data.mask_share.isna().all():
        return None
    ycols = [c for c in ("masked_accuracy", "deletion_auc") if c in data and data[c].notna().any()]
    if not ycols:
        return None
    groups = _groups(data)
    sweep_names = list(dict.fromkeys(data.sweep))
    palette = Palette(sweep_names)
    with style.context():
        fig, axes = plt.subplots(
            len(groups),
            len(ycols),
            figsize=(DOUBLE_COLUMN if len(ycols) > 1 else SINGLE_COLUMN, 2.1 * len(groups) + 0.3),
            squeeze=False,
        )
        for r, (dataset, model) in enumerate(groups):
            for c, col in enumerate(ycols):
                ax = axes[r, c]
                for name, g in data[(data.dataset == dataset) & (data.model == model)].groupby(
                    "sweep", sort=False
                ):
                    g = g.sort_values("lam")
                    st = palette.line(name)
                    x, y = g.mask_share.to_numpy(float), g[col].to_numpy(float)
                    xerr = _err(g, "mask_share")
                    yerr = _err(g, col)
                    ax.errorbar(
                        x,
                        y,
                        xerr=xerr,
                        yerr=yerr,
                        color=st["color"],
                        marker="o",
                        ms=3.5,
                        lw=1.0,
                        elinewidth=0.6,
                        capsize=1.5,
                        label=name,
                    )
                    for xi, yi, lam in zip(x, y, g.lam, strict=True):
                        ax.annotate(
                            f"λ={lam:g}",
                            (xi, yi),
                            textcoords="offset points",
                            xytext=(3, 3),
                            fontsize=5.5,
                            color="0.25",
                        )
                ax.set_xlabel("share of pixels kept (mask share)")
                ax.set_ylabel(METRIC_LABELS.get(col, col))
                ax.set_title(_where(dataset, model))
                ax.grid(True)
        if len(sweep_names) > 1:
            axes[0, -1].legend(loc="best")
        fig.tight_layout()
    return fig


def _err(g: pd.DataFrame, col: str) -> np.ndarray | None:
    if f"{col}_lo" not in g or f"{col}_hi" not in g:
        return None
    v = g[col].to_numpy(float)
    lo, hi = g[f"{col}_lo"].to_numpy(float), g[f"{col}_hi"].to_numpy(float)
    if np.isnan(lo).all():
        return None
    return np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)]).clip(min=0)


# -- 6. mixed-resolution examples ------------------------------------------------------------------
def _decode(data: np.ndarray) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(np.asarray(data, dtype=np.uint8).tobytes())) as im:
            return np.asarray(im.convert("L" if im.mode in ("L", "I", "1") else "RGB"))
    except Exception:  # an undecodable example (e.g. AVIF without its Pillow plugin) is skipped
        return None


def _point_order(point: str) -> tuple[int, float]:
    """Which of a method's points to show: the gate mask first, then keep shares closest to 0.2."""
    mask = point.split()[0] if point else point  # e.g. "keep=0.1 q=30 x8" → "keep=0.1"
    if mask == "gate":
        return (0, 0.0)
    m = re.fullmatch(r"keep=([0-9.eE+-]+)", mask)
    return (1, abs(float(m.group(1)) - 0.2)) if m else (2, 0.0)


def mixed_resolution_examples(
    store: RunStore,
    dataset: str,
    model: str = "default",
    keys: set[str] | None = None,
    image_index: int | None = None,
    point: str | None = None,
    codec: str | None = None,
    max_cols: int = 7,
    headline: dict[str, str] | None = None,
) -> Figure | None:
    """One sample image coded by each method's mask (top row of a block: the mixed-resolution
    file the run kept as ``coded/<point>``) and, below it, the same image coded whole by ``codec``
    (default: the run's reference codec) at the quality whose file is nearest in bytes. Each panel
    names its bytes. ``point``: which operating point of a method; default its ``headline``
    point (method → the leaderboard's ``operating_point``, where the front first comes within a
    point of the reference accuracy), else ``gate`` where it exists, else the ``keep`` share
    nearest 0.2. ``None`` without kept coded examples."""
    coded = store.artifacts("coded/%", keys)
    coded = coded[(coded.dataset == dataset) & (coded.model == model)] if len(coded) else coded
    if coded.empty:
        return None
    coded = coded.assign(point=coded.name.str.slice(len("coded/")))
    codecs = coded[coded.kind == "codec"]
    methods = coded[coded.kind == "method"]
    if codecs.empty or methods.empty:
        return None
    if codec is None:
        ref = store.tables("compression", keys)
        refs = []
        if len(ref) and "bd_codec" in ref:
            refs = ref.loc[ref.dataset == dataset, "bd_codec"].dropna().tolist()
        codec = next((c for c in refs if c in set(codecs.method)), codecs.method.iloc[0])
    codecs = codecs[codecs.method == codec]
    if image_index is None:
        common = sorted(set(methods.image_index) & set(codecs.image_index))
        if not common:
            return None
        image_index = common[0]
    methods = methods[methods.image_index == image_index]
    codecs = codecs[codecs.image_index == image_index]
    if methods.empty or codecs.empty:
        return None
    sizes = codecs.assign(size_bytes=codecs["array"].map(len))
    samples = store.samples(dataset)
    original = samples[(samples.image_index == image_index) & (samples.name == "image")]
    panels = []  # (method, point, decoded, nbytes, codec point, codec decoded, codec bytes)
    for method, g in methods.groupby("method", sort=False):
        pts = g.set_index("point")
        wanted = point or (headline or {}).get(method)
        chosen = wanted if wanted in pts.index else min(pts.index, key=_point_order)
        data = pts.loc[chosen, "array"]
        nbytes = len(data)
        near = sizes.iloc[int(np.argmin(np.abs(sizes["size_bytes"].to_numpy() - nbytes)))]
        panels.append(
            (
                method,
                chosen,
                _decode(data),
                nbytes,
                near["point"],
                _decode(near["array"]),
                int(near["size_bytes"]),
            )
        )
    ncols = min(max_cols, len(panels) + (1 if len(original) else 0))
    entries: list[tuple[str, object]] = []
    if len(original):
        entries.append(("original", original.iloc[0]["array"]))
    entries += [("method", p) for p in panels]
    blocks = math.ceil(len(entries) / ncols)
    title_lines = max(wrap_label(p[0]).count("\n") + 2 for p in panels)
    gap = 0.16 + 0.09 * title_lines  # inches between rows: an x label, the next row's titles
    left, top, bottom = 0.32, 0.3 + 0.09 * title_lines, 0.16
    cell = (DOUBLE_COLUMN - left) / (ncols + 0.04 * (ncols - 1))
    nrows = 2 * blocks
    height = top + bottom + nrows * cell + (nrows - 1) * gap
    with style.context():
        fig, axes = plt.subplots(nrows, ncols, figsize=(DOUBLE_COLUMN, height), squeeze=False)
        fig.subplots_adjust(
            left=left / DOUBLE_COLUMN,
            right=0.999,
            top=1 - top / height,
            bottom=bottom / height,
            wspace=0.04,
            hspace=gap / cell,
        )
        for b in range(blocks):
            for row, text in ((2 * b, "mixed resolution"), (2 * b + 1, f"{codec}, uniform")):
                pos = axes[row, 0].get_position()
                fig.text(
                    0.3 / DOUBLE_COLUMN,
                    (pos.y0 + pos.y1) / 2,
                    text,
                    rotation=90,
                    ha="right",
                    va="center",
                    fontsize=6,
                )
        for ax in axes.ravel():
            _blank(ax)
            ax.set_visible(False)
        for k, (what, p) in enumerate(entries):
            top, bottom = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
            top.set_visible(True)
            if what == "original":
                _show_image(top, p)
                top.set_title("original", fontsize=6)
                continue
            method, chosen, img, nbytes, cpoint, cimg, cbytes = p
            bottom.set_visible(True)
            for ax, im in ((top, img), (bottom, cimg)):
                if im is None:
                    ax.text(
                        0.5,
                        0.5,
                        "can't decode",
                        ha="center",
                        va="center",
                        fontsize=6,
                        transform=ax.transAxes,
                    )
                else:
                    _show_image(ax, im if im.ndim == 3 else im[..., None])
            top.set_title(f"{wrap_label(method)}\n{chosen}", fontsize=6, linespacing=1.0)
            top.set_xlabel(f"{nbytes} B", fontsize=6, labelpad=1)
            bottom.set_xlabel(f"{codec} {cpoint}: {cbytes} B", fontsize=6, labelpad=1)
        fig.suptitle(
            f"Coded by each method's mask vs {codec} at about equal bytes, "
            f"{_where(dataset, model)} image #{image_index}",
            y=1.0,
            va="top",
        )
    fig.nicebench_panels = [(p[0], p[1], p[3], p[4], p[6]) for p in panels]
    return fig


# -- 7. LaTeX leaderboard --------------------------------------------------------------------------
_TEX_ESCAPE = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _num(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


# The LaTeX table's column order: explanation scores, the gate methods' own, cost, compression
_TEX_ORDER = [
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "energy_pointing_game",
    "mask_auroc",
    "saliency_metric",
    "sanity_spearman",
    "mask_share",
    "masked_accuracy",
    "explain_ms_per_image",
    "compression_ratio",
    "bd_rate",
    "bpp",
    "accuracy_compressed",
]
# What a codec row is scored on (it explains nothing)
_CODEC_COLUMNS = {"compression_ratio", "bd_rate", "bpp", "accuracy_compressed"}


def latex_columns(board: pd.DataFrame) -> list[str]:
    """The score columns of the LaTeX leaderboard: those the board has values in (known columns
    in :data:`_TEX_ORDER`, then any other in the board's order)."""
    cols = [
        c
        for c in board.columns
        if c not in (*_ROW, "status", *_NOT_SCORES)
        and not c.endswith(("_lo", "_hi"))
        and pd.api.types.is_numeric_dtype(board[c])
        and board[c].notna().any()
    ]
    rank = {c: i for i, c in enumerate(_TEX_ORDER)}
    return sorted(cols, key=lambda c: rank.get(c, len(rank)))


def _tex_value(row: pd.Series, col: str) -> float | None:
    """The value a LaTeX cell shows: None where empty (and on a codec row, outside the
    compression columns)."""
    if row.kind == "codec" and col not in _CODEC_COLUMNS:
        return None
    v = pd.to_numeric(row.get(col), errors="coerce")
    return None if pd.isna(v) else float(v)


_CAPTION = (
    "Leaderboard: mean over images with its 95% bootstrap interval in brackets; the best "
    "value per column and dataset in bold (the oracle, which reads the ground truth, is "
    "not ranked). Codec rows are scored on compression only."
)


def leaderboard_latex(
    board: pd.DataFrame, directions: dict[str, bool] | None = None, caption: str | None = None
) -> str:
    """The leaderboard as a booktabs ``table*``: one block of rows per dataset (and classifier),
    one column per score the board has values in (arrow: which way is better), each cell the mean
    with its 95% bootstrap interval in brackets where there is one; the best value of each column
    within a dataset in bold (ties all bold; the oracle, which reads the ground truth, is not
    ranked). Needs ``booktabs`` and ``graphicx``."""
    if directions is None:
        directions = Catalogue.from_registry().higher_is_better()
    cols = latex_columns(board)
    arrow = {True: "$\\uparrow$", False: "$\\downarrow$"}
    head = ["Method"] + [
        f"{_tex(METRIC_LABELS.get(c, c))} {arrow[directions.get(c, True)]}" for c in cols
    ]
    lines = [
        "% nicebench leaderboard: mean [95% bootstrap interval]; best per column and dataset in bold",
        "% needs \\usepackage{booktabs} and \\usepackage{graphicx}",
        "\\begin{table*}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{_tex(caption or _CAPTION)}}}",
        "\\label{tab:leaderboard}",
        "\\resizebox{\\textwidth}{!}{%",
        f"\\begin{{tabular}}{{l{'r' * len(cols)}}}",
        "\\toprule",
        " & ".join(head) + " \\\\",
    ]
    for dataset, model in _groups(board):
        part = board[(board.dataset == dataset) & (board.model == model)]
        ranked = part[part.method.map(style.base_name) != "oracle"]
        best = {}  # the best value as printed: ties after rounding are all bold
        for c in cols:
            vals = [v for _, r in ranked.iterrows() if (v := _tex_value(r, c)) is not None]
            if vals:
                best[c] = _num(max(vals) if directions.get(c, True) else min(vals))
        group = _tex(_where(dataset, model))
        lines += ["\\midrule", f"\\multicolumn{{{len(cols) + 1}}}{{l}}{{\\textit{{{group}}}}} \\\\"]
        for _, row in part.iterrows():
            name = _tex(row.method) + (" (codec)" if row.kind == "codec" else "")
            cells = [name]
            for c in cols:
                v = _tex_value(row, c)
                if v is None:
                    cells.append("--")
                    continue
                text = _num(v)
                if best.get(c) == text and style.base_name(row.method) != "oracle":
                    text = f"\\textbf{{{text}}}"
                lo, hi = row.get(f"{c}_lo"), row.get(f"{c}_hi")
                if lo is not None and hi is not None and pd.notna(lo) and pd.notna(hi):
                    text += f" {{\\scriptsize[{_num(float(lo))}, {_num(float(hi))}]}}"
                cells.append(text)
            lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table*}", ""]
    return "\n".join(lines)


# -- 8. trust in rankings --------------------------------------------------------------------------
HEADLINE_METRICS = ("deletion_auc", "insertion_auc")  # the pairwise panel's metric, first present
_SHORT_METRIC = {
    "deletion_auc": "Deletion",
    "insertion_auc": "Insertion",
    "pointing_game": "Pointing",
    "energy_pointing_game": "Energy pointing",
    "saliency_metric": "Saliency metric",
    "sanity_spearman": "Sanity",
    "deletion_blur_auc": "Deletion (blur)",
    "cascade_spearman": "Cascade ρ",
    "cascade_ssim": "Cascade SSIM",
}


def _interval_point(
    ax: plt.Axes, value: float, lo: Any, hi: Any, y: float, colour: str, baseline: bool
) -> None:
    """One row of a forest: the 95% interval as a line (where both ends are known) and the value
    as a dot, or an open square for a baseline or codec."""
    if lo is not None and hi is not None and pd.notna(lo) and pd.notna(hi):
        ax.plot([lo, hi], [y, y], color=colour, lw=1.2, solid_capstyle="butt")
    ax.plot(
        [value],
        [y],
        "s" if baseline else "o",
        ms=4,
        color=colour,
        mfc="white" if baseline else colour,
        mew=1.0,
    )


def _tick_labels(labels: Sequence[str], width: int = 22) -> list[str]:
    """Method labels short enough for a tick: variants of one plugin keep only the parameters
    they differ in (``nice(epochs=1,lam=0.5)``, ``nice(epochs=1,lam=2)`` → ``nice(lam=0.5)``,
    ``nice(lam=2)``), then anything longer than ``width`` characters is cut with ``…``."""

    def params(label: str) -> tuple[str, list[str]]:
        name, _, rest = label.partition("(")
        return name, [p for p in rest.rstrip(")").split(",") if p]

    parsed = [params(label) for label in labels]
    out = []
    for label, (name, ps) in zip(labels, parsed, strict=True):
        if len(label) > width:
            variants = [q for n, q in parsed if n == name]
            if len(variants) > 1:
                common = set.intersection(*(set(q) for q in variants))
                kept = [p for p in ps if p not in common]
                label = f"{name}({','.join(kept)})" if kept else name
        out.append(label if len(label) <= width else label[: width - 1] + "…")
    return out


def _italic_baselines(labels, names: Sequence[str]) -> None:
    for tick, name in zip(labels, names, strict=True):
        if style.is_baseline(name):
            tick.set_color("0.4")
            tick.set_fontstyle("italic")


def rankings_figure(
    trust,
    dataset: str,
    model: str = "default",
    headline: Sequence[str] = HEADLINE_METRICS,
    palette: Palette | None = None,
    marks: dict[str, str] | None = None,
) -> Figure | None:
    """How far one dataset's ranking can be trusted (``trust``:
    :func:`nicebench.report.trust.analyse`): (a) P(row ranks above column) on the first of
    ``headline`` the run has (else its first metric), methods best first, the cells whose pair is
    not separable (the 95% paired interval of the difference includes 0) outlined; (b) Kendall τ
    between the rankings of the metrics that at least 3 ranked methods share; (c) each ranked
    method's combined rank with its 95% interval, best at the top. Baselines in grey italics.
    ``marks``: the metrics not valid on this dataset (column → why), named with † in (a) and (b)
    and left out of (c)."""
    marks = marks or {}

    pw = trust.pairwise
    pw = pw[(pw.dataset == dataset) & (pw.model == model)] if len(pw) else pw
    if pw.empty:
        return None
    metrics = list(dict.fromkeys(pw.metric))
    metric = next(
        (m for m in headline if m in metrics and m not in marks),
        next((m for m in headline if m in metrics), metrics[0]),
    )
    part = pw[pw.metric == metric]
    order = list(part.drop_duplicates("method").sort_values("rank", kind="stable").method)
    p = part.set_index(["method", "other"])["p_above"]
    mat = np.array([[np.nan if a == b else p.get((a, b), np.nan) for b in order] for a in order])
    tau = trust.agreement
    tau = tau[(tau.dataset == dataset) & (tau.model == model) & tau.tau.notna()]
    tmetrics = [m for m in metrics if m in set(tau.metric)]
    tcell = tau.set_index(["metric", "other"])["tau"]
    tmat = np.array(
        [[np.nan if a == b else tcell.get((a, b), np.nan) for b in tmetrics] for a in tmetrics]
    )
    comb = trust.combined
    comb = comb[(comb.dataset == dataset) & (comb.model == model)].sort_values(
        "combined_rank", kind="stable"
    )
    cmap = plt.get_cmap("RdBu").with_extremes(bad="0.92")
    n = len(order)
    with style.context():
        top = max(3.2, 1.3 + 0.2 * n)
        bottom = 0.9 + 0.14 * max(len(comb), 3)
        fig = plt.figure(figsize=(DOUBLE_COLUMN, top + bottom))
        grid = fig.add_gridspec(2, 2, width_ratios=[1.15, 1], height_ratios=[top, bottom])
        ax = fig.add_subplot(grid[0, 0])
        im = ax.imshow(mat, cmap=cmap, vmin=0, vmax=1)
        small = max(4.0, min(6.0, 70 / max(n, 1)))
        for i in range(n):
            for j in range(n):
                v = mat[i, j]
                if np.isnan(v):
                    continue
                text = f"{v:.2f}".replace("0.", ".").replace("1.00", "1").replace(".00", "0")
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=small,
                    color="white" if abs(v - 0.5) > 0.35 else "0.1",
                )
                if 1 - SEPARABLE < v < SEPARABLE:
                    ax.add_patch(
                        plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=0.9, ec="black")
                    )
        ax.set_xticks(range(n), _tick_labels(order), rotation=90)
        ax.set_yticks(range(n), _tick_labels(order))
        _italic_baselines(ax.get_xticklabels(), order)
        _italic_baselines(ax.get_yticklabels(), order)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        higher = bool(part.higher_is_better.iloc[0])
        label = METRIC_LABELS.get(metric, metric) + (" †" if metric in marks else "")
        ax.set_title(
            f"(a) P(row ranks above column), {label} ({'↑' if higher else '↓'} "
            "better)\nboxed: not separable at 95%",
            loc="left",
        )
        bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, ticks=[0, 0.5, 1])
        bar.outline.set_visible(False)
        bar.ax.tick_params(labelsize=6, length=0)
        ax2 = fig.add_subplot(grid[0, 1])
        if len(tmetrics) >= 2:
            names = [
                _SHORT_METRIC.get(m, METRIC_LABELS.get(m, m)) + (" †" if m in marks else "")
                for m in tmetrics
            ]
            im2 = ax2.imshow(tmat, cmap=cmap, vmin=-1, vmax=1)
            for i in range(len(tmetrics)):
                for j in range(len(tmetrics)):
                    if np.isfinite(tmat[i, j]):
                        ax2.text(
                            j,
                            i,
                            f"{tmat[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=small,
                            color="white" if abs(tmat[i, j]) > 0.7 else "0.1",
                        )
            ax2.set_xticks(
                range(len(names)),
                names,
                rotation=35 if len(names) <= 8 else 60,
                ha="right",
                rotation_mode="anchor",
            )
            ax2.set_yticks(range(len(names)), names)
            ax2.tick_params(length=0)
            for spine in ax2.spines.values():
                spine.set_visible(False)
            bar2 = fig.colorbar(im2, ax=ax2, fraction=0.05, pad=0.02, ticks=[-1, 0, 1], shrink=0.85)
            bar2.outline.set_visible(False)
            bar2.ax.tick_params(labelsize=6, length=0)
        else:
            _blank(ax2)
            ax2.text(
                0.5,
                0.5,
                "fewer than two metrics\nshared by 3 methods",
                ha="center",
                va="center",
                transform=ax2.transAxes,
                color="0.4",
            )
        ax2.set_title(
            "(b) Kendall τ between the metrics"
            + (
                "\n†: not valid here (validity.md)"
                if any(m in marks for m in [metric, *tmetrics])
                else ""
            ),
            loc="left",
        )
        ax3 = fig.add_subplot(grid[1, :])
        if len(comb):
            y = np.arange(len(comb))[::-1]
            for yi, row in zip(y, comb.itertuples(), strict=True):
                base = style.is_baseline(row.method, row.kind)
                colour = (
                    "0.5"
                    if base
                    else (palette.color(row.method) if palette else style.OKABE_ITO["blue"])
                )
                _interval_point(
                    ax3,
                    row.combined_rank,
                    row.combined_rank_lo,
                    row.combined_rank_hi,
                    yi,
                    colour,
                    base,
                )
            ax3.set_yticks(y, _tick_labels(list(comb.method)))
            _italic_baselines(ax3.get_yticklabels(), list(comb.method))
            ax3.set_ylim(-0.7, len(comb) - 0.3)
            ax3.set_xlim(0.5, len(comb) + 0.5)
            ax3.grid(True, axis="x")
            refs = sorted(set(pw.loc[pw.reads_ground_truth.astype(bool), "method"]))
            k = int(comb.n_metrics.iloc[0])
            ax3.set_xlabel(
                f"mean rank over {k} metric{'s' if k > 1 else ''} (↓ better)"
                + (f"; {', '.join(refs)} not ranked" if refs else "")
            )
        else:
            _blank(ax3)
        ax3.set_title("(c) Combined rank, 95% interval", loc="left")
        fig.suptitle(_where(dataset, model), x=0.01, ha="left", fontweight="bold")
        fig.tight_layout()
    return fig


# -- 9. ablation forest ---------------------------------------------------------------------------
def ablation_forest(table: pd.DataFrame, dataset: str, model: str) -> Figure | None:
    """One panel per per-image metric, one row per variant: the paired difference variant −
    default (``table``: :func:`nicebench.report.ablation.ablation`) in the metric's better
    direction (right of 0: the variant is better) with its 95% paired-bootstrap interval and
    P(difference > 0); blue where the interval lies above 0 (the variant is better), vermillion
    where it lies below (worse), grey where it holds 0. Metrics the validity audit did not find
    valid here have a red title with †."""
    part = table[(table["dataset"] == dataset) & (table["model"] == model) & table["paired"]]
    part = part[part["difference"].notna()]
    if part.empty:
        return None
    metrics = list(dict.fromkeys(part["metric"]))
    variants = list(dict.fromkeys(part["variant"]))
    baseline = str(part["baseline"].iloc[0])
    better, worse = style.OKABE_ITO["blue"], style.OKABE_ITO["vermillion"]
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    names = _tick_labels([_relative_label(v, baseline) for v in variants], width=26)
    y = np.arange(len(variants))[::-1]
    with style.context():
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(DOUBLE_COLUMN, 0.9 + nrows * (0.75 + 0.16 * len(variants))),
            squeeze=False,
            sharey=True,
        )
        for k, ax in enumerate(axes.flat):
            if k >= len(metrics):
                ax.set_visible(False)
                continue
            metric = metrics[k]
            rows = part[part["metric"] == metric].set_index("variant")
            ax.axvline(0, color="0.3", lw=0.8, zorder=0)
            lims = []
            for yi, variant in zip(y, variants, strict=True):
                if variant not in rows.index:
                    continue
                r = rows.loc[variant]
                colour = (
                    better
                    if r["difference_lo"] > 0
                    else (worse if r["difference_hi"] < 0 else "0.6")
                )
                _interval_point(
                    ax, r["difference"], r["difference_lo"], r["difference_hi"], yi, colour, False
                )
                lims += [r["difference_lo"], r["difference_hi"], r["difference"]]
                ax.annotate(
                    f"{r['p_better']:.2f}",
                    (1.0, yi),
                    xycoords=("axes fraction", "data"),
                    xytext=(2, 0),
                    textcoords="offset points",
                    va="center",
                    ha="left",
                    fontsize=5.5,
                    color="0.25",
                )
            finite = [v for v in lims if pd.notna(v)]
            if finite:  # symmetric about 0, so that left and right read alike
                half = max(abs(min(finite)), abs(max(finite))) * 1.15 or 1.0
                ax.set_xlim(-half, half)
            ax.set_yticks(y, names)
            ax.set_ylim(-0.7, len(variants) - 0.3)
            ax.grid(True, axis="x")
            ax.tick_params(axis="x", labelsize=6)
            first = rows.iloc[0]
            arrow = "↑" if first["higher_is_better"] else "↓"
            title = f"{METRIC_LABELS.get(metric, metric)} ({arrow})"
            if first["verdict"] not in ("valid", ""):
                ax.set_title(f"{title} †", color=style.OKABE_ITO["vermillion"], fontsize=7)
            else:
                ax.set_title(title, fontsize=7)
        fig.suptitle(
            f"{_where(dataset, model)}: variant − {baseline}, paired per image, in each "
            f"metric's better direction (> 0: the variant is better)",
            fontsize=7.5,
            y=1 - 0.08 / fig.get_figheight(),
            va="top",
        )
        fig.text(
            0.5,
            0.005,
            "95% paired-bootstrap interval (1000 replicates): blue above 0 (better), vermillion "
            "below (worse), grey holds 0\nright of each panel: P(difference > 0); "
            "† not valid here (validity.md)",
            ha="center",
            va="bottom",
            fontsize=6,
            color="0.3",
        )
        height = fig.get_figheight()
        fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.3 / height), w_pad=1.6)
    return fig


def _relative_label(label: str, baseline: str) -> str:
    """A variant's label less the parameters it shares with the baseline of the same plugin
    (``nice(codec=jpeg,factor=8,train_quality=30)`` against ``nice(codec=jpeg,factor=8)`` →
    ``nice(train_quality=30)``)."""
    name, _, rest = label.partition("(")
    base_name, _, base_rest = baseline.partition("(")
    if name != base_name or not base_rest:
        return label
    shared = set(base_rest.rstrip(")").split(","))
    kept = [p for p in rest.rstrip(")").split(",") if p and p not in shared]
    return f"{name}({','.join(kept)})" if kept else name


# -- writing ---------------------------------------------------------------------------------------
# No date in a vector file: the same figure gives the same bytes, so a redrawn reference run
# commits only the figures that changed (PNG files carry none).
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def _save(fig: Figure | None, out: Path, stem: str, formats: Iterable[str]) -> list[Path]:
    if fig is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with style.context():
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            fig.savefig(path, dpi=style.DPI, format=fmt, metadata=_NO_DATE.get(fmt))
            paths.append(path)
    plt.close(fig)
    return paths


class _Store:
    """Stands for the run's store in a figure job's arguments (each process opens its own)."""


_STORE = _Store()
#: a figure job: (file stem, a module-level figure function, its arguments, keyword arguments)
FigureJob = tuple[str, Callable[..., Figure | None], tuple, dict]


def _figure_jobs(store: RunStore, keys: set[str] | None) -> tuple[list[FigureJob], pd.DataFrame]:
    """Every figure the run can feed, as jobs (the tables they need computed once, here), and the
    leaderboard (for ``leaderboard.tex``)."""
    palette = run_palette(store, keys)
    board = leaderboard(store, keys)
    cat = catalogue(store)
    directions = cat.higher_is_better()
    jobs: list[FigureJob] = []
    groups = _groups(board)
    for dataset, model in groups:
        jobs.append(
            (
                f"saliency_grid_{_safe(_where(dataset, model))}",
                saliency_grid,
                (_STORE, dataset, model, keys),
                {},
            )
        )
    jobs.append(("curves", curves_figure, (_STORE, keys), {"palette": palette}))
    jobs.append(("cascade", cascade_figure, (_STORE, keys), {"palette": palette}))
    valid = validity(store, keys)
    marks = not_valid(valid)
    for metric in forest_metrics(board):
        jobs.append(
            (
                f"forest_{_safe(metric)}",
                forest_figure,
                (board, metric, palette, directions),
                {"marks": marks},
            )
        )
    for dataset, model in _groups(valid):
        jobs.append(
            (
                f"validity_curves_{_safe(_where(dataset, model))}",
                validity_curves_figure,
                (_STORE, dataset, model, keys),
                {"board": board},
            )
        )
    points = compression_points(store, keys)
    for dataset, model in _groups(points):
        jobs.append(
            (
                f"rate_accuracy_{_safe(_where(dataset, model))}",
                rate_accuracy_figure,
                (points, dataset, model, palette),
                {},
            )
        )
    sweeps = lambda_sweeps(store, keys)
    for dataset, model in _groups(sweeps):
        jobs.append(
            (
                f"nice_masks_over_lambda_{_safe(_where(dataset, model))}",
                lambda_mask_grid,
                (_STORE, dataset, model, keys),
                {"sweeps": sweeps},
            )
        )
    jobs.append(("nice_lambda_tradeoff", lambda_tradeoff, (_STORE, keys, board, sweeps), {}))
    for dataset, model in groups:
        rows = board[(board.dataset == dataset) & (board.model == model)]
        heads = (
            {
                m: str(p)
                for m, p in zip(rows.method, rows.operating_point, strict=True)
                if isinstance(p, str)
            }
            if "operating_point" in rows
            else {}
        )
        jobs.append(
            (
                f"mixed_resolution_{_safe(_where(dataset, model))}",
                mixed_resolution_examples,
                (_STORE, dataset, model, keys),
                {"headline": heads},
            )
        )
    table = ablation(store, keys, board)
    for dataset, model in _groups(table):
        jobs.append(
            (
                f"ablation_{_safe(_where(dataset, model))}",
                ablation_forest,
                (table, dataset, model),
                {},
            )
        )
    trust = analyse(per_image(store, keys), exclude=rank_exclusions(valid), catalogue=cat)
    for dataset, model in _groups(trust.pairwise):
        jobs.append(
            (
                f"rankings_{_safe(_where(dataset, model))}",
                rankings_figure,
                (trust, dataset, model),
                {"palette": palette, "marks": marks.get((dataset, model), {})},
            )
        )
    return jobs, board


def _draw(
    run_dir: Path, formats: Sequence[str], job: FigureJob, store: RunStore | None = None
) -> list[Path]:
    """Draw one job's figure and save it in each of ``formats`` (opening the run's store when the
    job reads it and none is given)."""
    stem, fn, args, kwargs = job
    own = store is None and any(isinstance(a, _Store) for a in args)
    if own:
        store = RunStore(run_dir)
    try:
        args = tuple(store if isinstance(a, _Store) else a for a in args)
        return _save(fn(*args, **kwargs), run_dir / "figures", stem, formats)
    finally:
        if own:
            store.close()


def figure_workers(n_jobs: int) -> int:
    """Processes that draw a run's figures: ``NICEBENCH_FIGURE_WORKERS``, else the CPUs this
    process may use (at most 4); 1 draws them in this process."""
    env = os.environ.get("NICEBENCH_FIGURE_WORKERS", "").strip()
    if env:
        return max(1, min(int(env), n_jobs))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 4, n_jobs))


def write_figures(
    run_dir: str | Path,
    formats: Sequence[str] = ("png", "pdf"),
    keys: set[str] | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Draw every figure the run can feed into ``run_dir/figures/`` in each of ``formats``
    (``png`` at 300 dpi, ``pdf`` vector) and write ``figures/leaderboard.tex``; ``keys``: only
    these cells (a config's, as :func:`nicebench.runner.run` passes). Returns the files written.
    Opens the store only to read it; needs no model. ``workers`` (default
    :func:`figure_workers`): processes that draw the figures side by side; the files are the same
    either way."""
    run_dir = Path(run_dir)
    if not (run_dir / "store.sqlite").exists():
        raise FileNotFoundError(
            f"{run_dir} holds no run (no store.sqlite): run `nicebench run` "
            "first, or name the run directory it wrote"
        )
    out = run_dir / "figures"
    formats = [f.lower().lstrip(".") for f in formats]
    store: RunStore | None = RunStore(run_dir)
    try:
        jobs, board = _figure_jobs(store, keys)
        directions = catalogue(store).higher_is_better()
        workers = figure_workers(len(jobs)) if workers is None else max(1, int(workers))
        if workers > 1 and len(jobs) > 1:
            store.close()
            store = None
            paths = _draw_in_processes(run_dir, formats, jobs, workers)
        else:
            paths = [p for job in jobs for p in _draw(run_dir, formats, job, store)]
        if len(board):
            out.mkdir(parents=True, exist_ok=True)
            tex = out / "leaderboard.tex"
            tex.write_text(leaderboard_latex(board, directions))
            paths.append(tex)
    finally:
        if store is not None:
            store.close()
    _forget_stale(out, paths)
    return paths


def _draw_in_processes(
    run_dir: Path, formats: Sequence[str], jobs: list[FigureJob], workers: int
) -> list[Path]:
    """The jobs on a pool of ``workers`` forked processes, costliest first; the paths in the
    jobs' order. (Forked: a fresh interpreter would re-run a caller's unguarded script. The
    children only draw with matplotlib and read the store through their own connections.)"""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        return [p for job in jobs for p in _draw(run_dir, formats, job)]
    order = sorted(range(len(jobs)), key=lambda i: _job_cost(jobs[i]), reverse=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {i: pool.submit(_draw, run_dir, list(formats), jobs[i]) for i in order}
        done = {i: f.result() for i, f in futures.items()}
    return [p for i in range(len(jobs)) for p in done[i]]


def _job_cost(job: FigureJob) -> int:
    """A rough order of drawing cost (image grids and multi-panel figures first)."""
    heavy = (
        ablation_forest,
        saliency_grid,
        mixed_resolution_examples,
        lambda_mask_grid,
        rankings_figure,
        curves_figure,
        rate_accuracy_figure,
    )
    return 1 if job[1] in heavy else 0


_MANIFEST = ".written"  # the files the last write_figures call wrote, one name per line


def _forget_stale(out: Path, paths: list[Path]) -> None:
    """Delete the figures an earlier call wrote that this one did not (e.g. a dataset the run no
    longer has), so the folder shows the run as it is; files others put there stay."""
    manifest = out / _MANIFEST
    names = {p.name for p in paths}
    if manifest.exists():
        for name in set(manifest.read_text().split()) - names:
            (out / name).unlink(missing_ok=True)
    if paths:
        manifest.write_text("".join(f"{n}\n" for n in sorted(names)))
