"""ROAD (noisy linear imputation, MoRF/LeRF), symmetric relevance gain and the rank agreement
between fills: hand-computed cases and pytorch-grad-cam's ROAD as the independent reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from nicebench.metrics import MetricContext, deletion, get_metric_spec
from nicebench.metrics.road import (
    linear_impute,
    linear_impute_batch,
    removal_masks,
    road_curves,
)
from nicebench.metrics.srg import morf_lerf_curves, srg
from nicebench.report.agreement import fill_agreement, fill_ranks, write_fill_agreement


def _model(channels: int = 3, classes: int = 5, seed: int = 0) -> nn.Module:
    """A small random classifier whose probabilities move with the input (sharpened logits)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, classes),
    ).eval()
    with torch.no_grad():
        model[-1].weight.mul_(30.0)
    return model


def _batch(b: int = 3, size: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 1, size, size, generator=g)


# -- the imputer ----------------------------------------------------------------------------------
def test_impute_centre_is_the_paper_weighted_mean():
    img = np.arange(9, dtype=np.float64).reshape(1, 3, 3) ** 2
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    v = img[0]
    direct = (v[0, 1] + v[2, 1] + v[1, 0] + v[1, 2]) / 6
    diagonal = (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    assert linear_impute(img, removed)[0, 1, 1] == pytest.approx(direct + diagonal)


def test_impute_corner_renormalises_the_weights():
    img = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    removed = np.zeros((3, 3), bool)
    removed[0, 0] = True
    expected = (2 / 6 + 4 / 6 + 5 / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    out = linear_impute(img, removed)
    assert out[0, 0, 0] == pytest.approx(expected)
    assert np.array_equal(out[0].ravel()[1:], img[0].ravel()[1:])  # kept pixels untouched


def test_impute_two_coupled_unknowns_solve_the_linear_system():
    """4×4 image, pixels (1,1) and (1,2) removed: x = (s1 + x2/6) / 1, y = (s2 + x/6) / 1 where
    s1, s2 are the weighted sums of each one's known neighbours (interior pixels: weights sum 1)."""
    rng = np.random.default_rng(0)
    img = rng.random((2, 4, 4))
    removed = np.zeros((4, 4), bool)
    removed[1, 1] = removed[1, 2] = True
    for ch in range(2):
        v = img[ch]
        s1 = (v[0, 1] + v[2, 1] + v[1, 0]) / 6 + (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
        s2 = (v[0, 2] + v[2, 2] + v[1, 3]) / 6 + (v[0, 1] + v[0, 3] + v[2, 1] + v[2, 3]) / 12
        # x = s1 + y/6, y = s2 + x/6  →  x = (s1 + s2/6) / (1 − 1/36)
        x = (s1 + s2 / 6) / (1 - 1 / 36)
        y = s2 + x / 6
        out = linear_impute(img, removed)
        assert out[ch, 1, 1] == pytest.approx(x) and out[ch, 1, 2] == pytest.approx(y)


def test_impute_reproduces_a_linear_ramp_and_adds_seeded_noise():
    ys, xs = np.mgrid[0:12, 0:12]
    img = (0.3 * ys - 0.2 * xs + 1.0)[None].astype(np.float64)
    removed = np.zeros((12, 12), bool)
    removed[3:9, 2:10] = True  # interior block: the symmetric stencil is exact on a plane
    np.testing.assert_allclose(linear_impute(img, removed), img, atol=1e-10)
    a = linear_impute(img, removed, 0.01, np.random.default_rng(1))
    b = linear_impute(img, removed, 0.01, np.random.default_rng(1))
    assert np.array_equal(a, b)
    diff = (a - img)[0][removed]
    assert 0.005 < diff.std() < 0.02 and np.all((a - img)[0][~removed] == 0)


def test_removal_masks_counts_and_orders():
    ranks = torch.randperm(100)[None]
    masks = removal_masks(ranks, (0.1, 0.5, 0.9))
    assert masks.shape == (1, 2, 3, 100)
    assert masks.sum(-1).tolist() == [[[10, 50, 90], [10, 50, 90]]]
    assert bool((ranks[0][masks[0, 0, 0]] < 10).all()) and bool(
        (ranks[0][masks[0, 1, 0]] >= 90).all()
    )


# -- the batched solver against scipy's sparse LU ------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 9, 9), (2, 13, 7), (1, 5, 21)])
def test_batched_imputation_equals_the_sparse_lu(shape):
    """From one removed pixel to all but one kept pixel, on square and oblong grids: the block
    Cholesky solve equals scipy's sparse LU within 1e-10 (and is not the input: it has teeth)."""
    c, h, w = shape
    rng = np.random.default_rng(h * w)
    shares = np.linspace(0.02, 0.98, 7)
    images = rng.standard_normal((len(shares) + 2, c, h, w))
    removed = rng.random((len(shares) + 2, h, w)) < np.r_[shares, 0, 0][:, None, None]
    removed[:-2, h - 1, 0] = False  # every system keeps a pixel
    removed[-2, h // 2, w // 2] = True  # one removed pixel
    removed[-1] = True
    removed[-1, 0, w - 1] = False  # one kept pixel, in a corner
    ref = np.stack([linear_impute(x, r) for x, r in zip(images, removed, strict=True)])
    out = linear_impute_batch(torch.from_numpy(images), torch.from_numpy(removed)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-10, rtol=0)
    assert np.abs(out - images).max() > 0.1
    with pytest.raises(ValueError, match="at least one kept pixel"):
        linear_impute_batch(torch.from_numpy(images[:1]), torch.ones(1, h, w, dtype=torch.bool))


def test_road_curves_are_the_same_with_either_solver():
    model = _model()
    images, sal = _batch(3)
    targets = torch.tensor([0, 1, 2])
    by_lu = road_curves(model, images, sal, targets, seed=3, solver="scipy")
    by_cholesky = road_curves(model, images, sal, targets, seed=3, solver="torch")
    torch.testing.assert_close(by_cholesky, by_lu, atol=1e-6, rtol=0)
    assert float(by_lu.std()) > 0.05
    with pytest.raises(ValueError, match="solver must be one of"):
        road_curves(model, images, sal, targets, solver="cg")


# -- against pytorch-grad-cam ---------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # its np.percentile of a torch tensor
def test_road_matches_pytorch_grad_cam():
    """Same model, images and maps, noise off: every percentage of both orders within 1e-3 of
    pytorch-grad-cam's ROAD (its percentile p keeps the pixels below the map's p-th percentile:
    MoRF removes the top 100 − p %; 20 × 20 images so that both count the same pixels)."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = _model()
    images, sal = _batch(4)
    with torch.no_grad():
        targets = model(images).argmax(1)
    ours = road_curves(model, images, sal, targets, noise=0.0)
    cams = sal[:, 0].numpy()
    tgt = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    for i, frac in enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)):
        pct = round(100 * (1 - frac))
        for order, remove in ((0, RemoveMostRelevantFirst), (1, RemoveLeastRelevantFirst)):
            metric = PerturbationConfidenceMetric(remove(pct, NoisyLinearImputer(noise=0.0)))
            ref = metric(images, cams, tgt, model, return_diff=False)
            np.testing.assert_allclose(ours[:, order, i].numpy(), ref, atol=1e-3)
    assert float(ours.std()) > 0.05  # the probabilities vary: the comparison has teeth
    # the imputed images themselves
    keep = torch.from_numpy((sal[0, 0] < sal[0, 0].quantile(0.7)).numpy().astype(np.float32))
    theirs = NoisyLinearImputer(noise=0.0)(images[0], keep)
    mine = linear_impute(images[0].numpy(), keep.numpy() == 0)
    np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-5)


# -- ROAD's batching and noise ---------------------------------------------------------------------
def test_road_scores_do_not_depend_on_the_batch():
    model = _model()
    images, sal = _batch(3)
    targets = torch.tensor([0, 1, 2])
    whole = road_curves(model, images, sal, targets, seed=3, batch_size=18)
    parts = torch.cat(
        [
            road_curves(
                model, images[i : i + 1], sal[i : i + 1], targets[i : i + 1], seed=3, start=i
            )
            for i in range(3)
        ]
    )
    torch.testing.assert_close(whole, parts)
    quiet = road_curves(model, images, sal, targets, seed=3, noise=0.0)
    assert not torch.equal(whole, quiet)


# -- SRG -----------------------------------------------------------------------------------------
def test_srg_morf_is_deletion_and_lerf_the_reverse_order():
    model = _model()
    images, sal = _batch(3)
    with torch.no_grad():
        targets = model(images).argmax(1)
    curves = morf_lerf_curves(model, images, sal, targets, "blur", n_steps=10)
    _, dele = deletion(model, images, sal, n_steps=10, substrate="blur", return_curves=True)
    torch.testing.assert_close(curves[:, 0], dele)
    # continuous maps have no ties: least salient first is most salient first of −map
    _, rev = deletion(model, images, -sal, n_steps=10, substrate="blur", return_curves=True)
    torch.testing.assert_close(curves[:, 1], rev)
    for fill in ("mean", "blur", "road"):
        kw = {"n_steps": 10} if fill != "road" else {"noise": 0.0}
        torch.testing.assert_close(
            srg(model, images, -sal, targets, fill, **kw),
            -srg(model, images, sal, targets, fill, **kw),
        )


def test_metric_specs_share_one_computation_per_fill():
    model = _model()
    images, sal = _batch(2)
    with torch.no_grad():
        preds = model(images).argmax(1)
    ctx = MetricContext(
        model=model, images=images, labels=preds, saliency=sal, preds=preds, settings={"n_steps": 5}
    )
    out = {
        n: get_metric_spec(n).fn(ctx)
        for n in ("road_morf", "road_lerf", "srg_road", "srg_mean", "srg_blur", "deletion_blur")
    }
    torch.testing.assert_close(out["srg_road"], out["road_lerf"] - out["road_morf"])
    assert sorted(ctx.cache) == ["morf_lerf/blur", "morf_lerf/mean", "road"]
    names = {name for _, name, _ in ctx.kept}
    assert names == {
        "curve/road_morf",
        "curve/road_lerf",
        "curve/lerf_mean",
        "curve/lerf_blur",
        "curve/deletion_blur",
        "range/road_morf",
        "range/road_lerf",
        "range/srg_road",
        "range/srg_mean",
        "range/srg_blur",
        "range/deletion_blur_auc",
    }  # curves, and their ends for the audit
    dele = deletion(model, images, sal, n_steps=5, substrate="blur")
    torch.testing.assert_close(out["deletion_blur"], dele)
    assert all(torch.isfinite(v).all() for v in out.values())
    # after the deletion metric, srg_mean reuses its curve (only the LeRF order is recomputed)
    ctx2 = MetricContext(
        model=model, images=images, labels=preds, saliency=sal, preds=preds, settings={"n_steps": 5}
    )
    get_metric_spec("deletion").fn(ctx2)
    assert "deletion/mean" in ctx2.cache
    torch.testing.assert_close(get_metric_spec("srg_mean").fn(ctx2), out["srg_mean"])
    torch.testing.assert_close(ctx2.cache["morf_lerf/mean"], ctx.cache["morf_lerf/mean"])
    assert get_metric_spec("srg_mean").column == "srg_mean"
    assert get_metric_spec("deletion_blur").column == "deletion_blur_auc"


# -- rank agreement between fills ----------------------------------------------------------------
def _board():
    return pd.DataFrame(
        {
            "dataset": ["d"] * 4,
            "model": ["m"] * 4,
            "kind": ["method"] * 4,
            "method": ["a", "b", "c", "e"],
            "deletion_auc": [0.1, 0.2, 0.3, 0.4],  # a best
            "road_morf": [0.4, 0.3, 0.2, 0.1],  # e best: reversed
            "srg_mean": [0.9, 0.8, 0.6, 0.7],  # a, b, e, c
        }
    )


def test_fill_agreement_kendall_tau_by_hand(tmp_path):
    agree = fill_agreement(_board()).set_index(["metric_a", "metric_b"]).tau
    assert agree["deletion_auc", "road_morf"] == pytest.approx(-1.0)
    # deletion order a,b,c,e vs srg a,b,e,c: 5 concordant, 1 discordant pair → τ = 4/6
    assert agree["deletion_auc", "srg_mean"] == pytest.approx(4 / 6)
    assert agree["road_morf", "srg_mean"] == pytest.approx(-4 / 6)
    ranks = fill_ranks(_board()).set_index("method")
    assert ranks.loc["e"].tolist()[2:] == [4.0, 1.0, 3.0]
    write_fill_agreement(_board(), tmp_path)
    text = (tmp_path / "fill_agreement.md").read_text()
    assert "| deletion_auc | 1.00 | -1.00 | 0.67 |" in text
    assert len(pd.read_csv(tmp_path / "fill_agreement.csv")) == 3


@pytest.mark.slow
def test_run_writes_fill_columns_settings_and_agreement(tiny_scenes, tmp_path):
    """End to end: the fill metrics as leaderboard columns, their settings in the footnote and
    the rank agreement between fills beside the leaderboard."""
    from nicebench.config import RunConfig, parse_specs
    from nicebench.runner import run
    from nicebench.testing import TINY_SCENES

    tiny = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
    cfg = RunConfig(
        datasets=parse_specs(tiny),
        methods=parse_specs(["random", "center", "gradcam", "oracle"]),
        n_images=8,
        shard_size=8,
        batch_size=64,
        out=str(tmp_path),
        settings={"n_steps": 8},
        metrics=[
            "deletion",
            "deletion_blur",
            "road_morf",
            "road_lerf",
            "srg_road",
            "srg_mean",
            "srg_blur",
        ],
    )
    summary = run(cfg, progress=False)
    assert summary.ok == 4 and not summary.failed
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    cols = [
        "deletion_auc",
        "deletion_blur_auc",
        "road_morf",
        "road_lerf",
        "srg_road",
        "srg_mean",
        "srg_blur",
    ]
    assert board[cols].notna().all().all()
    np.testing.assert_allclose(board.srg_road, board.road_lerf - board.road_morf, atol=1e-6)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "ROAD settings: percentages: 10%..90%" in md and "SRG settings:" in md
    agree = pd.read_csv(tmp_path / "fill_agreement.csv")
    assert len(agree) == 15 and agree.tau.between(-1, 1).all()
    assert "| gradcam |" in (tmp_path / "fill_agreement.md").read_text()
