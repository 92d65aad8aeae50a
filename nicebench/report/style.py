"""The one matplotlib style of nicebench's figures: print sizes, fonts and a colour-blind-safe
palette (Okabe & Ito) in which a method keeps its colour, line style and marker in every figure.

    from nicebench.report import style
    with style.context():
        fig, ax = plt.subplots(figsize=(style.SINGLE_COLUMN, 2.4))
        ax.plot(x, y, label=m, **palette.line(m))
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = [
    "SINGLE_COLUMN",
    "DOUBLE_COLUMN",
    "DPI",
    "OKABE_ITO",
    "BASELINES",
    "GATE_METHODS",
    "RC",
    "Palette",
    "context",
    "is_baseline",
]

SINGLE_COLUMN = 3.5  # inches: one column of a two-column paper (IEEE, ACM, NeurIPS)
DOUBLE_COLUMN = 7.16  # inches: the full text width
DPI = 300  # raster output

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Black is kept for the oracle, greys for the other baselines and the codecs.
OKABE_ITO = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "bluish green": "#009E73",
    "orange": "#E69F00",
    "reddish purple": "#CC79A7",
    "sky blue": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
_COLOURS = [
    OKABE_ITO[k]
    for k in (
        "blue",
        "vermillion",
        "bluish green",
        "orange",
        "reddish purple",
        "sky blue",
        "yellow",
    )
]
_LINESTYLES = ["-", "--", "-.", (0, (1, 1))]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
# The built-in methods in a fixed order: each keeps its slot (colour, then line style) whatever
# else a run holds; other methods take the free slots in sorted order.
_KNOWN = ["gradcam", "nice", "saliency", "ig", "rise", "lime", "occlusion", "nice-opt", "rtsal"]
# Sanity baselines and the oracle: references, drawn in black and greys with their own styles.
BASELINES = {
    "oracle": {"color": "#000000", "linestyle": "-", "marker": "*"},
    "random": {"color": "#7f7f7f", "linestyle": ":", "marker": "x"},
    "center": {"color": "#7f7f7f", "linestyle": "--", "marker": "+"},
    "edges": {"color": "#7f7f7f", "linestyle": "-.", "marker": "1"},
}
_CODEC_STYLES = [
    {"color": "#404040", "linestyle": ls, "marker": "."} for ls in ("-", "--", "-.", ":")
]
GATE_METHODS = ("nice", "nice-opt")  # methods with a binary mask of per-pixel gates

RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by IEEE PDF eXpress
    "ps.fonttype": 42,
    "image.interpolation": "nearest",
    "figure.dpi": 100,
}


@contextlib.contextmanager
def context() -> Iterator[None]:
    """Draw inside ``with context():`` to get the house style (matplotlib's rc context)."""
    with plt.rc_context(RC):
        yield


def base_name(method: str) -> str:
    """A leaderboard label's plugin name: ``"rise(n_masks=500)"`` → ``"rise"``."""
    return method.split("(", 1)[0]


def is_baseline(method: str, kind: str = "method") -> bool:
    """Whether a leaderboard row is a reference rather than a contender: the sanity baselines,
    the oracle and every codec row."""
    return kind == "codec" or base_name(method) in BASELINES


class Palette:
    """Stable styles for a run's methods and codecs.

    A built-in method has a fixed slot (:data:`_KNOWN`); other names fill the free slots in sorted
    order, so the same name gets the same style in every figure of a run. Slots run through the
    seven Okabe–Ito colours with a solid line, then again with dashed, dash-dot and dotted lines,
    and each slot has its own marker, so more methods than colours stay apart in greyscale too.
    Variants of one plugin (``nice(lam=0.2)``, ``nice(lam=1)``) are separate names.
    """

    def __init__(self, methods: Iterable[str] = (), codecs: Iterable[str] = ()):
        self._slots: dict[str, int] = {}
        self._codecs: dict[str, int] = {}
        names = list(dict.fromkeys(methods))
        free = iter(i for i in itertools.count() if i >= len(_KNOWN))
        taken = set()
        for name in names:
            if name in _KNOWN and name not in BASELINES:
                self._slots[name] = _KNOWN.index(name)
                taken.add(name)
        for name in sorted(n for n in names if n not in taken and n not in BASELINES):
            self._slots[name] = next(free)
        for name in dict.fromkeys(codecs):
            self._codecs[name] = len(self._codecs)

    def line(self, method: str, kind: str = "method") -> dict[str, object]:
        """``color``, ``linestyle`` and ``marker`` keyword arguments for ``method``."""
        if kind == "codec":
            i = self._codecs.setdefault(method, len(self._codecs))
            return dict(_CODEC_STYLES[i % len(_CODEC_STYLES)])
        if method in BASELINES:
            return dict(BASELINES[method])
        if base_name(method) in BASELINES:
            return dict(BASELINES[base_name(method)])
        if method not in self._slots:
            self._slots[method] = max([len(_KNOWN) - 1, *self._slots.values()]) + 1
        slot = self._slots[method]
        return {
            "color": _COLOURS[slot % len(_COLOURS)],
            "linestyle": _LINESTYLES[(slot // len(_COLOURS)) % len(_LINESTYLES)],
            "marker": _MARKERS[slot % len(_MARKERS)],
        }

    def color(self, method: str, kind: str = "method") -> str:
        return str(self.line(method, kind)["color"])
