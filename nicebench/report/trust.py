"""How far the leaderboard's rankings can be trusted, from the per-image scores a run stores.

For every (dataset, model) of a run, on every per-image metric column whose direction the metric
specs give (so a metric added later is covered without a change here):

- :func:`rank_probability`: the probability that each method ranks above each other, by a paired
  bootstrap over images: each replicate resamples the image indices once (seeded), the same
  indices for every method and every metric, and compares the two methods' means over the
  resampled images both scored (a tie counts half); a method×method matrix per metric;
- :func:`kendall_tau`: Kendall's τ-b between the rankings two metrics give the methods (each
  metric oriented so that larger is better, so τ = 1 means the same order), with a bootstrap
  interval from the same replicates;
- :func:`average_ranks` → the **combined rank**: per replicate, the methods are ranked on every
  metric that all of them have (rank 1 = best, ties share the average rank) and the ranks are
  averaged over those metrics; the leaderboard shows the average rank on the full sample with the
  2.5 and 97.5 percentiles of the replicates (:data:`COMBINED_RANK_NOTE`).

Which rows are ranked: the ``method`` rows; codec rows carry no per-image map scores and get
none. A method that reads the ground-truth masks (``needs_masks``, the ``oracle``) is a
reference: it appears in the pairwise matrices (flagged), but is left out of the τ and the
combined rank so that it shifts no contender's rank.

:func:`analyse` computes all three from a per-image table
(:func:`nicebench.report.tables.per_image`); :func:`write_trust_tables` writes
``rank_probability.csv``/``.md`` and ``metric_agreement.csv``/``.md`` beside the leaderboard.
Torch-free apart from reading the metric specs' directions.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import Catalogue

__all__ = [
    "N_BOOT",
    "SEPARABLE",
    "COMBINED_RANK_NOTE",
    "Trust",
    "GroupScores",
    "bootstrap_counts",
    "resampled_means",
    "rank_probability",
    "kendall_tau",
    "average_ranks",
    "metric_directions",
    "score_groups",
    "analyse",
    "combined_ranks",
    "order_chain",
    "write_trust_tables",
]

N_BOOT = 1000  # replicates, as the leaderboard's intervals
# A pair is separable when the 95% paired-bootstrap interval of its difference excludes 0:
# P(a above b) >= 0.975 or <= 0.025.
SEPARABLE = 0.975
_ROW = ["dataset", "model", "method", "kind"]
COMBINED_RANK_NOTE = (
    "`combined_rank`: per bootstrap replicate (images resampled once, the same images for every "
    "method and metric; 1000 replicates, seeded), the methods are ranked on each per-image metric "
    "that every ranked method has on the dataset and that the validity audit found valid there "
    "(`validity.md`; 1 = best in the metric's own better direction, "
    "ties share the average rank) and the ranks are averaged over those metrics; shown: that "
    "average on the full sample ± half the 2.5–97.5 percentile interval of the replicates. "
    "Lower is better. Methods that read the ground truth (`needs_masks`, e.g. `oracle`) are "
    "references and left unranked (so they shift no other rank); codec rows have no per-image "
    "map scores and no rank. Metrics used:"
)


# -- the statistics (numpy only) ------------------------------------------------------------------
def bootstrap_counts(n_images: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_images]``: how often each image is drawn in each replicate. The image indices
    are resampled with replacement once per replicate, exactly as
    :func:`nicebench.bootstrap.bootstrap_ci` draws them for the same seed."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(n_boot, n_images))
    flat = (idx + n_images * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_images).reshape(n_boot, n_images).astype(float)


def resampled_means(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``scores [..., n_images]`` (NaN: not scored) → ``[n_boot, ...]``: each row's mean over the
    images of each replicate that it scored (NaN where a replicate drew none of them)."""
    finite = np.isfinite(scores)
    total = np.tensordot(counts, np.where(finite, scores, 0.0), axes=([1], [scores.ndim - 1]))
    n = np.tensordot(counts, finite.astype(float), axes=([1], [scores.ndim - 1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def rank_probability(scores: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired bootstrap: ``scores [M, n_images]`` oriented (larger = better; NaN: not scored),
    ``counts`` from :func:`bootstrap_counts` → (``P [M, M]``, ``n_common [M, M]``).

    ``P[a, b]``: the share of replicates in which a's mean over the resampled images that both a
    and b scored is above b's, a tie counting half (so ``P[a, b] + P[b, a] = 1`` and identical
    scores give 0.5); NaN for a pair with no image in common. ``n_common``: images both scored."""
    finite = np.isfinite(scores)
    both = finite[:, None, :] & finite[None, :, :]
    diff = np.where(both, scores[:, None, :] - scores[None, :, :], 0.0)
    total = np.tensordot(counts, diff, axes=([1], [2]))  # [B, M, M]: the sum of differences
    valid = np.tensordot(counts, both.astype(float), axes=([1], [2])) > 0
    n_valid = valid.sum(0)
    wins = ((total > 0) & valid).sum(0) + 0.5 * ((total == 0) & valid).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n_valid > 0, wins / n_valid, np.nan)
    return p, both.sum(-1)


def kendall_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b between ``x`` and ``y`` along their last axis (the other axes broadcast;
    an element that is NaN in either is left out, as ``scipy.stats.kendalltau(...,
    nan_policy="omit")``): (concordant − discordant pairs) / √(pairs untied in x · pairs untied
    in y); NaN where either has no untied pair."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(x.shape[-1], 1)
    ok = np.isfinite(x) & np.isfinite(y)
    ok = ok[..., i] & ok[..., j]
    sx = np.where(ok, np.sign(x[..., i] - x[..., j]), 0.0)
    sy = np.where(ok, np.sign(y[..., i] - y[..., j]), 0.0)
    den = np.sqrt((sx != 0).sum(-1) * (sy != 0).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(-1) / den, np.nan)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = the largest, ties sharing their average rank (as
    ``scipy.stats.rankdata(-values, method="average")``); NaN entries get NaN and take no rank."""
    v = np.asarray(values, dtype=float)
    a, b = v[..., :, None], v[..., None, :]
    above = (b > a).sum(-1)
    ties = (b == a).sum(-1)  # itself included
    return np.where(np.isfinite(v), above + (ties + 1) / 2, np.nan)


# -- a run's scores -------------------------------------------------------------------------------
def metric_directions(catalogue: Catalogue | None = None) -> dict[str, bool]:
    """Per-image metric column → higher is better, from the run's ``catalogue`` (the registered
    metrics' without one; the report's own columns, accuracy and the compression figures, are
    not rankings of a map)."""
    return (catalogue or Catalogue.from_registry()).metric_directions()


def not_in_combined_rank(catalogue: Catalogue | None = None) -> set[str]:
    """The metric columns left out of the combined rank (their spec's ``in_combined_rank`` is
    False: descriptive properties of a map, not its quality)."""
    return (catalogue or Catalogue.from_registry()).not_in_combined_rank()


@dataclass
class GroupScores:
    """One (dataset, model): ``scores [metric, method, image]`` as stored (NaN: not scored)."""

    dataset: str
    model: str
    methods: list[str]
    reference: np.ndarray  # [M] bool: reads the ground truth (not ranked)
    metrics: list[str]
    higher: np.ndarray  # [K] bool
    images: np.ndarray  # [n] image indices
    scores: np.ndarray  # [K, M, n]
    counted: np.ndarray | None = None  # [K] bool: counts in the combined rank (default: all)

    @property
    def oriented(self) -> np.ndarray:
        """The scores with every metric turned so that larger is better."""
        return self.scores * np.where(self.higher, 1.0, -1.0)[:, None, None]

    def has(self) -> np.ndarray:
        """``[K, M]``: which method has any score for which metric."""
        return np.isfinite(self.scores).any(-1)

    def ranked_metrics(self) -> list[int]:
        """The metrics of the combined rank: those that count in it (``counted``) and that every
        ranked method (not a reference) has."""
        contenders = ~self.reference
        if not contenders.any():
            return []
        counted = np.ones(len(self.metrics), bool) if self.counted is None else self.counted
        return [
            k for k in range(len(self.metrics)) if counted[k] and self.has()[k, contenders].all()
        ]


def score_groups(
    img: pd.DataFrame, directions: dict[str, bool] | None = None, catalogue: Catalogue | None = None
) -> list[GroupScores]:
    """The per-image table (:func:`~nicebench.report.tables.per_image`) as one
    :class:`GroupScores` per (dataset, model): its ``method`` rows that have a score, every
    metric column with a known direction that some method has (directions, the combined rank's
    metrics and the reference methods from the run's ``catalogue``; ``directions`` overrides)."""
    catalogue = catalogue or Catalogue.from_registry()
    directions = catalogue.metric_directions() if directions is None else directions
    left_out = catalogue.not_in_combined_rank()
    if img.empty:
        return []
    rows = img[img["kind"] == "method"]
    metrics = [c for c in img.columns if c in directions and rows[c].notna().any()]
    groups: list[GroupScores] = []
    for (dataset, model), part in rows.groupby(["dataset", "model"], sort=False):
        cols = [c for c in metrics if part[c].notna().any()]
        if not cols:
            continue
        methods = [
            m
            for m in dict.fromkeys(part["method"])
            if part.loc[part["method"] == m, cols].notna().to_numpy().any()
        ]
        images = np.sort(part["image_index"].unique())
        cube = np.full((len(cols), len(methods), len(images)), np.nan)
        for j, method in enumerate(methods):
            sel = part[part["method"] == method].drop_duplicates("image_index")
            pos = np.searchsorted(images, sel["image_index"].to_numpy())
            cube[:, j, pos] = sel[cols].to_numpy(dtype=float).T
        groups.append(
            GroupScores(
                str(dataset),
                str(model),
                methods,
                np.array([catalogue.reads_ground_truth(m) for m in methods], dtype=bool),
                cols,
                np.array([directions[c] for c in cols], dtype=bool),
                images,
                cube,
                np.array([c not in left_out for c in cols], dtype=bool),
            )
        )
    return groups


@dataclass
class Trust:
    """What :func:`analyse` found: three long tables and the groups they came from.

    ``pairwise``: dataset, model, metric, higher_is_better, method, other, p_above (P(method
    ranks above other)), mean_diff (mean of method − other over the images both scored, in the
    metric's units), n_images (those images), separable, reads_ground_truth, rank (the method's
    place on the metric's full-sample mean, 1 = best);
    ``agreement``: dataset, model, metric, other, tau, tau_lo, tau_hi, n_methods;
    ``combined``: dataset, model, method, kind, combined_rank, combined_rank_lo, combined_rank_hi,
    n_metrics, metrics."""

    groups: list[GroupScores] = field(default_factory=list)
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    combined: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_boot: int = N_BOOT
    seed: int = 0

    def combined_metrics(self) -> dict[tuple[str, str], list[str]]:
        """(dataset, model) → the metrics its combined rank averages."""
        return {
            (g.dataset, g.model): [g.metrics[k] for k in g.ranked_metrics()] for g in self.groups
        }


_PAIR_COLUMNS = [
    "dataset",
    "model",
    "metric",
    "higher_is_better",
    "method",
    "other",
    "p_above",
    "mean_diff",
    "n_images",
    "separable",
    "reads_ground_truth",
    "rank",
]
_TAU_COLUMNS = ["dataset", "model", "metric", "other", "tau", "tau_lo", "tau_hi", "n_methods"]
_RANK_COLUMNS = [
    *_ROW,
    "combined_rank",
    "combined_rank_lo",
    "combined_rank_hi",
    "n_metrics",
    "metrics",
]
MIN_TAU_METHODS = 3  # fewer methods in common: no τ (two items always agree or disagree fully)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warning for an all-NaN slice (a method without a metric): its result is NaN."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _percentiles(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - level) / 2
    with _quiet():
        lo, hi = np.nanquantile(values, [alpha, 1 - alpha], axis=0)
    return lo, hi


def _pairs(g: GroupScores, k: int, counts: np.ndarray, full: np.ndarray) -> pd.DataFrame:
    """The pairwise table of metric ``k`` of group ``g`` (see :class:`Trust`)."""
    idx = np.flatnonzero(g.has()[k])
    s = g.oriented[k, idx]
    p, common = rank_probability(s, counts)
    finite = np.isfinite(s)
    both = finite[:, None, :] & finite[None, :, :]
    raw = g.scores[k, idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(both, raw[:, None, :] - raw[None, :, :], 0.0).sum(-1) / common
    a, b = np.nonzero(~np.eye(len(idx), dtype=bool))
    methods, place = np.asarray(g.methods, dtype=object)[idx], average_ranks(full[k, idx])
    return pd.DataFrame(
        {
            "dataset": g.dataset,
            "model": g.model,
            "metric": g.metrics[k],
            "higher_is_better": bool(g.higher[k]),
            "method": methods[a],
            "other": methods[b],
            "p_above": p[a, b],
            "mean_diff": diff[a, b],
            "n_images": common[a, b].astype(int),
            "separable": (p[a, b] >= SEPARABLE) | (p[a, b] <= 1 - SEPARABLE),
            "reads_ground_truth": g.reference[idx][a],
            "rank": place[a],
        },
        columns=_PAIR_COLUMNS,
    )


def analyse(
    img: pd.DataFrame,
    n_boot: int = N_BOOT,
    seed: int = 0,
    directions: dict[str, bool] | None = None,
    only_combined: bool = False,
    exclude: dict[tuple[str, str], set[str]] | None = None,
    catalogue: Catalogue | None = None,
) -> Trust:
    """Rank probabilities, metric agreement and combined ranks of a per-image table
    (``only_combined``: the combined ranks alone, as the leaderboard needs). ``exclude``:
    (dataset, model) → metric columns left out of that group's combined rank (those the
    validity audit found not valid there, :mod:`nicebench.report.validity`). ``catalogue``: the
    run's (:func:`nicebench.report.columns.catalogue`), as :func:`score_groups`."""
    groups = score_groups(img, directions, catalogue)
    for g in groups:
        left_out = (exclude or {}).get((g.dataset, g.model), set())
        if left_out:
            counted = np.ones(len(g.metrics), bool) if g.counted is None else g.counted
            g.counted = counted & np.array([m not in left_out for m in g.metrics], dtype=bool)
    pairs: list[pd.DataFrame] = []
    taus, ranks = [], []
    for g in groups:
        counts = bootstrap_counts(len(g.images), n_boot, seed)
        s = g.oriented
        with _quiet():
            full = np.nanmean(s, axis=-1)  # [K, M]
        boot = resampled_means(s, counts)  # [B, K, M]
        has = g.has()
        contenders = np.flatnonzero(~g.reference)
        used = g.ranked_metrics()
        if used and len(contenders):
            point = average_ranks(full[np.ix_(used, contenders)]).mean(0)
            with _quiet():
                per_boot = np.nanmean(average_ranks(boot[:, used][:, :, contenders]), axis=1)
            lo, hi = _percentiles(per_boot)
            names = ",".join(g.metrics[k] for k in used)
            for c, j in enumerate(contenders):
                ranks.append(
                    (
                        g.dataset,
                        g.model,
                        g.methods[j],
                        "method",
                        float(point[c]),
                        float(lo[c]),
                        float(hi[c]),
                        len(used),
                        names,
                    )
                )
        if only_combined:
            continue
        pairs += [_pairs(g, k, counts, full) for k in range(len(g.metrics))]
        for k, metric in enumerate(g.metrics):
            for m, other in enumerate(g.metrics):
                if m == k:
                    continue
                n = int((has[k, contenders] & has[m, contenders]).sum())
                if n < MIN_TAU_METHODS:
                    tau = lo = hi = np.nan
                else:
                    tau = float(kendall_tau(full[k, contenders], full[m, contenders]))
                    lo, hi = _percentiles(
                        kendall_tau(boot[:, k, contenders], boot[:, m, contenders])
                    )
                taus.append((g.dataset, g.model, metric, other, tau, float(lo), float(hi), n))
    pairwise = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(columns=_PAIR_COLUMNS)
    return Trust(
        groups,
        pairwise,
        pd.DataFrame(taus, columns=_TAU_COLUMNS),
        pd.DataFrame(ranks, columns=_RANK_COLUMNS),
        n_boot,
        seed,
    )


def combined_ranks(
    img: pd.DataFrame,
    n_boot: int = N_BOOT,
    seed: int = 0,
    exclude: dict[tuple[str, str], set[str]] | None = None,
    catalogue: Catalogue | None = None,
) -> pd.DataFrame:
    """The leaderboard's ``combined_rank`` columns, one row per ranked (dataset, model, method,
    kind): ``combined_rank``, ``combined_rank_lo``, ``combined_rank_hi`` (``exclude``: as
    :func:`analyse`)."""
    ranks = analyse(
        img, n_boot, seed, only_combined=True, exclude=exclude, catalogue=catalogue
    ).combined
    return ranks[[*_ROW, "combined_rank", "combined_rank_lo", "combined_rank_hi"]]


# -- tables ---------------------------------------------------------------------------------------
def _where(dataset: str, model: str) -> str:
    return dataset if model == "default" else f"{dataset} · {model}"


def _p(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def order_chain(pairwise: pd.DataFrame) -> str:
    """One metric's methods best first, each adjacent pair joined by ``>`` when separable
    (P ≥ :data:`SEPARABLE`) and ``≈`` when not; references (oracle) in brackets."""
    if pairwise.empty:
        return ""
    ranks = pairwise.drop_duplicates("method").sort_values("rank", kind="stable")
    names = list(ranks["method"])
    ref = dict(zip(ranks["method"], ranks["reads_ground_truth"], strict=True))
    p = pairwise.set_index(["method", "other"])["p_above"]
    text = f"[{names[0]}]" if ref[names[0]] else names[0]
    for a, b in zip(names, names[1:], strict=False):
        value = p.get((a, b), np.nan)
        sep = ">" if value >= SEPARABLE else "≈"
        text += f" {sep} " + (f"[{b}]" if ref[b] else b)
    return text


def _arrow(higher: bool) -> str:
    return "↑" if higher else "↓"


def _pairwise_markdown(trust: Trust) -> str:
    lines = [
        "# How far the rankings can be trusted: P(row ranks above column)",
        "",
        f"Paired bootstrap over images: {trust.n_boot} replicates (seed {trust.seed}), each "
        "resampling the image indices once, the same images for every method; a cell is "
        "the share of replicates in which the row's mean over the resampled images both "
        "methods scored is better than the column's (in the metric's own direction; a tie "
        "counts half). Rows and columns: best first on the full-sample mean. Order line: "
        f"`>` separable (P ≥ {SEPARABLE}: the 95% interval of the paired difference "
        "excludes 0), `≈` not. [brackets]: reads the ground truth (a reference). Every "
        "pair with its mean difference: `rank_probability.csv`.",
        "",
    ]
    if trust.pairwise.empty:
        return "\n".join([*lines, "No per-image scores in this run.", ""])
    for (dataset, model), group in trust.pairwise.groupby(["dataset", "model"], sort=False):
        lines += [f"## {_where(dataset, model)}", ""]
        for metric, part in group.groupby("metric", sort=False):
            order = list(part.drop_duplicates("method").sort_values("rank", kind="stable").method)
            n = int(part["n_images"].max())
            lines += [
                f"### {metric} ({_arrow(bool(part.higher_is_better.iloc[0]))} better, {n} images)",
                "",
                order_chain(part),
                "",
            ]
            p = part.set_index(["method", "other"])["p_above"]
            lines.append("| P(row above column) | " + " | ".join(order) + " |")
            lines.append("|---|" + "---|" * len(order))
            for a in order:
                cells = ["–" if a == b else _p(p.get((a, b), np.nan)) for b in order]
                lines.append(f"| {a} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _agreement_markdown(trust: Trust) -> str:
    lines = [
        "# Do the metrics agree? Kendall τ between the rankings they give",
        "",
        "Kendall's τ-b between the methods' orders on two metrics (each in its own better "
        "direction: τ = 1 the same order, −1 reversed, 0 unrelated), over the methods that "
        f"have both, references (oracle) left out; fewer than {MIN_TAU_METHODS}: blank. "
        f"In brackets: the 95% interval over {trust.n_boot} paired bootstrap replicates of "
        "the images (the same as the rank probabilities').",
        "",
    ]
    if trust.agreement.empty:
        return "\n".join([*lines, "No per-image scores in this run.", ""])
    for (dataset, model), group in trust.agreement.groupby(["dataset", "model"], sort=False):
        every = list(dict.fromkeys(group["metric"]))
        metrics = [m for m in every if group.loc[group.metric == m, "tau"].notna().any()]
        cell = group.set_index(["metric", "other"])
        lines += [f"## {_where(dataset, model)}", ""]
        if len(metrics) < 2:
            lines += ["No two metrics share enough methods.", ""]
            continue
        lines += ["| τ | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for a in metrics:
            cells = []
            for b in metrics:
                if a == b:
                    cells.append("1")
                    continue
                r = cell.loc[(a, b)]
                cells.append(
                    "" if math.isnan(r.tau) else f"{r.tau:.2f} [{r.tau_lo:.2f}, {r.tau_hi:.2f}]"
                )
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        left = [m for m in every if m not in metrics]
        if left:
            lines += [
                "",
                f"Left out (fewer than {MIN_TAU_METHODS} ranked methods share them "
                f"with another metric): {', '.join(left)}.",
            ]
        lines.append("")
    return "\n".join(lines)


def combined_rank_note(trust: Trust) -> str:
    """The leaderboard's footnote on ``combined_rank``, with the metrics of each dataset."""
    used = "; ".join(
        f"{_where(d, m)}: {', '.join(cols) or 'none'}"
        for (d, m), cols in trust.combined_metrics().items()
    )
    return f"{COMBINED_RANK_NOTE} {used}."


def write_trust_tables(
    img: pd.DataFrame,
    out: str | Path,
    seed: int = 0,
    exclude: dict[tuple[str, str], set[str]] | None = None,
    catalogue: Catalogue | None = None,
) -> Trust:
    """Write ``rank_probability.csv``/``.md`` and ``metric_agreement.csv``/``.md`` into ``out``
    from the per-image table ``img``; returns the analysis (``exclude``: as :func:`analyse`)."""
    out = Path(out)
    trust = analyse(img, seed=seed, exclude=exclude, catalogue=catalogue)
    trust.pairwise.to_csv(out / "rank_probability.csv", index=False)
    (out / "rank_probability.md").write_text(_pairwise_markdown(trust))
    trust.agreement.to_csv(out / "metric_agreement.csv", index=False)
    (out / "metric_agreement.md").write_text(_agreement_markdown(trust))
    return trust
