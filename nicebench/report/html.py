"""The run's static HTML report: ``RUN_DIR/report/index.html``, drawn from the run store alone.

One self-contained page (no network, no CDN, no external script or style; every image is a
``data:`` URI): the leaderboard per dataset (and model), sortable by any column, each score with
its 95% interval and the better direction in its header; how far each ranking can be trusted
(each metric's order with its separable steps, Kendall τ between the metrics); every figure in
``RUN_DIR/figures/``; a per-image browser (each sample image with every method's map and that
image's scores); the classifier accuracies, timings, failed cells with their errors, the run's
settings and versions.

Every string from a plugin, a config or a dataset goes through :func:`html.escape`; the page's
Content-Security-Policy allows only its own inline script and style (by hash) and ``data:``
images, so even a string that escaped escaping could neither run a script nor load anything. The
page embeds no JSON in its script: the data is in the (escaped) HTML, the script only sorts tables
and switches sample images.

Public: :func:`write_report` (the file) and :func:`render_report` (the page as a string).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..metric_spec import DEFAULT_SETTINGS
from ..store import RUN_PHASES, RunStore
from .columns import Catalogue, catalogue
from .scores import per_image
from .tables import leaderboard
from .trust import MIN_TAU_METHODS, SEPARABLE, analyse, order_chain
from .validity import (
    THRESHOLDS_NOTE,
    at_chance,
    classifier_rows,
    classifier_warning,
    not_valid,
    rank_exclusions,
    table_cells,
    validity,
)

__all__ = ["write_report", "render_report"]

_ROW = ["dataset", "model", "method", "kind"]
# Figures are embedded at screen resolution: no wider than this many pixels (a 300-dpi figure
# of 7 in is ~130 dpi then), lossy WebP; the 300-dpi PNG and the PDF beside them are linked.
_FIGURE_MAX_WIDTH = 900
_FIGURE_WEBP_QUALITY = 90
# Sample tiles are drawn at an integer multiple of the image size close to this many CSS pixels.
_TILE_PX = 112
_TILE_MAX_PX = 160  # larger sample images are drawn shrunk to this
# Directions for columns no metric spec names (the spec's own direction wins when there is one).
_COLUMN_HELP = {
    "n_images": "images scored",
    "explain_ms_per_image": "wall time of explain() per image (ms)",
    "compression_ratio": "smallest bytes / reference bytes at accuracy within 1 point of the "
    "reference (empty when no operating point qualifies)",
    "bd_rate": "Bjøntegaard rate difference against the reference codec's quality sweep "
    "(negative: fewer bytes at equal accuracy)",
    "bd_codec": "codec of the quality sweep bd_rate is measured against",
    "bpp": "bits per pixel at the headline operating point",
    "accuracy_original": "classifier accuracy on the original images",
    "accuracy_compressed": "classifier accuracy on the decoded images at the headline point",
    "accuracy_reference": "classifier accuracy on the decoded reference images",
    "payload_ratio": "payload bytes / reference bytes at the headline point",
    "operating_point": "the headline operating point",
    "within_tolerance": "whether the headline point is within the accuracy tolerance",
    "status": "ok, or how many of the row's cells failed",
}


# -- small helpers --------------------------------------------------------------------------------


def _class_name(index: int, names: list[str] | None) -> str:
    """``3 (star)`` where the class names are known, else ``3``."""
    return f"{index} ({names[index]})" if names and 0 <= index < len(names) else str(index)


def _e(value: Any) -> str:
    """Text for HTML (element content and quoted attribute values alike)."""
    return html.escape(str(value), quote=True)


def _isnan(value: Any) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: float) -> str:
    if _isnan(value):
        return ""
    value = float(value)
    if value != 0 and abs(value) < 0.001:
        return f"{value:.1e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def _webp_uri(image: Any, lossless: bool) -> str:
    """A Pillow image as a WebP ``data:`` URI: lossless (every pixel kept: the sample tiles, half
    the bytes of a PNG) or lossy at :data:`_FIGURE_WEBP_QUALITY` (the figures)."""
    buf = io.BytesIO()
    if lossless:
        image.save(buf, format="WEBP", lossless=True, quality=100, method=4)
    else:
        image.save(buf, format="WEBP", quality=_FIGURE_WEBP_QUALITY, method=6)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_uri(array: np.ndarray, shape: tuple[int, int] | None = None) -> str:
    """A uint8 array ([H, W], [H, W, 1], [H, W, 3] or [H, W, 4]) as a lossless WebP data URI,
    shrunk to ``shape`` (H, W) when given and smaller (large images would make a heavy page)."""
    from PIL import Image

    array = np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    image = Image.fromarray(array)
    if shape is not None and (shape[0] < image.height or shape[1] < image.width):
        image = image.resize((shape[1], shape[0]), Image.BOX)
    return _webp_uri(image, lossless=True)


def _tile_shape(height: int, width: int) -> tuple[tuple[int, int] | None, tuple[int, int]]:
    """(the size a sample's PNGs are drawn at, or None for the stored size; the size they are
    shown at): small images blown up by a whole factor (drawn pixelated), large ones shrunk."""
    side = max(height, width)
    if side > _TILE_MAX_PX:
        scale = _TILE_MAX_PX / side
        drawn = (max(1, round(height * scale)), max(1, round(width * scale)))
        return drawn, drawn
    k = max(1, round(_TILE_PX / side))
    return None, (height * k, width * k)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _group_title(dataset: str, model: str, several_models: bool) -> str:
    return f"{dataset} · {model}" if several_models else dataset


# -- directions -----------------------------------------------------------------------------------
def _descriptions(cat: Catalogue) -> dict[str, str]:
    """Column → what it means: the report's own columns, then the run's metrics."""
    return {**_COLUMN_HELP, **cat.descriptions()}


def _header(col: str, directions: dict[str, bool], help_: dict[str, str], numeric: bool) -> str:
    better = directions.get(col)
    mark, note, attr = "", "", ""
    if better is not None:
        mark = f' <span class="dir">{"↑" if better else "↓"}</span>'
        note = "higher is better" if better else "lower is better"
        attr = f' data-better="{"higher" if better else "lower"}"'
    title = "; ".join(t for t in (help_.get(col, ""), note, "click to sort") if t)
    kind = "num" if numeric else "text"
    return (
        f'<th data-type="{kind}"{attr} title="{_e(title)}"><button type="button">'
        f"{_e(col).replace('_', '_<wbr>')}{mark}</button></th>"
    )


# -- sections -------------------------------------------------------------------------------------
def _leaderboard_section(
    board: pd.DataFrame, several_models: bool, validity: pd.DataFrame | None, cat: Catalogue
) -> str:
    directions, help_ = cat.higher_is_better(), _descriptions(cat)
    bad = not_valid(validity) if validity is not None else {}
    blind = at_chance(validity) if validity is not None else set()
    parts = [
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        '<p class="note">Mean over images, with its 95% bootstrap interval below it. '
        "↑ higher is better, ↓ lower is better; <b>bold</b>: the best method per column. "
        "†: the metric is not valid on this dataset (hover for why; "
        '<a href="#validity">the validity audit</a>): no best is named in it. '
        "Click a column header to sort (best first, click again to flip).</p>",
    ]
    if board.empty:
        parts.append("<p>No cells in this run yet.</p></section>")
        return "".join(parts)
    skip = {"dataset", "model"}
    for (dataset, model), group in board.groupby(["dataset", "model"], sort=False):
        cols = [c for c in group.columns if c not in skip and not c.endswith(("_lo", "_hi"))]
        cols = [c for c in cols if c in ("method", "kind") or group[c].notna().any()]
        if "status" in cols and (group.status == "ok").all():
            cols.remove("status")
        numeric = {c: pd.api.types.is_numeric_dtype(group[c]) for c in cols}
        methods = group[group.kind == "method"]
        best: dict[str, float] = {}
        marked = bad.get((dataset, model), {})
        for c in cols:
            if c in marked or (dataset, model) in blind:
                continue
            if numeric[c] and c in directions and c != "n_images" and methods[c].notna().any():
                values = methods[c].astype(float).dropna()
                if values.nunique() > 1:  # a column where every method ties marks no one
                    best[c] = values.max() if directions[c] else values.min()
        title = _group_title(dataset, model, several_models)
        parts.append(
            f'<h3>{_e(title)}</h3><div class="scroll"><table class="board sortable" '
            f'data-dataset="{_e(dataset)}" data-model="{_e(model)}"><thead><tr>'
        )
        parts += [_header(c, directions, help_, numeric[c]) for c in cols]
        parts.append("</tr></thead><tbody>")
        for _, row in group.iterrows():
            parts.append(f'<tr class="{_e(row["kind"])}">')
            for c in cols:
                v = row[c]
                if c in ("method", "kind") or not numeric[c]:
                    text = "" if _isnan(v) else str(v)
                    cls = ' class="name"' if c == "method" else ""
                    if c == "status" and text != "ok":
                        cls = ' class="failed"'
                    parts.append(f'<td{cls} data-v="{_e(text)}">{_e(text)}</td>')
                    continue
                if _isnan(v):
                    parts.append('<td class="num" data-v=""></td>')
                    continue
                if c == "n_images":
                    text = str(int(v))
                elif c == "within_tolerance":
                    text = "yes" if float(v) > 0.5 else "no"
                else:
                    text = _num(v)
                lo, hi = row.get(f"{c}_lo"), row.get(f"{c}_hi")
                ci = ""
                if not (_isnan(lo) or _isnan(hi)):
                    ci = f'<span class="ci">{_num(lo)} – {_num(hi)}</span>'
                strong = c in best and row["kind"] == "method" and float(v) == best[c]
                if strong:
                    text = f"<b>{text}</b>"
                if c in marked:
                    text += f'<span class="failed" title="{_e(marked[c])}"> †</span>'
                parts.append(f'<td class="num" data-v="{float(v)!r}">{text}{ci}</td>')
            parts.append("</tr>")
        parts.append("</tbody></table></div>")
    parts.append("</section>")
    return "".join(parts)


def _figures_section(run_dir: Path) -> str:
    parts = ['<section id="figures"><h2>Figures</h2>']
    paths = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    paths = [p for p in paths if not p.name.startswith(_VALIDITY_FIGURE)]  # in their section
    shown = 0
    for path in paths:
        html = _figure_html(path)
        parts.append(html)
        shown += html.startswith("<figure>")
    if not shown and not paths:
        parts.append("<p>No figures in <code>figures/</code> yet.</p>")
    parts.append("</section>")
    return "".join(parts)


_VALIDITY_FIGURE = "validity_curves_"


def _figure_html(path: Path) -> str:
    """A figure of ``figures/`` embedded at screen resolution (see :data:`_FIGURE_MAX_WIDTH`), with
    links to its full-resolution PNG and its PDF beside the report."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            screen = Image.new("RGB", im.size, "white")  # figures are opaque; any alpha on white
            screen.paste(im, mask=im.getchannel("A") if "A" in im.getbands() else None)
    except (OSError, ValueError) as exc:  # a damaged file: named, not shown
        return f'<p class="failed">{_e(path.name)}: not a readable PNG ({_e(exc)})</p>'
    if screen.width > _FIGURE_MAX_WIDTH:
        height = max(1, round(screen.height * _FIGURE_MAX_WIDTH / screen.width))
        screen = screen.resize((_FIGURE_MAX_WIDTH, height), Image.LANCZOS)
    href = "../figures/" + urllib.parse.quote(path.name)
    links = [f'<a href="{_e(href)}">PNG</a>']
    if path.with_suffix(".pdf").exists():
        pdf = "../figures/" + urllib.parse.quote(path.with_suffix(".pdf").name)
        links.append(f'<a href="{_e(pdf)}">PDF</a>')
    return (
        f'<figure><img src="{_webp_uri(screen, lossless=False)}" width="{screen.width}" '
        f'height="{screen.height}" alt="{_e(path.name)}"><figcaption>{_e(path.name)} '
        f'<span class="links">({", ".join(links)})</span></figcaption></figure>'
    )


def _validity_section(run_dir: Path, table: pd.DataFrame, several_models: bool) -> str:
    """ "Can these metrics be trusted here?": the validity audit's verdicts per dataset with the
    numbers behind them, and each dataset's curves of oracle, the best method and random."""
    parts = [
        '<section id="validity"><h2>Can these metrics be trusted here?</h2>',
        '<p class="note">Every metric is audited on every dataset of the run '
        "(<code>validity.csv</code>, <code>validity.md</code>): <i>range</i> (a curve's "
        "blank end near chance, the original image well above it), <i>reactivity</i> (a "
        "good map scores better than a bad one: oracle − random, and the best method on the "
        "trained − the randomised classifier, in units of the metric's spread over methods, "
        "with paired-bootstrap P) and <i>stability</i> (Kendall τ of the methods' order on "
        "two disjoint halves of the images, and under small input noise). A metric that is "
        "not valid is marked † in the leaderboard and left out of the combined rank there. "
        f"Thresholds: {_e(THRESHOLDS_NOTE)}.</p>",
    ]
    if table.empty:
        parts.append("<p>No per-image scores in this run.</p></section>")
        return "".join(parts)
    header = [
        "metric",
        "verdict",
        "range: blank → original (chance)",
        "oracle − random (spreads, P)",
        "best method: trained − randomised (spreads, P)",
        "τ halves [95%]",
        "τ noise",
        "in combined rank",
        "why",
    ]
    figures = run_dir / "figures"
    for (dataset, model), part in table.groupby(["dataset", "model"], sort=False):
        rows = []
        for r in part.itertuples():
            verdict = (
                f'<span class="failed">{_e(r.verdict)}</span>' if r.verdict != "valid" else "valid"
            )
            rng, orc, rnd, tau = (_e(cell) for cell in table_cells(r))
            why = "" if r.verdict == "valid" else _e(r.reason)
            tau_noise = "–" if _isnan(r.tau_noise) else f"{float(r.tau_noise):.2f}"
            rows.append(
                [
                    _e(r.metric),
                    verdict,
                    rng,
                    orc,
                    rnd,
                    tau,
                    tau_noise,
                    "yes" if r.in_combined_rank else "no",
                    why,
                ]
            )
        title = _group_title(dataset, model, several_models)
        parts.append(f"<h3>{_e(title)}</h3>" + _table(header, rows, "plain validity"))
        where = dataset if model == "default" else f"{dataset} · {model}"  # as figures.py names
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in where).strip("_")
        path = figures / f"{_VALIDITY_FIGURE}{safe}.png"
        if path.exists():
            parts.append(_figure_html(path))
    parts.append("</section>")
    return "".join(parts)


def _warnings(table: pd.DataFrame) -> str:
    """The classifiers at chance, at the top of the report."""
    if table.empty:
        return ""
    return "".join(
        f'<div class="warning">{_e(classifier_warning(c))}</div>' for c in classifier_rows(table)
    )


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


_SEQUENTIAL, _DIVERGING = "viridis", "RdBu_r"


def _render_map(array: np.ndarray, signed: bool, shape: tuple[int, int] | None) -> str:
    a = np.nan_to_num(np.asarray(array, dtype=np.float32))
    if signed:
        rgba = _colormap(_DIVERGING)((np.clip(a, -1, 1) + 1) / 2, bytes=True)
    else:
        rgba = _colormap(_SEQUENTIAL)(np.clip(a, 0, 1), bytes=True)
    return _image_uri(rgba[:, :, :3], shape)


def _colorbar(name: str) -> str:
    ramp = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (10, 1))
    return _image_uri(_colormap(name)(ramp, bytes=True)[:, :, :3])


def _tile(uri: str, caption: str, px: tuple[int, int], title: str = "") -> str:
    tip = f' title="{_e(title)}"' if title else ""
    return (
        f'<figure class="tile"{tip}><img src="{uri}" width="{px[1]}" height="{px[0]}" '
        f'alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]


def _browser_section(
    store: RunStore,
    board: pd.DataFrame,
    images: pd.DataFrame,
    keys: set[str] | None,
    several_models: bool,
    cat: Catalogue,
) -> str:
    directions, help_ = cat.higher_is_better(), _descriptions(cat)
    parts = ['<section id="images"><h2>Per-image browser</h2>']
    maps = store.artifacts("map", keys)
    gates = store.artifacts("gate_mask", keys)
    samples = store.samples()
    if maps.empty or samples.empty:
        parts.append("<p>This run kept no sample maps.</p></section>")
        return "".join(parts)
    order = {m: i for i, m in enumerate(dict.fromkeys(board.method))} if len(board) else {}
    used: set[str] = set()
    for (dataset, model), group in maps.groupby(["dataset", "model"], sort=False):
        own = samples[samples.dataset == dataset]
        if own.empty:
            continue
        arrays = {
            (int(i), n): a for i, n, a in zip(own.image_index, own.name, own.array, strict=True)
        }
        indices = sorted({i for i, n in arrays if n == "image"})
        methods = sorted(dict.fromkeys(group.method), key=lambda m: order.get(m, len(order)))
        signed = {
            m: bool(min(float(np.min(a)) for a in group[group.method == m].array) < -0.01)
            for m in methods
        }
        used.update(_DIVERGING if s else _SEQUENTIAL for s in signed.values())
        by_key = {
            (m, int(i)): a
            for m, i, a in zip(group.method, group.image_index, group.array, strict=True)
        }
        gsel = gates[(gates.dataset == dataset) & (gates.model == model)] if len(gates) else gates
        gate_by = (
            {
                (m, int(i)): a
                for m, i, a in zip(gsel.method, gsel.image_index, gsel.array, strict=True)
            }
            if len(gsel)
            else {}
        )
        scores = (
            images[(images.dataset == dataset) & (images.model == model)] if len(images) else images
        )
        labels_pred = scores  # every row (codecs too) names the image's prediction
        if len(scores):
            scores = scores[scores.kind == "method"]
        # The image's scores in the leaderboard's column order; whether the classifier got the
        # image right is in the picker, the same for every method.
        rank = {c: i for i, c in enumerate(board.columns)}
        score_cols = sorted(
            (
                c
                for c in scores.columns
                if c not in (*_ROW, "image_index", "label", "pred", "accuracy_original")
                and scores[c].notna().any()
            ),
            key=lambda c: rank.get(c, len(rank)),
        )
        first = indices[0] if indices else 0
        height, width = _as_rgb(arrays[(first, "image")]).shape[:2] if indices else (32, 32)
        drawn, px = _tile_shape(height, width)
        title = _group_title(dataset, model, several_models)
        parts.append(
            f'<div class="browser" data-dataset="{_e(dataset)}" data-model="{_e(model)}">'
            f"<h3>{_e(title)}</h3>"
        )
        names = cat.class_names(dataset)
        options = []
        for i in indices:
            label = arrays.get((i, "label"))  # stored as a 1-element array
            label = None if label is None else int(np.asarray(label).reshape(-1)[0])
            rows = labels_pred[labels_pred.image_index == i]
            pred = int(rows.pred.iloc[0]) if len(rows) else None
            text = f"image {i}"
            if label is not None:
                text += f" · label {_class_name(label, names)}"
            if pred is not None:
                text += f" · predicted {_class_name(pred, names)}" + (
                    "" if label is None or pred == label else " (wrong)"
                )
            options.append(f'<option value="{i}">{_e(text)}</option>')
        parts.append(
            f'<div class="controls"><button type="button" class="prev" '
            f'aria-label="previous image">◀</button><select aria-label="sample image '
            f'of {_e(title)}">{"".join(options)}</select><button type="button" '
            f'class="next" aria-label="next image">▶</button></div>'
        )
        for n, i in enumerate(indices):
            hidden = "" if n == 0 else " hidden"
            image = _as_rgb(arrays[(i, "image")])
            tiles = [_tile(_image_uri(image, drawn), f"image {i}", px)]
            if (i, "mask") in arrays:
                tiles.append(
                    _tile(
                        _image_uri(
                            (np.asarray(arrays[(i, "mask")]) > 0).astype(np.uint8) * 255, drawn
                        ),
                        "ground truth",
                        px,
                    )
                )
            for m in methods:
                if (m, i) in by_key:
                    note = (
                        "signed map, blue < 0 < red"
                        if signed[m]
                        else "map, 0 (dark) to its largest value (yellow)"
                    )
                    tiles.append(_tile(_render_map(by_key[(m, i)], signed[m], drawn), m, px, note))
                if (m, i) in gate_by:
                    keep = np.asarray(gate_by[(m, i)]) > 0
                    shown = np.where(keep[:, :, None], image, (image * 0.2).astype(np.uint8))
                    tiles.append(
                        _tile(
                            _image_uri(shown, drawn),
                            f"{m} · gate",
                            px,
                            f"pixels the gate keeps ({keep.mean():.0%})",
                        )
                    )
            parts.append(
                f'<div class="sample" data-image="{i}"{hidden}>'
                f'<div class="tiles">{"".join(tiles)}</div>'
            )
            rows = scores[scores.image_index == i]
            if len(rows) and score_cols:
                rows = rows.assign(_o=rows.method.map(lambda m: order.get(m, len(order))))
                rows = rows.sort_values("_o", kind="stable")
                parts.append('<div class="scroll"><table class="scores sortable"><thead><tr>')
                parts.append(_header("method", {}, help_, False))
                parts += [_header(c, directions, help_, True) for c in score_cols]
                parts.append("</tr></thead><tbody>")
                for _, r in rows.iterrows():
                    parts.append(
                        f'<tr><td class="name" data-v="{_e(r.method)}">{_e(r.method)}</td>'
                    )
                    for c in score_cols:
                        v = r[c]
                        dv = "" if _isnan(v) else repr(float(v))
                        parts.append(f'<td class="num" data-v="{dv}">{_num(v)}</td>')
                    parts.append("</tr>")
                parts.append("</tbody></table></div>")
            parts.append("</div>")
        parts.append("</div>")
    legend = []
    if _SEQUENTIAL in used:
        legend.append(
            f'<span><img src="{_colorbar(_SEQUENTIAL)}" width="128" height="10" '
            'alt="sequential colour scale"> maps ≥ 0: 0 → the map\'s largest value</span>'
        )
    if _DIVERGING in used:
        legend.append(
            f'<span><img src="{_colorbar(_DIVERGING)}" width="128" height="10" '
            'alt="diverging colour scale"> signed maps: −max → 0 → +max</span>'
        )
    parts.insert(
        1,
        '<p class="note">Pick a sample image; each method\'s map is divided by its '
        "largest magnitude. Gate methods also show the pixels their binary mask keeps."
        f'</p><p class="legend">{" ".join(legend)}</p>',
    )
    parts.append("</section>")
    return "".join(parts)


def _table(header: list[str], rows: list[list[str]], cls: str = "plain") -> str:
    """A table whose cells are already HTML (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _accuracy_section(images: pd.DataFrame, board: pd.DataFrame, several_models: bool) -> str:
    parts = ['<section id="accuracy"><h2>Classifier accuracy</h2>']
    if images.empty or "accuracy_original" not in images:
        parts.append("<p>No per-image scores in this run.</p></section>")
        return "".join(parts)
    rows = []
    order = list(dict.fromkeys(zip(board.dataset, board.model, strict=True)))
    groups = dict(list(images.groupby(["dataset", "model"], sort=False)))
    for dataset, model in [*order, *(g for g in groups if g not in order)]:
        if (dataset, model) not in groups:
            continue
        per = groups[(dataset, model)].groupby("image_index").accuracy_original.first().dropna()
        ref = ""
        if "accuracy_reference" in board:
            sel = board[(board.dataset == dataset) & (board.model == model)].accuracy_reference
            if sel.notna().any():
                ref = _num(sel.dropna().iloc[0])
        rows.append(
            [
                _e(_group_title(dataset, model, several_models)),
                str(len(per)),
                _num(per.mean()) if len(per) else "",
                ref,
            ]
        )
    parts.append('<p class="note">Share of this run\'s images the classifier gets right.</p>')
    parts.append(
        _table(
            [
                "dataset",
                "images",
                "accuracy on the originals",
                "accuracy on the reference codec's images",
            ],
            rows,
            "plain numbers",
        )
    )
    parts.append("</section>")
    return "".join(parts)


def _rankings_section(
    images: pd.DataFrame,
    several_models: bool,
    exclude: dict[tuple[str, str], set[str]] | None,
    cat: Catalogue,
) -> str:
    """How far the rankings can be trusted (:mod:`nicebench.report.trust`): per dataset, each
    metric's order with the separable steps marked, and Kendall τ between the metrics."""
    parts = ['<section id="rankings"><h2>Trust in rankings</h2>']
    trust = analyse(images, exclude=exclude, catalogue=cat)
    if trust.pairwise.empty:
        parts.append("<p>No per-image scores in this run.</p></section>")
        return "".join(parts)
    parts.append(
        '<p class="note">Paired bootstrap over images (1000 replicates; each resamples the '
        "images once, the same for every method). Order: best first on the mean; <b>&gt;</b> "
        f"the two neighbours are separable (P(ranks above) ≥ {SEPARABLE}: the 95% interval of "
        "their paired difference excludes 0), <b>≈</b> they are not; [brackets]: reads the "
        "ground truth. τ: Kendall's τ-b between two metrics' orders of the ranked methods, with "
        "its 95% bootstrap interval. Every pair: <code>rank_probability.md</code> / "
        "<code>.csv</code>; the <code>rankings_*</code> figures draw both, with the combined "
        "rank.</p>"
    )
    for (dataset, model), group in trust.pairwise.groupby(["dataset", "model"], sort=False):
        parts.append(f"<h3>{_e(_group_title(dataset, model, several_models))}</h3>")
        rows = []
        for metric, part in group.groupby("metric", sort=False):
            arrow = "↑" if bool(part.higher_is_better.iloc[0]) else "↓"
            rows.append([_e(metric), arrow, str(int(part.n_images.max())), _e(order_chain(part))])
        parts.append(_table(["metric", "better", "images", "order"], rows))
        tau = trust.agreement
        tau = tau[(tau.dataset == dataset) & (tau.model == model) & tau.tau.notna()]
        metrics = list(dict.fromkeys(tau.metric))
        if len(metrics) >= 2:
            cell = tau.set_index(["metric", "other"])
            trows = []
            for a in metrics:
                cells = [_e(a)]
                for b in metrics:
                    if a == b:
                        cells.append("")
                        continue
                    r = cell.loc[(a, b)]
                    cells.append(
                        f'{_num(r.tau)}<span class="ci">{_num(r.tau_lo)} – {_num(r.tau_hi)}</span>'
                    )
                trows.append(cells)
            parts.append(
                f'<p class="note">Kendall τ between the metrics\' rankings (metrics '
                f"that at least {MIN_TAU_METHODS} ranked methods share).</p>"
            )
            parts.append(_table(["τ", *(_e(m) for m in metrics)], trows, "plain numbers"))
    parts.append("</section>")
    return "".join(parts)


def _timings_section(cells: pd.DataFrame, several_models: bool) -> str:
    directions = {
        "cells": None,
        "images": None,
        "seconds": False,
        "explain_ms_per_image": False,
        "peak_mem_mb": False,
    }
    help_ = {
        "seconds": "wall time of the row's cells, summed",
        "explain_ms_per_image": "explain() time per image, weighted by images",
        "peak_mem_mb": "largest peak memory of the row's cells (MB)",
    }
    parts = ['<section id="timings"><h2>Timings</h2>']
    if cells.empty:
        parts.append("<p>No cells.</p></section>")
        return "".join(parts)
    total = float(cells.seconds.fillna(0).sum())
    parts.append(
        f'<p class="note">{len(cells)} cells took {total:.1f} s in all (the sum over '
        "cells; a parallel executor's wall time is shorter). Click a header to sort.</p>"
    )
    cols = [
        "dataset",
        "method",
        "kind",
        "cells",
        "images",
        "seconds",
        "explain_ms_per_image",
        "peak_mem_mb",
    ]
    num = {"cells", "images", "seconds", "explain_ms_per_image", "peak_mem_mb"}
    parts.append('<div class="scroll"><table class="timings sortable"><thead><tr>')
    parts += [
        _header(c, {k: v for k, v in directions.items() if v is not None}, help_, c in num)
        for c in cols
    ]
    parts.append("</tr></thead><tbody>")
    for (dataset, model, method, kind), g in cells.groupby(_ROW, sort=False):
        ok = g[g.status == "ok"]
        w = ok.n_images.to_numpy(dtype=float)
        x = pd.to_numeric(ok.explain_ms_per_image, errors="coerce").to_numpy(dtype=float)
        known = np.isfinite(x) & (w > 0)  # cells that recorded no explain time are left out
        ms = float(np.average(x[known], weights=w[known])) if known.any() else float("nan")
        values = {
            "dataset": _group_title(dataset, model, several_models),
            "method": method,
            "kind": kind,
            "cells": len(g),
            "images": int(g.n_images.fillna(0).sum()),
            "seconds": float(g.seconds.fillna(0).sum()),
            "explain_ms_per_image": ms,
            "peak_mem_mb": float(g.peak_mem_mb.max()) if "peak_mem_mb" in g else math.nan,
        }
        parts.append("<tr>")
        for c in cols:
            v = values[c]
            if c in num:
                dv = "" if _isnan(v) else repr(float(v))
                text = (
                    str(v)
                    if c in ("cells", "images")
                    else f"{v:.1f}"
                    if c in ("seconds", "peak_mem_mb") and not _isnan(v)
                    else _num(v)
                )
                parts.append(f'<td class="num" data-v="{dv}">{text}</td>')
            else:
                parts.append(f'<td data-v="{_e(v)}">{_e(v)}</td>')
        parts.append("</tr>")
    parts.append(
        f'</tbody><tfoot><tr><td colspan="5">total</td><td class="num">{total:.1f}</td>'
        "<td></td><td></td></tr></tfoot></table></div></section>"
    )
    return "".join(parts)


_PHASE_HELP = {
    "models": "loading or training the classifiers, fitting the methods",
    "explain": "the methods' explain()",
    "metrics": "the metrics, one by one",
    "audit": "the validity audit's side passes",
    "other": "the rest of the cells: data, the classifier's predictions, samples",
    "tables": "the leaderboard and the other tables",
    "figures": "the paper figures",
    "report": "this page",
}
SLOWEST_PAIRS = 10  # (cell, metric) pairs the section lists


def _time_spent_section(run: dict[str, Any], timings: pd.DataFrame, several_models: bool) -> str:
    """Where the time went: the latest run's phases (``run["timings"]``, what the run itself
    computed and drew), then, over the cells shown, each metric's total and the slowest
    (cell, metric) pairs."""
    parts = ['<section id="time-spent"><h2>Where the time went</h2>']
    recorded = (run or {}).get("timings") or {}
    seconds, counts = recorded.get("seconds") or {}, recorded.get("cells") or {}
    if seconds:
        total = sum(seconds.values())
        rows = [
            [
                f'<span title="{_e(_PHASE_HELP.get(phase, ""))}">{_e(phase)}</span>',
                f"{seconds[phase]:.1f}" if phase in seconds else "—",
                f"{100 * seconds[phase] / total:.0f}%" if phase in seconds and total else "",
            ]
            for phase in [*RUN_PHASES, *(k for k in seconds if k not in RUN_PHASES)]
        ]
        rows.append(["total", f"{total:.1f}", ""])
        done = (
            f"{counts.get('computed', 0)} cells computed, {counts.get('stored', 0)} already in "
            "the store (those cost nothing)"
            if counts
            else "its cells"
        )
        later = (
            " <code>nicebench run</code> stores the report's own time once the page is written."
            if "report" not in seconds
            else ""
        )
        parts.append(
            f'<p class="note">The latest run\'s wall time by phase, in seconds: {_e(done)}; the '
            f"cells' parts summed over cells (a parallel executor overlaps them).{later}</p>"
            + _table(["phase", "seconds", "share"], rows, "plain numbers")
        )
    else:
        parts.append(
            '<p class="note">The latest run recorded no phase times (a store written '
            "before runs kept them).</p>"
        )
    metrics = timings[timings.phase == "metrics"] if len(timings) else timings
    if metrics.empty:
        parts.append('<p class="note">No per-metric times stored for these cells.</p></section>')
        return "".join(parts)
    totals = (
        metrics.groupby("name").seconds.agg(["sum", "count"]).sort_values("sum", ascending=False)
    )
    all_metrics = float(totals["sum"].sum())
    rows = [
        [
            _e(name),
            str(int(r["count"])),
            f"{r['sum']:.2f}",
            f"{100 * r['sum'] / all_metrics:.0f}%" if all_metrics else "",
        ]
        for name, r in totals.iterrows()
    ]
    parts.append(
        f'<h3>Per metric</h3><p class="note">Each metric\'s wall time summed over the '
        f"{metrics.cell_key.nunique()} cells shown (a metric that reuses what an earlier one "
        "computed, such as a gate mask, is charged less).</p>"
        + _table(["metric", "cells", "seconds", "share"], rows, "plain numbers")
    )
    slow = metrics.sort_values("seconds", ascending=False, kind="stable").head(SLOWEST_PAIRS)
    rows = [
        [
            _e(
                f"{_group_title(r.dataset, r.model, several_models)} · {r.method} · shard {r.shard}"
            ),
            _e(r.name),
            f"{r.seconds:.2f}",
        ]
        for r in slow.itertuples()
    ]
    parts.append(
        "<h3>Slowest (cell, metric) pairs</h3>"
        + _table(["cell", "metric", "seconds"], rows, "plain time")
        + "</section>"
    )
    return "".join(parts)


def _failed_section(cells: pd.DataFrame, several_models: bool) -> str:
    failed = cells[cells.status != "ok"] if len(cells) else cells
    parts = [f'<section id="failed"><h2>Failed cells ({len(failed)})</h2>']
    if failed.empty:
        parts.append("<p>None: every cell finished.</p></section>")
        return "".join(parts)
    rows = [
        [
            _e(_group_title(r.dataset, r.model, several_models)),
            _e(r.method),
            _e(r.kind),
            _e(r.shard),
            f"<pre>{_e(r.error or r.status)}</pre>",
        ]
        for r in failed.itertuples()
    ]
    parts.append(
        '<div class="scroll">'
        + _table(["dataset", "method", "kind", "shard", "error"], rows, "plain failed-cells")
        + "</div></section>"
    )
    return "".join(parts)


def _value_html(value: Any) -> str:
    if isinstance(value, str):
        return _e(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _e(", ".join(value)) if value else "<i>none</i>"
    if value is None:
        return "<i>none</i>"
    return f"<code>{_e(json.dumps(value, default=str))}</code>"


def _settings_section(run: dict[str, Any]) -> str:
    parts = ['<section id="settings"><h2>Settings and versions</h2>']
    if not run:
        parts.append("<p>No run recorded in this store.</p></section>")
        return "".join(parts)
    config = run.get("config") or {}
    rows = [[_e(k), _value_html(v)] for k, v in config.items() if k != "settings"]
    settings = config.get("settings") or {}
    rows += [[_e(f"settings.{k}"), _value_html(v)] for k, v in settings.items()]
    if not settings:
        rows.append(["settings", "<i>none: the metrics' defaults below</i>"])
    parts.append(
        f'<h3>Run configuration</h3><p class="note">Started {_e(run.get("started_at", ""))}.'
        "</p>" + _table(["setting", "value"], rows)
    )
    defaults = [[_e(k), _e(v)] for k, v in DEFAULT_SETTINGS.items()]
    if defaults:
        parts.append(
            "<h3>Deletion and insertion defaults</h3>" + _table(["setting", "default"], defaults)
        )
    versions = run.get("versions") or {}
    parts.append(
        "<h3>Versions</h3>"
        + _table(["component", "version"], [[_e(k), _e(v)] for k, v in versions.items()])
    )
    parts.append("</section>")
    return "".join(parts)


# -- page -----------------------------------------------------------------------------------------
_CSS = """
:root { --fg: #1d2330; --muted: #5b6473; --line: #d9dee7; --bg2: #f4f6f9; --accent: #2456a6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; background: #fff; }
header { background: var(--bg2); border-bottom: 1px solid var(--line); padding: 16px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: var(--muted); }
nav { margin-top: 8px; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
main { padding: 4px 28px 40px; max-width: 1500px; }
h2 { margin: 28px 0 8px; font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { margin: 18px 0 6px; font-size: 15px; }
.note { color: var(--muted); margin: 4px 0 10px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin-bottom: 6px; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg2); text-align: left; font-weight: 600; vertical-align: bottom; }
th .dir { white-space: nowrap; }
th button { font: inherit; font-weight: 600; color: inherit; background: none; border: 0;
            padding: 0; cursor: pointer; text-align: inherit; }
th[aria-sort="ascending"] button::after { content: " ▲"; color: var(--accent); }
th[aria-sort="descending"] button::after { content: " ▼"; color: var(--accent); }
th .dir { color: var(--accent); }
td.num { text-align: right; white-space: nowrap; }
th[data-type="num"] { text-align: right; }
td.name { font-weight: 600; white-space: nowrap; }
table.sortable td.name, table.sortable th:first-child { position: sticky; left: 0; z-index: 1; }
table.sortable td.name { background: #fff; }
table.sortable tr.codec td.name { background: #fbfbf3; }
table.sortable tbody tr:hover td.name { background: #eef3fb; }
td .ci { display: block; color: var(--muted); font-size: 11px; }
tr.codec td { background: #fbfbf3; }
tbody tr:hover td { background: #eef3fb; }
.failed { color: #a3261b; }
.warning { border: 2px solid #a3261b; background: #fdf0ee; color: #5a140e; padding: 8px 12px;
           margin: 12px 0; font-weight: 600; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px; max-width: 900px; }
code { font-size: 12px; }
figure { margin: 12px 0 20px; }
#figures img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
.browser { margin-bottom: 24px; }
.controls { display: flex; gap: 6px; align-items: center; margin: 4px 0 10px; }
.controls select, .controls button { font: inherit; padding: 2px 6px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 8px; }
.tile { margin: 0; text-align: center; }
.tile img { display: block; image-rendering: pixelated; border: 1px solid var(--line); }
.tile figcaption { max-width: 140px; font-size: 12px; color: var(--fg); overflow-wrap: anywhere; }
.legend { display: flex; gap: 24px; color: var(--muted); font-size: 12px; }
.legend img { vertical-align: middle; border: 1px solid var(--line); }
table.plain td:first-child { font-weight: 600; }
table.numbers td + td { text-align: right; }
table.time td:last-child { text-align: right; }
footer { color: var(--muted); font-size: 12px; padding: 12px 28px; border-top: 1px solid var(--line); }
"""

_JS = """
(function () {
  "use strict";
  function value(row, col) {
    var td = row.cells[col];
    return td.hasAttribute("data-v") ? td.getAttribute("data-v") : td.textContent;
  }
  function sortTable(table, th, col) {
    var numeric = th.getAttribute("data-type") === "num";
    var state = th.getAttribute("aria-sort");
    var ascending = state === "ascending" ? false : state === "descending" ? true
      : th.getAttribute("data-better") !== "higher";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
      other.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col), y = value(b, col);
      var xe = x === "", ye = y === "";
      if (xe || ye) { return xe === ye ? 0 : xe ? 1 : -1; }  // empty cells last either way
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? c : -c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortTable(table, th, col); }); }
    });
  });
  document.querySelectorAll(".browser").forEach(function (browser) {
    var select = browser.querySelector("select");
    var samples = browser.querySelectorAll(".sample");
    function show(i) {
      var n = samples.length;
      i = ((i % n) + n) % n;
      samples.forEach(function (s, j) { s.hidden = j !== i; });
      select.selectedIndex = i;
    }
    select.addEventListener("change", function () { show(select.selectedIndex); });
    browser.querySelector(".prev").addEventListener("click", function () {
      show(select.selectedIndex - 1);
    });
    browser.querySelector(".next").addEventListener("click", function () {
      show(select.selectedIndex + 1);
    });
  });
})();
"""


def render_report(run_dir: str | Path, keys: set[str] | None = None) -> str:
    """The report page of the run in ``run_dir`` as a string (see :func:`write_report`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "store.sqlite").exists():
        raise FileNotFoundError(
            f"{run_dir} holds no run store (store.sqlite): run "
            f"`nicebench run --out {run_dir}` first"
        )
    store = RunStore(run_dir)
    try:
        cells = store.cells(keys)
        board = leaderboard(store, keys)
        images = per_image(store, keys)
        run = store.latest_run()
        several_models = len(set(cells.model)) > 1 if len(cells) else False
        valid = validity(store, keys)
        cat = catalogue(store)
        sections = [
            _warnings(valid),
            _leaderboard_section(board, several_models, valid, cat),
            _validity_section(run_dir, valid, several_models),
            _rankings_section(images, several_models, rank_exclusions(valid), cat),
            _figures_section(run_dir),
            _browser_section(store, board, images, keys, several_models, cat),
            _accuracy_section(images, board, several_models),
            _timings_section(cells, several_models),
            _time_spent_section(run, store.timings(keys), several_models),
            _failed_section(cells, several_models),
            _settings_section(run),
        ]
    finally:
        store.close()
    versions = run.get("versions", {}) if run else {}
    n_failed = int((cells.status != "ok").sum()) if len(cells) else 0
    datasets = list(dict.fromkeys(cells.dataset)) if len(cells) else []
    n_methods = len(set(cells.method)) if len(cells) else 0
    meta = (
        f"{_e(run_dir.resolve().name)} · started {_e(run.get('started_at', '?'))} · code "
        f"{_e(versions.get('code', '?'))} · {len(datasets)} datasets"
        + (f" ({_e(', '.join(datasets))})" if datasets else "")
        + f" · {n_methods} methods and codecs · {len(cells)} cells"
        + (f' · <span class="failed">{n_failed} failed</span>' if n_failed else "")
    )
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("leaderboard", "Leaderboard"),
            ("validity", "Validity"),
            ("rankings", "Trust in rankings"),
            ("figures", "Figures"),
            ("images", "Per-image browser"),
            ("accuracy", "Classifier accuracy"),
            ("timings", "Timings"),
            ("time-spent", "Where the time went"),
            ("failed", "Failed cells"),
            ("settings", "Settings and versions"),
        )
    )
    csp = (
        f"default-src 'none'; img-src data:; style-src {_sha256(_CSS)}; "
        f"script-src {_sha256(_JS)}; base-uri 'none'; form-action 'none'"
    )
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>nicebench report · {_e(run_dir.resolve().name)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{_CSS}</style></head><body>"
        f'<header><h1>nicebench report</h1><div class="meta">{meta}</div><nav>{nav}</nav></header>'
        f"<main>{''.join(sections)}</main>"
        f"<footer>Written by nicebench {_e(__version__)} on {_e(written)} from "
        f"{_e(run_dir.resolve().name)}/store.sqlite; a static page that loads nothing from the "
        "network.</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_report(run_dir: str | Path, keys: set[str] | None = None) -> Path:
    """Write ``run_dir/report/index.html`` from the run's store (``keys``: only these cells) and
    return its path. The file is replaced atomically."""
    run_dir = Path(run_dir)
    text = render_report(run_dir, keys)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = out / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
