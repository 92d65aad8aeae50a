"""Trust in rankings (``nicebench.report.trust``): the paired-bootstrap probability that a method
ranks above another against hand cases, Kendall τ against scipy, the combined rank's interval,
and the tables, figure and report section they feed (a store written by hand: no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from nicebench.bootstrap import bootstrap_ci
from nicebench.report import trust as T
from nicebench.store import CellResult, RunStore

DIRECTIONS = {"deletion_auc": False, "insertion_auc": True, "pointing_game": True}


# -- the statistics -------------------------------------------------------------------------------
def test_one_better_on_every_image_ranks_above_with_probability_one():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 40)
    scores = np.stack([b + 0.01, b])  # a beats b by 0.01 on every image
    p, common = T.rank_probability(scores, T.bootstrap_counts(40, 500, seed=1))
    assert p[0, 1] == 1.0 and p[1, 0] == 0.0
    assert p[0, 0] == p[1, 1] == 0.5  # a method against itself: all ties
    assert (common == 40).all()


def test_paired_not_unpaired():
    """Image difficulty varies far more than the gap: unpaired intervals of the two means overlap
    widely, but every paired replicate keeps the order."""
    rng = np.random.default_rng(0)
    hard = rng.uniform(0, 1, 50)
    scores = np.stack([hard + 0.02, hard])
    _, lo_a, hi_a, _ = bootstrap_ci(scores[0])
    _, lo_b, hi_b, _ = bootstrap_ci(scores[1])
    assert lo_a < hi_b  # the unpaired intervals overlap
    p, _ = T.rank_probability(scores, T.bootstrap_counts(50))
    assert p[0, 1] == 1.0


def test_identical_scores_and_ties_count_half():
    x = np.array([0.1, 0.5, 0.5, 0.9])
    p, _ = T.rank_probability(np.stack([x, x.copy(), x + 1]), T.bootstrap_counts(4, 200))
    assert p[0, 1] == p[1, 0] == 0.5
    assert p[2, 0] == 1.0 and p[0, 2] == 0.0


def test_hand_counted_probability_with_opposite_images():
    """Two images: a wins image 0 by 1, loses image 1 by 1. A replicate drawing image 0 twice: a
    above; image 1 twice: b above; one of each: tie (half). So P = P(00) + P(01)/2 exactly, counted
    from the replicates."""
    scores = np.array([[1.0, 0.0], [0.0, 1.0]])
    counts = T.bootstrap_counts(2, 1000, seed=3)
    p, _ = T.rank_probability(scores, counts)
    expected = (counts[:, 0] == 2).mean() + 0.5 * (counts[:, 0] == 1).mean()
    assert p[0, 1] == pytest.approx(expected, abs=1e-12)
    assert p[0, 1] + p[1, 0] == pytest.approx(1.0)
    assert 0.4 < p[0, 1] < 0.6


def test_only_images_both_scored_are_compared():
    a = np.array([1.0, 1.0, np.nan, np.nan])
    b = np.array([0.0, 0.0, 5.0, 5.0])  # b's high scores are on images a did not score
    c = np.array([np.nan, np.nan, 1.0, 1.0])
    p, common = T.rank_probability(np.stack([a, b, c]), T.bootstrap_counts(4, 300))
    assert p[0, 1] == 1.0 and common[0, 1] == 2
    assert np.isnan(p[0, 2]) and common[0, 2] == 0  # no image in common


def test_bootstrap_counts_are_the_leaderboard_resamples():
    """The replicates resample image indices as bootstrap_ci does for the same seed: the same
    percentile interval of the mean."""
    v = np.random.default_rng(5).normal(size=37)
    counts = T.bootstrap_counts(37, 1000, seed=0)
    assert counts.shape == (1000, 37) and (counts.sum(1) == 37).all()
    means = T.resampled_means(v[None], counts)[:, 0]
    _, lo, hi, _ = bootstrap_ci(v, seed=0)
    assert np.quantile(means, [0.025, 0.975]) == pytest.approx([lo, hi], abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 12).astype(float)  # ties in both
    y = x + rng.integers(-2, 3, 12)
    if seed % 2:
        x[[1, 7]] = np.nan
    expected = scipy.stats.kendalltau(x, y, nan_policy="omit").statistic
    assert T.kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)
    batch = T.kendall_tau(np.stack([x, -x]), np.stack([y, y]))  # broadcasts over replicates
    assert batch.shape == (2,) and batch[1] == pytest.approx(-expected, abs=1e-12)
    assert np.isnan(T.kendall_tau(np.ones(5), np.arange(5.0)))  # no untied pair in x


def test_average_ranks_match_scipy_rankdata():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 4, (5, 9)).astype(float)
    expected = np.stack([scipy.stats.rankdata(-row, method="average") for row in v])
    assert np.array_equal(T.average_ranks(v), expected)
    with_nan = T.average_ranks(np.array([3.0, np.nan, 1.0]))
    assert with_nan[0] == 1 and np.isnan(with_nan[1]) and with_nan[2] == 2


# -- a run's per-image table ----------------------------------------------------------------------
def _per_image(n: int = 30, seed: int = 0) -> pd.DataFrame:
    """One dataset: ``best`` is better than ``mid`` on every image and metric, ``mid`` than
    ``worst`` (deletion lower, insertion higher); ``twin`` scores exactly as ``mid``; ``oracle``
    reads the ground truth; ``jpeg`` is a codec row (accuracy only)."""
    rng = np.random.default_rng(seed)
    base_del, base_ins = rng.uniform(0.2, 0.5, n), rng.uniform(0.5, 0.8, n)
    shift = {"best": -0.1, "mid": 0.0, "twin": 0.0, "worst": 0.1, "oracle": -0.05}
    rows = []
    for method, s in shift.items():
        for i in range(n):
            rows.append(
                {
                    "dataset": "toy",
                    "model": "default",
                    "method": method,
                    "kind": "method",
                    "image_index": i,
                    "label": 0,
                    "pred": 0,
                    "accuracy_original": 1.0,
                    "deletion_auc": base_del[i] + s,
                    "insertion_auc": base_ins[i] - s,
                    "pointing_game": 1.0 if method == "oracle" else float(i % 2),
                }
            )
    for i in range(n):
        rows.append(
            {
                "dataset": "toy",
                "model": "default",
                "method": "jpeg",
                "kind": "codec",
                "image_index": i,
                "label": 0,
                "pred": 0,
                "accuracy_original": 1.0,
            }
        )
    return pd.DataFrame(rows)


def test_analyse_pairwise_agreement_and_combined_rank():
    trust = T.analyse(_per_image(), directions=DIRECTIONS)
    pw = trust.pairwise.set_index(["metric", "method", "other"])
    for metric in ("deletion_auc", "insertion_auc"):  # direction-aware: best is above either way
        assert pw.loc[(metric, "best", "mid"), "p_above"] == 1.0
        assert pw.loc[(metric, "mid", "worst"), "p_above"] == 1.0
        assert pw.loc[(metric, "mid", "twin"), "p_above"] == 0.5
        assert not pw.loc[(metric, "mid", "twin"), "separable"]
        assert pw.loc[(metric, "best", "mid"), "mean_diff"] == pytest.approx(
            -0.1 if metric == "deletion_auc" else 0.1
        )  # in the metric's own units
    assert set(trust.pairwise.method) == {"best", "mid", "twin", "worst", "oracle"}  # no codec
    assert pw.loc[("deletion_auc", "oracle", "mid"), "reads_ground_truth"]
    chain = T.order_chain(trust.pairwise[trust.pairwise.metric == "deletion_auc"])
    assert chain.startswith("best > [oracle] > ") and chain.endswith(" > worst")
    assert "mid ≈ twin" in chain or "twin ≈ mid" in chain
    # τ: deletion and insertion order the contenders alike; pointing_game is a coin flip per
    # image, the same for all contenders: every contender ties, so no τ
    tau = trust.agreement.set_index(["metric", "other"])
    assert tau.loc[("deletion_auc", "insertion_auc"), "tau"] == pytest.approx(1.0)
    assert tau.loc[("deletion_auc", "insertion_auc"), "n_methods"] == 4  # oracle left out
    assert np.isnan(tau.loc[("deletion_auc", "pointing_game"), "tau"])
    # combined rank: the contenders only, each with an interval around its rank
    comb = trust.combined.set_index("method")
    assert set(comb.index) == {"best", "mid", "twin", "worst"}
    assert (comb.n_metrics == 3).all()
    assert comb.loc[
        "best", ["combined_rank", "combined_rank_lo", "combined_rank_hi"]
    ].tolist() == pytest.approx([(1 + 1 + 2.5) / 3] * 3)
    assert comb.loc["worst", "combined_rank"] == pytest.approx((4 + 4 + 2.5) / 3)
    assert comb.loc["mid", "combined_rank"] == comb.loc["twin", "combined_rank"]
    assert (
        (comb.combined_rank_lo <= comb.combined_rank + 1e-12)
        & (comb.combined_rank <= comb.combined_rank_hi + 1e-12)
    ).all()
    assert ((comb.combined_rank_lo >= 1) & (comb.combined_rank_hi <= 4)).all()


def test_combined_rank_interval_widens_with_noise():
    """Two methods with equal means and noisy per-image scores: the replicates swap them, so
    the interval covers both ranks; without noise it is a point."""
    rng = np.random.default_rng(1)
    n = 40
    img = _per_image(n)
    img = img[img.method.isin(["best", "worst", "mid"])].copy()
    noise = rng.normal(0, 0.2, n)
    noise -= noise.mean()  # equal means: the bootstrap swaps them about half the time
    sel = img.method == "mid"
    img.loc[sel, "deletion_auc"] = img.loc[img.method == "best", "deletion_auc"].to_numpy() + noise
    comb = T.analyse(img, directions={"deletion_auc": False}).combined.set_index("method")
    assert comb.loc["worst", ["combined_rank_lo", "combined_rank_hi"]].tolist() == [3, 3]
    assert comb.loc["best", "combined_rank_lo"] == 1 and comb.loc["best", "combined_rank_hi"] == 2
    assert comb.loc["mid", "combined_rank_lo"] == 1 and comb.loc["mid", "combined_rank_hi"] == 2


def test_no_scores_gives_empty_tables():
    trust = T.analyse(pd.DataFrame(columns=["dataset", "model", "method", "kind", "image_index"]))
    assert trust.pairwise.empty and trust.agreement.empty and trust.combined.empty
    assert "combined_rank" in T.combined_ranks(pd.DataFrame()).columns


# -- tables, figure and report from a store -------------------------------------------------------
def _store(run_dir, n: int = 24):
    store = RunStore(run_dir)
    # the toy scores have no validity audit (no random, no randomised-model pass): every metric
    # is `untested`, so the combined rank is forced to keep them (tested in test_validity.py)
    store.record_run(
        {"datasets": ["toy"], "methods": ["m"], "settings": {"rank_all_metrics": True}},
        {"code": "x"},
    )
    img = _per_image(n)
    for method, part in img.groupby("method", sort=False):
        kind = part.kind.iloc[0]
        rows = [(int(r.image_index), 0, 0, "correct", 1.0) for r in part.itertuples()]
        for col in ("deletion_auc", "insertion_auc", "pointing_game"):
            rows += [
                (int(r.image_index), 0, 0, col, float(getattr(r, col)))
                for r in part.itertuples()
                if pd.notna(getattr(r, col))
            ]
        store.write(
            CellResult(
                key=f"toy-{method}",
                dataset="toy",
                method=method,
                method_name=method,
                shard=0,
                kind=kind,
                n_images=n,
                explain_ms_per_image=1.0,
                image_rows=rows,
            )
        )
    return store


def test_leaderboard_and_tables(tmp_path):
    from nicebench.report.tables import leaderboard, write_tables

    store = _store(tmp_path)
    board = leaderboard(store).set_index("method")
    assert board.loc["best", "combined_rank"] == pytest.approx(1.5)  # (1 + 1 + 2.5) / 3
    assert np.isnan(board.loc["oracle", "combined_rank"])  # a reference: not ranked
    assert np.isnan(board.loc["jpeg", "combined_rank"])  # a codec row: no map scores
    write_tables(store, None, tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| combined_rank |" in md.splitlines()[2]  # a column of the table
    assert "`combined_rank`: per bootstrap replicate" in md
    assert "Metrics used: toy: deletion_auc, insertion_auc, pointing_game." in md
    assert "combined_rank" in md.split("Lower is better for")[1].split(";")[0]
    pairs = pd.read_csv(tmp_path / "rank_probability.csv")
    assert len(pairs) == 3 * 5 * 4  # 3 metrics × 5 methods × 4 others
    text = (tmp_path / "rank_probability.md").read_text()
    assert "### deletion_auc (↓ better, 24 images)" in text and "best > [oracle]" in text
    agree = (tmp_path / "metric_agreement.md").read_text()
    assert "| deletion_auc | 1 | 1.00 [1.00, 1.00] |" in agree
    assert "Left out" in agree and "pointing_game" in agree.split("Left out")[1]
    store.close()


def test_figure_written_and_in_the_report(tmp_path):
    from matplotlib.figure import Figure

    from nicebench.report import figures as F
    from nicebench.report.html import render_report
    from nicebench.report.tables import per_image

    store = _store(tmp_path)
    trust = T.analyse(per_image(store))
    fig = F.rankings_figure(trust, "toy")
    assert isinstance(fig, Figure)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert any(t.startswith("(a) P(row ranks above column), Deletion AUC") for t in titles)
    assert "(b) Kendall τ between the metrics" in titles
    assert "(c) Combined rank, 95% interval" in titles
    heat = fig.axes[0].images[0].get_array()
    order = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert order[0] == "best" and order[-1] == "worst"
    assert heat[0, -1] == 1.0 and heat[-1, 0] == 0.0
    assert F.rankings_figure(trust, "no-such-dataset") is None
    store.close()
    paths = F.write_figures(tmp_path, formats=["png"])
    assert tmp_path / "figures" / "rankings_toy.png" in paths
    text = render_report(tmp_path)
    assert 'id="rankings"' in text and 'href="#rankings"' in text
    assert 'alt="rankings_toy.png"' in text
    assert "best &gt; [oracle] &gt;" in text


def test_tick_labels_keep_variants_apart():
    from nicebench.report.figures import _tick_labels

    labels = [
        "nice(batch_size=32,epochs=1,lam=0.5,n_train=64)",
        "nice(batch_size=32,epochs=1,lam=2,n_train=64)",
        "rise(n_masks=500)",
        "someplugin(alpha=0.123456,beta=7)",
    ]
    assert _tick_labels(labels) == [
        "nice(lam=0.5)",
        "nice(lam=2)",
        "rise(n_masks=500)",
        "someplugin(alpha=0.12…",
    ]


def test_descriptive_metrics_stay_out_of_the_combined_rank():
    """A map's sparseness is not its quality: metrics registered with ``in_combined_rank=False``
    (sparseness, entropy) get pairwise tables but do not move the combined rank."""
    import nicebench.metrics  # noqa: F401  (registers the metric specs)

    assert {"sparseness", "entropy"} <= T.not_in_combined_rank()
    assert "deletion_auc" not in T.not_in_combined_rank()
    img = _per_image()
    # sparseness orders the methods the other way round: it would flip the combined rank
    shift = {"best": 0.0, "mid": 0.5, "twin": 0.5, "worst": 0.9, "oracle": 0.2}
    img["sparseness"] = img["method"].map(shift) + 0.01 * img["image_index"]
    directions = {**DIRECTIONS, "sparseness": True}
    trust = T.analyse(img, directions=directions)
    assert "sparseness" in set(trust.pairwise.metric)
    comb = trust.combined.set_index("method")
    assert (comb.n_metrics == 3).all()  # deletion, insertion, pointing game
    assert comb.loc["best", "combined_rank"] == pytest.approx((1 + 1 + 2.5) / 3)
