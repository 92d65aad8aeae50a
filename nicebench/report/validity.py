"""Can these metrics be trusted here? A validity audit of every metric on every dataset of a run.

A metric can be computed exactly to its paper's definition and still say nothing on a given
dataset and classifier (insertion from RISE's blur on 64-px scenes starts at p ≈ 0.84 and ends at
0.87: every map scores alike). For every (dataset, model, per-image metric) of a run the audit
reads what the run stored and gives a verdict, with the numbers behind it:

- **range** (curve metrics, ``MetricSpec.curve``): the mean score at the curve's blank end (the
  deletion substrate, the insertion start, an empty mask) must be at most chance +
  :data:`RANGE_MARGIN`, and the original image's at least :data:`RANGE_MARGIN` above the blank
  end; else ``saturated``. Chance is one over the classifier's classes (the dataset's classes for
  accuracies).
- **reactivity**: the metric must tell a good map from a bad one, in at least one of two tests,
  each a paired difference (in the metric's better direction) in units of the metric's spread
  (the standard deviation of the methods' means), with the share P of paired bootstrap
  replicates in which it is positive; a test passes at effect ≥ :data:`REACT_EFFECT` and
  P ≥ :data:`REACT_P`. *Ground truth* (datasets with object masks, metrics that reward them):
  ``oracle`` − ``random`` over all images. *Model* (MetaQuantus's adversary reactivity, Hedström
  et al. 2023): the best contender's maps on the trained classifier − its maps on the
  top-randomised one, on the audit images (:mod:`nicebench.metrics.audit`); the best is chosen
  on the other images (so that its pick does not favour it on the images it is tested on),
  among the methods whose scores move on the randomised model at all (a model-blind map such as
  ``center`` scores alike on both and cannot show the metric's reaction to the model). The
  metrics that explain again (``MetricSpec.explains_again``: the sanity check, the random
  logit) have no randomised pass; their model test is a model-blind map instead: the best
  contender (chosen on one half of the images) − ``random`` on the other half. No test passes:
  ``not_reactive``; none could run: ``untested``.
- **stability**: Kendall τ between the contenders' orders on two disjoint halves of the images
  (a seeded split; the interval from :data:`N_BOOT` bootstrap replicates within each half), and
  between their orders on the audit images and on the same images with small input noise
  (MetaQuantus's noise resilience). Either below :data:`TAU_MIN`: ``unstable``.
- **the classifier**: where its accuracy is at most chance + :data:`CLASSIFIER_MARGIN` (labels
  that do not match the model's classes, or an untrained model), every metric that depends on the
  labels (``MetricSpec.uses_labels``, and every curve metric under ``target = "label"``) is
  ``untested``, and the run warns.

The first failing check names the verdict (in this order: classifier, range, reactivity,
stability); a metric that passes all is ``valid``. Metrics that are not ``valid`` on a dataset
are marked wherever the run shows them and leave its combined rank there (the setting
``rank_all_metrics = true`` keeps them in). Torch-free apart from reading the metric specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..compression.summary import sanity_verdict
from ..metric_spec import RANK_ALL_METRICS, TARGET
from ..store import RunStore
from .columns import Catalogue, catalogue
from .scores import compression_summary, memo, per_image
from .trust import (
    N_BOOT,
    GroupScores,
    _quiet,
    _where,
    bootstrap_counts,
    kendall_tau,
    resampled_means,
    score_groups,
)

__all__ = [
    "VALIDITY_COLUMNS",
    "VERDICTS",
    "RANGE_MARGIN",
    "REACT_EFFECT",
    "REACT_P",
    "TAU_MIN",
    "CLASSIFIER_MARGIN",
    "THRESHOLDS_NOTE",
    "audit",
    "validity",
    "not_valid",
    "classifier_checks",
    "write_validity",
    "validity_markdown",
    "at_chance",
    "rank_exclusions",
    "validity_notes",
    "classifier_warning",
    "classifier_rows",
    "table_cells",
    "paired_effect",
    "paired_interval",
]

VERDICTS = ("valid", "saturated", "not_reactive", "unstable", "untested")
RANGE_MARGIN = 0.15
REACT_EFFECT = 0.5
REACT_P = 0.95
BLIND_RTOL = 1e-4  # scores this close on the trained and the randomised model: a model-blind map
TAU_MIN = 0.5
CLASSIFIER_MARGIN = 0.05
MIN_SELECT_IMAGES = 10  # fewer images outside the audit set: the best method is chosen on all
THRESHOLDS_NOTE = (
    f"saturated: the curve's blank end (deletion's substrate, insertion's start, an empty mask) "
    f"above chance + {RANGE_MARGIN}, or the original image less than {RANGE_MARGIN} above it; "
    f"not_reactive: neither oracle − random (masks) nor the best method on the trained − "
    f"the randomised model (or − random, for metrics that explain again) reaches {REACT_EFFECT} of the metric's spread over methods with paired-bootstrap "
    f"P ≥ {REACT_P}; unstable: Kendall τ of the methods' order below {TAU_MIN} between two "
    f"disjoint halves of the images or under small input noise; untested: no reactivity test "
    f"could run, or the metric depends on labels the classifier does not predict above chance "
    f"+ {CLASSIFIER_MARGIN}"
)
VALIDITY_COLUMNS = [
    "dataset",
    "model",
    "metric",
    "verdict",
    "reason",
    "in_combined_rank",
    "chance",
    "blank_p",
    "original_p",
    "oracle_minus_random",
    "oracle_effect",
    "oracle_p",
    "best_method",
    "trained_minus_randomised",
    "randomised_effect",
    "randomised_p",
    "n_audit_images",
    "best_minus_random",
    "blind_effect",
    "blind_p",
    "tau_halves",
    "tau_halves_lo",
    "tau_halves_hi",
    "tau_noise",
    "classifier_accuracy",
    "accuracy_chance",
]


@dataclass(frozen=True)
class _Spec:
    """What the audit reads of a metric's spec."""

    curve: bool = False
    explains_again: bool = False
    rewards_ground_truth: bool = True
    uses_labels: bool = False
    in_combined_rank: bool = True


def _specs(catalogue: Catalogue) -> dict[str, _Spec]:
    """Leaderboard column → the audit's view of its per-image metric (the run's catalogue)."""
    return {
        column: _Spec(
            m.get("curve", False),
            m.get("explains_again", False),
            m.get("rewards_ground_truth", True),
            m.get("uses_labels", False),
            m.get("in_combined_rank", True),
        )
        for column, m in catalogue.per_image().items()
    }


# -- the statistics (numpy only) ------------------------------------------------------------------
def paired_interval(
    diff: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean, lo, hi, P(mean > 0)) of per-image paired differences ``diff`` (larger = the first
    better; NaN: not scored): the ``level`` percentile interval and P over ``n_boot`` bootstrap
    replicates of the images (a replicate whose mean is 0 counts half)."""
    d = diff[np.isfinite(diff)]
    if len(d) == 0:
        return math.nan, math.nan, math.nan, math.nan
    boot = resampled_means(d[None, :], bootstrap_counts(len(d), n_boot, seed))[:, 0]
    p = float(((boot > 0).sum() + 0.5 * (boot == 0).sum()) / len(boot))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(d.mean()), float(lo), float(hi), p


def paired_effect(
    diff: np.ndarray, spread: float, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, mean / ``spread``, P(mean > 0)) of per-image paired differences ``diff`` (larger
    = the first better; NaN: not scored), P over ``n_boot`` bootstrap replicates of the images
    (a replicate whose mean is 0 counts half; :func:`paired_interval`)."""
    mean, _, _, p = paired_interval(diff, n_boot, seed)
    if math.isnan(mean):
        return mean, mean, mean
    effect = mean / spread if spread > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return mean, effect, p


def halves_tau(
    scores: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """Kendall τ between the orders that the rows of ``scores [M, n]`` (NaN: not scored) get
    from their means on two disjoint halves of the columns (a permutation seeded with ``seed``),
    with the 2.5–97.5 percentiles of τ over ``n_boot`` replicates that resample each half."""
    n = scores.shape[1]
    perm = np.random.default_rng(seed).permutation(n)
    a, b = scores[:, np.sort(perm[: n // 2])], scores[:, np.sort(perm[n // 2 :])]
    with _quiet():
        tau = float(kendall_tau(np.nanmean(a, 1), np.nanmean(b, 1)))
        ra = resampled_means(a, bootstrap_counts(a.shape[1], n_boot, seed + 1))
        rb = resampled_means(b, bootstrap_counts(b.shape[1], n_boot, seed + 2))
        taus = kendall_tau(ra, rb)
        lo, hi = (
            np.nanquantile(taus, [0.025, 0.975])
            if np.isfinite(taus).any()
            else (math.nan, math.nan)
        )
    return tau, float(lo), float(hi)


# -- the audit of one run -------------------------------------------------------------------------
def _index(frame: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame["dataset"] == dataset) & (frame["model"] == model)]


def classifier_checks(img: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): the classifier's accuracy on the run's images, the chance level of
    its p(class) (one over the model's classes) and of its accuracy (one over the dataset's), and
    ``at_chance`` (accuracy ≤ chance + :data:`CLASSIFIER_MARGIN`)."""
    rows = []
    if img.empty or "accuracy_original" not in img:
        return pd.DataFrame(
            columns=["dataset", "model", "accuracy", "chance", "accuracy_chance", "at_chance"]
        )
    for (dataset, model), part in img.groupby(["dataset", "model"], sort=False):
        acc = float(part.drop_duplicates("image_index")["accuracy_original"].mean())
        cls = _index(classes, dataset, model)
        model_c = int(cls["model_classes"].max()) if len(cls) else 0
        data_c = int(cls["dataset_classes"].max()) if len(cls) else 0
        chance = 1.0 / model_c if model_c else math.nan
        acc_chance = 1.0 / data_c if data_c else chance
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "accuracy": acc,
                "chance": chance,
                "accuracy_chance": acc_chance,
                "at_chance": bool(acc <= acc_chance + CLASSIFIER_MARGIN),
            }
        )
    return pd.DataFrame(rows)


def _range(ranges: pd.DataFrame, column: str) -> tuple[float, float]:
    part = ranges[ranges["name"] == f"range/{column}"] if len(ranges) else ranges
    if part.empty:
        return math.nan, math.nan
    ends = np.stack(part["array"].to_list())
    return float(np.nanmean(ends[:, 0])), float(np.nanmean(ends[:, 1]))


def _audit_values(
    audit_rows: pd.DataFrame, column: str, which: str, g: GroupScores
) -> tuple[np.ndarray, np.ndarray]:
    """(image indices, ``[M, n]`` values of pass ``which``) of ``column`` (NaN: not scored)."""
    part = (
        audit_rows[(audit_rows["column"] == column) & (audit_rows["pass"] == which)]
        if len(audit_rows)
        else audit_rows
    )
    if part.empty:
        return np.array([], dtype=int), np.empty((len(g.methods), 0))
    images = np.sort(part["image_index"].unique())
    out = np.full((len(g.methods), len(images)), np.nan)
    for j, method in enumerate(g.methods):
        sel = part[part["method"] == method].drop_duplicates("image_index")
        out[j, np.searchsorted(images, sel["image_index"].to_numpy())] = sel["value"].to_numpy(
            dtype=float
        )
    return images, out


def _oriented(values: np.ndarray, higher: bool) -> np.ndarray:
    return values if higher else -values


def _metric_row(
    g: GroupScores,
    k: int,
    spec: _Spec,
    check: dict,
    ranges: pd.DataFrame,
    audit_rows: pd.DataFrame,
    target: str,
    seed: int,
) -> dict:
    column, higher = g.metrics[k], bool(g.higher[k])
    s = g.oriented[k]  # [M, n]
    with _quiet():
        means = np.nanmean(s, axis=1)
    has = np.isfinite(means)
    spread = float(np.std(means[has])) if has.sum() > 1 else math.nan
    contenders = has & ~g.reference
    uses_labels = spec.uses_labels or (spec.curve and target == "label")
    chance = check.get("accuracy_chance" if spec.uses_labels else "chance", math.nan)
    row = {
        "dataset": g.dataset,
        "model": g.model,
        "metric": column,
        "chance": chance,
        "classifier_accuracy": check.get("accuracy", math.nan),
        "accuracy_chance": check.get("accuracy_chance", math.nan),
    }
    failures: list[tuple[str, str]] = []
    if uses_labels and check.get("at_chance"):
        failures.append(
            (
                "untested",
                f"the classifier is at chance here (accuracy "
                f"{check['accuracy']:.3f}, chance "
                f"{check['accuracy_chance']:.3f}) and the metric depends "
                f"on the labels",
            )
        )
    # range
    blank, full = _range(ranges, column) if spec.curve else (math.nan, math.nan)
    row.update(blank_p=blank, original_p=full)
    if spec.curve and np.isfinite(blank) and np.isfinite(chance):
        if blank > chance + RANGE_MARGIN:
            failures.append(
                (
                    "saturated",
                    f"the curve's blank end scores {blank:.3f}, above "
                    f"chance {chance:.3f} + {RANGE_MARGIN}",
                )
            )
        elif full - blank < RANGE_MARGIN:
            failures.append(
                (
                    "saturated",
                    f"the original image scores {full:.3f}, less than "
                    f"{RANGE_MARGIN} above the blank end {blank:.3f}",
                )
            )
    # reactivity: ground truth
    tests: list[bool] = []
    names = list(g.methods)
    if spec.rewards_ground_truth and "oracle" in names and "random" in names:
        o, r = names.index("oracle"), names.index("random")
        diff, eff, p = paired_effect(s[o] - s[r], spread, seed=seed)
        if np.isfinite(p):  # both scored on some image
            row.update(oracle_minus_random=diff, oracle_effect=eff, oracle_p=p)
            tests.append(bool(eff >= REACT_EFFECT and p >= REACT_P))
    # reactivity: model
    images, randomised = _audit_values(audit_rows, column, "randomised", g)
    if len(images) and contenders.any():
        audited = np.isin(g.images, images)
        pick = s[:, ~audited] if (~audited).sum() >= MIN_SELECT_IMAGES else s
        trained_all = g.scores[k][:, np.searchsorted(g.images, images)]
        # A model-blind map (center, edges, ...) scores alike on both models, up to the float
        # noise of another batch: equal within BLIND_RTOL counts as alike, so that noise can
        # never make such a map the method under test (and flip the verdict).
        with np.errstate(invalid="ignore"):
            alike = np.isclose(trained_all, randomised, rtol=BLIND_RTOL, atol=BLIND_RTOL)
            moves = ~np.all(alike | ~np.isfinite(randomised), axis=1)
        with _quiet():
            pick_means = np.where(contenders & moves, np.nanmean(pick, axis=1), np.nan)
        if np.isfinite(pick_means).any():
            best = int(np.nanargmax(pick_means))
            trained = s[best, np.searchsorted(g.images, images)]
            diff, eff, p = paired_effect(
                trained - _oriented(randomised[best], higher), spread, seed=seed
            )
            row.update(
                best_method=names[best],
                trained_minus_randomised=diff,
                randomised_effect=eff,
                randomised_p=p,
                n_audit_images=len(images),
            )
            if np.isfinite(p):
                tests.append(bool(eff >= REACT_EFFECT and p >= REACT_P))
    # reactivity: a model-blind map, for the metrics that explain again (no randomised pass)
    if spec.explains_again and "random" in names and contenders.sum() >= 2:
        r = names.index("random")
        half = np.random.default_rng(seed).permutation(len(g.images))
        pick, test = np.sort(half[: len(half) // 2]), np.sort(half[len(half) // 2 :])
        with _quiet():
            pick_means = np.where(contenders, np.nanmean(s[:, pick], axis=1), np.nan)
        pick_means[r] = np.nan
        if np.isfinite(pick_means).any():
            best = int(np.nanargmax(pick_means))
            diff, eff, p = paired_effect(s[best, test] - s[r, test], spread, seed=seed)
            row.update(best_method=names[best], best_minus_random=diff, blind_effect=eff, blind_p=p)
            if np.isfinite(p):
                tests.append(bool(eff >= REACT_EFFECT and p >= REACT_P))
    if not tests:
        failures.append(
            (
                "untested",
                "no reactivity test could run (no object masks with oracle "
                "and random, and no randomised-model pass)",
            )
        )
    elif not any(tests):
        failures.append(("not_reactive", "scores good and bad maps alike: " + _react_text(row)))
    # stability
    idx = np.flatnonzero(contenders)
    if len(idx) >= 3:
        tau, lo, hi = halves_tau(s[idx], seed=seed)
        row.update(tau_halves=tau, tau_halves_lo=lo, tau_halves_hi=hi)
        n_images, noisy = _audit_values(audit_rows, column, "noise", g)
        if len(n_images):
            clean = s[np.ix_(idx, np.searchsorted(g.images, n_images))]
            with _quiet():
                row["tau_noise"] = float(
                    kendall_tau(np.nanmean(clean, 1), np.nanmean(_oriented(noisy[idx], higher), 1))
                )
        unstable = [
            f"{what} τ {row[key]:.2f}"
            for key, what in (("tau_halves", "halves"), ("tau_noise", "noise"))
            if key in row and np.isfinite(row[key]) and row[key] < TAU_MIN
        ]
        if unstable or not np.isfinite(tau):
            failures.append(
                (
                    "unstable",
                    "the methods' order does not hold: "
                    + (", ".join(unstable) or "no order (every method ties)"),
                )
            )
    verdict, reason = failures[0] if failures else ("valid", _valid_text(row))
    if failures[1:]:
        reason += "; also " + "; ".join(f"{v}: {t}" for v, t in failures[1:])
    row.update(verdict=verdict, reason=reason)
    return row


def _fmt(value: object, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) and np.isfinite(value) else "–"


def _react_text(row: dict) -> str:
    parts = []
    if "oracle_effect" in row:
        parts.append(
            f"oracle − random {_fmt(row['oracle_effect'])} spreads, P {_fmt(row['oracle_p'])}"
        )
    if "randomised_effect" in row:
        parts.append(
            f"{row['best_method']} trained − randomised "
            f"{_fmt(row['randomised_effect'])} spreads, P {_fmt(row['randomised_p'])}"
        )
    if "blind_effect" in row:
        parts.append(
            f"{row['best_method']} − random (model-blind) {_fmt(row['blind_effect'])} "
            f"spreads, P {_fmt(row['blind_p'])}"
        )
    return "; ".join(parts)


def _valid_text(row: dict) -> str:
    parts = []
    if np.isfinite(row.get("blank_p", math.nan)):
        parts.append(
            f"range {row['blank_p']:.2f} → {row['original_p']:.2f} (chance {row['chance']:.2f})"
        )
    parts.append(_react_text(row))
    parts.append(
        f"halves τ {_fmt(row.get('tau_halves', math.nan))}"
        + (f", noise τ {_fmt(row['tau_noise'])}" if "tau_noise" in row else "")
    )
    return "; ".join(p for p in parts if p)


def _compression_rows(compression: pd.DataFrame, checks: pd.DataFrame) -> list[dict]:
    """The compression track's row per (dataset, model): its headline ``compression_ratio`` is
    valid where the protocol's own check passes (``random`` shows no gain over uniform quality
    beyond its interval, docs/design.md §6) and the classifier is above chance (every operating point
    'qualifies' against a reference whose accuracy is itself at chance)."""
    if compression is None or compression.empty or "reference_codec" not in compression:
        return []
    own = compression[compression["track_codec"] == compression["reference_codec"]]
    rows = []
    for (dataset, model), part in own.groupby(["dataset", "model"], sort=False):
        check = _index(checks, dataset, model)
        check = check.iloc[0].to_dict() if len(check) else {}
        row = {
            "dataset": dataset,
            "model": model,
            "metric": "compression_ratio",
            "in_combined_rank": False,
            "chance": check.get("accuracy_chance", math.nan),
            "classifier_accuracy": check.get("accuracy", math.nan),
            "accuracy_chance": check.get("accuracy_chance", math.nan),
        }
        random = part[(part["method"] == "random") & (part["kind"] == "method")]
        sanity = (
            sanity_verdict(
                float(random["vs_uniform"].iloc[0]), float(random["vs_uniform_hi"].iloc[0])
            )
            if len(random)
            else ""
        )
        if check.get("at_chance"):
            row.update(
                verdict="untested",
                reason=(
                    f"the classifier is at chance here (accuracy {check['accuracy']:.3f}, chance "
                    f"{check['accuracy_chance']:.3f}): every operating point 'qualifies' against a "
                    "reference that is itself at chance"
                ),
            )
        elif sanity == "FAILED":
            row.update(
                verdict="not_reactive",
                reason="random maps gain over uniform quality "
                "beyond their interval: the protocol does not tell good maps from bad",
            )
        elif sanity == "ok":
            row.update(
                verdict="valid",
                reason="random maps show no gain over uniform quality "
                "beyond their interval (the protocol's own check, docs/design.md §6)",
            )
        else:
            row.update(
                verdict="untested",
                reason="no random row, or uniform quality has no "
                "qualifying point: the protocol's own check cannot run",
            )
        rows.append(row)
    return rows


def audit(
    img: pd.DataFrame,
    ranges: pd.DataFrame,
    audit_rows: pd.DataFrame,
    classes: pd.DataFrame,
    settings: dict | None = None,
    seed: int = 0,
    compression: pd.DataFrame | None = None,
    catalogue: Catalogue | None = None,
) -> pd.DataFrame:
    """The validity table (:data:`VALIDITY_COLUMNS`) of a run's per-image table ``img``, its
    kept curve ends ``ranges`` (``range/<column>`` artifacts), its audit passes ``audit_rows``
    (the cells' ``audit`` tables), its classifiers' class counts ``classes`` and, with the
    compression track, its summary ``compression`` (:func:`_compression_rows`). ``catalogue``:
    the run's metrics (:mod:`nicebench.report.columns`; the registered ones without it)."""
    settings = settings or {}
    catalogue = catalogue or Catalogue.from_registry()
    specs = _specs(catalogue)
    target = TARGET.get(settings)
    force = RANK_ALL_METRICS.get(settings)
    checks = classifier_checks(img, classes)
    rows = []
    for g in score_groups(img, catalogue=catalogue):
        check = _index(checks, g.dataset, g.model)
        check = check.iloc[0].to_dict() if len(check) else {}
        r = _index(ranges, g.dataset, g.model)
        a = _index(audit_rows, g.dataset, g.model)
        everyone = g.has()[:, ~g.reference].all(axis=1)  # every ranked method has the metric
        for k, column in enumerate(g.metrics):
            spec = specs.get(column, _Spec())
            row = _metric_row(g, k, spec, check, r, a, target, seed)
            row["in_combined_rank"] = bool(
                spec.in_combined_rank and everyone[k] and (row["verdict"] == "valid" or force)
            )
            rows.append(row)
    rows += _compression_rows(compression, checks)
    return pd.DataFrame(rows, columns=VALIDITY_COLUMNS)


def validity(store: RunStore, keys: set[str] | None = None) -> pd.DataFrame:
    """:func:`audit` of the run in ``store`` (its cells ``keys``; the latest run's settings)."""

    def compute() -> pd.DataFrame:
        run = store.latest_run()
        config = run.get("config", {}) if run else {}
        return audit(
            per_image(store, keys),
            store.artifacts("range/%", keys),
            store.tables("audit", keys),
            store.tables("classifier", keys),
            config.get("settings") or {},
            int(config.get("seed", 0) or 0),
            compression_summary(store, keys),
            catalogue(store),
        )

    return memo("validity", store, keys, compute)


def not_valid(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """(dataset, model) → {metric column: "verdict: reason"} of the metrics not ``valid``."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for r in table.itertuples():
        if r.verdict != "valid":
            out.setdefault((r.dataset, r.model), {})[r.metric] = f"{r.verdict}: {r.reason}"
    return out


def table_cells(r) -> tuple[str, str, str, str]:
    """A validity row's range, oracle − random, model-test and halves-τ cells as text (shared
    by ``validity.md`` and the report)."""
    rng = (
        f"{_fmt(r.blank_p)} → {_fmt(r.original_p)} ({_fmt(r.chance)})"
        if np.isfinite(r.blank_p)
        else "–"
    )
    orc = (
        f"{_fmt(r.oracle_minus_random, 3)} ({_fmt(r.oracle_effect)}, {_fmt(r.oracle_p)})"
        if np.isfinite(r.oracle_p)
        else "–"
    )
    if np.isfinite(r.randomised_p):
        rnd = (
            f"{r.best_method}: {_fmt(r.trained_minus_randomised, 3)} "
            f"({_fmt(r.randomised_effect)}, {_fmt(r.randomised_p)})"
        )
    elif np.isfinite(r.blind_p):
        rnd = (
            f"{r.best_method} − random: {_fmt(r.best_minus_random, 3)} "
            f"({_fmt(r.blind_effect)}, {_fmt(r.blind_p)})"
        )
    else:
        rnd = "–"
    tau = (
        f"{_fmt(r.tau_halves)} [{_fmt(r.tau_halves_lo)}, {_fmt(r.tau_halves_hi)}]"
        if np.isfinite(r.tau_halves)
        else "–"
    )
    return rng, orc, rnd, tau


def classifier_rows(table: pd.DataFrame) -> list[dict]:
    """The classifiers at chance in a validity table, as :func:`classifier_warning` reads them
    (the table carries each classifier's accuracy and chance: no second read of the store)."""
    rows = table.drop_duplicates(["dataset", "model"])
    blind = at_chance(table)
    return [
        {
            "dataset": r.dataset,
            "model": r.model,
            "accuracy": r.classifier_accuracy,
            "accuracy_chance": r.accuracy_chance,
        }
        for r in rows.itertuples()
        if (r.dataset, r.model) in blind
    ]


def validity_markdown(table: pd.DataFrame) -> str:
    """``validity.md``: per dataset, each metric's verdict and the numbers behind it."""
    lines = [
        "# Can these metrics be trusted here? The validity audit",
        "",
        "One row per metric and dataset: its verdict and the numbers behind it. Range: the "
        "mean score at the curve's blank end (deletion's substrate, insertion's start, an "
        "empty mask) and on the original image, against chance. Reactivity: paired "
        "differences in units of the metric's spread over methods (the better direction "
        "positive), with P(difference > 0) over 1000 paired bootstrap replicates: oracle − "
        "random, and the best method on the trained − the randomised classifier (on the "
        "audit images). Stability: Kendall τ of the methods' order between two disjoint "
        "halves of the images [95% bootstrap interval], and under small input noise.",
        "",
        f"Thresholds: {THRESHOLDS_NOTE}.",
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No per-image scores in this run.", ""])
    for (dataset, model), part in table.groupby(["dataset", "model"], sort=False):
        lines += [f"## {_where(dataset, model)}", ""]
        lines += [f"{w}\n" for w in map(classifier_warning, classifier_rows(part))]
        lines += [
            "| metric | verdict | range (blank → original, chance) | oracle − random "
            "(spreads, P) | best method: trained − randomised model, or − random (spreads, P) | "
            "τ halves | τ noise | in combined rank |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in part.itertuples():
            rng, orc, rnd, tau = table_cells(r)
            verdict = f"**{r.verdict}**" if r.verdict != "valid" else r.verdict
            lines.append(
                f"| {r.metric} | {verdict} | {rng} | {orc} | {rnd} | {tau} | "
                f"{_fmt(r.tau_noise)} | {'yes' if r.in_combined_rank else 'no'} |"
            )
        lines.append("")
        bad = part[part["verdict"] != "valid"]
        if len(bad):
            lines += ["Why not valid:", ""]
            lines += [f"- {r.metric}: {r.verdict} ({r.reason})" for r in bad.itertuples()]
            lines.append("")
    return "\n".join(lines)


def classifier_warning(check: dict) -> str:
    """The warning for a classifier at chance on a dataset, with its likely causes."""
    return (
        f"WARNING: the classifier's accuracy on {_where(check['dataset'], check['model'])} "
        f"is {check['accuracy']:.3f}, at or below chance ({check['accuracy_chance']:.3f}): "
        f"the dataset's labels likely do not match the model's classes (e.g. an image folder "
        f"of your own classes scored by a model trained on other ones), or the model is "
        f"untrained. Metrics that depend on the labels are not valid here, and no method "
        f"can be called best on them."
    )


def write_validity(store: RunStore, keys: set[str] | None, out: str | Path) -> pd.DataFrame:
    """Write ``validity.csv`` and ``validity.md`` into ``out``; returns the table."""
    out = Path(out)
    table = validity(store, keys)
    table.to_csv(out / "validity.csv", index=False)
    (out / "validity.md").write_text(validity_markdown(table))
    return table


def rank_exclusions(table: pd.DataFrame) -> dict[tuple[str, str], set[str]]:
    """(dataset, model) → the metric columns the audit leaves out of the combined rank there."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in table.itertuples():
        if not r.in_combined_rank:
            out.setdefault((r.dataset, r.model), set()).add(r.metric)
    return out


def _start_text(row: dict) -> str:
    """An insertion start (a stored ``insertion_start`` row) in words."""
    what = []
    if row.get("sigma", 0) > 0:
        what.append(f"Gaussian blur σ {row['sigma']:.2f} px, kernel {int(row['kernel'])}")
    if row.get("fill", 0) >= 1:
        what = ["the dataset's mean colour"]
    elif row.get("fill", 0) > 0:
        what.append(f"then {row['fill']:.0%} of the dataset's mean colour")
    text = f"{row['mode']}, " + ", ".join(what)
    if row["mode"] != "rise":
        text += (
            f" (mean p(pred) {row['mean_p']:.3f} on {int(row['n_images'])} {row['source']} "
            f"images, chance {row['chance']:.3f})"
        )
    return text


POINTING_NOTE = (
    "pointing_game: a hit is the map's arg-max inside the object mask dilated by 15 px at 224 px "
    "(scaled with the image size: 4.3 px at 64); tied maxima score the share of them that hit. "
    "Peers without the dilation (Quantus's PointingGame by default) count fewer hits: their "
    "numbers are not comparable with these."
)


def validity_notes(store: RunStore, keys: set[str] | None, table: pd.DataFrame) -> list[str]:
    """The leaderboard's notes on validity: classifiers at chance, the metrics not valid per
    dataset (marked †), each dataset's insertion start, and the pointing game's tolerance."""
    lines = [classifier_warning(c) for c in classifier_rows(table)]
    bad = not_valid(table)
    if bad:
        parts = []
        for (dataset, model), cols in bad.items():
            parts.append(
                f"{_where(dataset, model)}: "
                + "; ".join(f"{c} {text.split(';')[0]}" for c, text in cols.items())
            )
        lines.append(
            "† not valid on its dataset (the validity audit: `validity.md`), left out of "
            "`combined_rank` there (the setting `rank_all_metrics = true` keeps it in): "
            + " · ".join(parts)
            + "."
        )
    elif len(table):
        lines.append("Every metric is valid on every dataset of this run (`validity.md`).")
    starts = store.tables("insertion_start", keys)
    if len(starts):
        for r in starts.drop_duplicates(["dataset", "model"]).to_dict("records"):
            lines.append(f"Insertion start, {_where(r['dataset'], r['model'])}: {_start_text(r)}.")
    if "pointing_game" in set(table.get("metric", [])):
        lines.append(POINTING_NOTE)
    return lines


def at_chance(table: pd.DataFrame) -> set[tuple[str, str]]:
    """The (dataset, model) pairs of a validity table whose classifier is at chance."""
    rows = table.drop_duplicates(["dataset", "model"])
    return {
        (r.dataset, r.model)
        for r in rows.itertuples()
        if np.isfinite(r.classifier_accuracy)
        and np.isfinite(r.accuracy_chance)
        and r.classifier_accuracy <= r.accuracy_chance + CLASSIFIER_MARGIN
    }
