"""Randomisation tests (cascade, random logit, refitted learned methods), captum's infidelity and
max-sensitivity, and the complexity metrics, each against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

import nicebench as nb
from nicebench.metrics import MetricContext, get_metric_spec
from nicebench.metrics.complexity import entropy, sparseness
from nicebench.metrics.randomisation import (
    cascade_steps,
    random_other_class,
    ssim,
)
from nicebench.metrics.robustness import infidelity, sensitivity_max
from nicebench.metrics.sanity import (
    cached_randomised_model,
    parametrised_layers,
    randomised_model,
    refit_method,
    sanity_spearman,
)
from nicebench.registry import get_method_class
from nicebench.testing import tiny_setup

pytestmark = pytest.mark.usefixtures("test_cache_one_thread")


@pytest.fixture
def tiny():
    model, ds = tiny_setup(n=6)
    images = torch.stack([ds[i][0] for i in range(6)])
    with torch.no_grad():
        preds = model(images).argmax(1)
    return model, ds, images, preds


def _ctx(model, images, preds, method, **settings):
    maps = method.explain(images, preds)
    return MetricContext(
        model=model,
        images=images,
        labels=preds,
        saliency=maps,
        preds=preds,
        method=method,
        settings={"seed": 0, **settings},
    )


def _scipy_abs_spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array(
        [
            spearmanr(x.abs().flatten().numpy(), y.abs().flatten().numpy())[0]
            for x, y in zip(a, b, strict=True)
        ]
    )


# -- one randomised model per (classifier, top_k, seed) ------------------------------------------
def test_randomised_model_is_built_once_and_equals_a_fresh_one(tiny):
    model = tiny[0]
    a = cached_randomised_model(model, 3, seed=0)
    assert cached_randomised_model(model, 3, seed=0) is a
    assert cached_randomised_model(model, 3, seed=1) is not a
    fresh = randomised_model(model, 3, seed=0)
    for (n1, t1), (n2, t2) in zip(a.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2)
    every = len(parametrised_layers(model))
    assert cached_randomised_model(model, None, 0) is cached_randomised_model(model, every, 0)


def test_sanity_column_is_unchanged_by_the_shared_randomised_model(tiny):
    model, _, images, preds = tiny
    method = nb.create_method("saliency", model)
    ctx = _ctx(model, images, preds, method, sanity_images=4)
    got = get_metric_spec("sanity_spearman").fn(ctx)
    before = sanity_spearman(
        method,
        model,
        images[:4],
        preds[:4],
        maps=ctx.saliency[:4],
        random_model=randomised_model(model, seed=0),
    )
    torch.testing.assert_close(got[:4], before, rtol=0, atol=0)
    assert got[4:].isnan().all()


# -- cascade ---------------------------------------------------------------------------------------
def test_ssim_matches_scikit_image():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 20, 17, generator=gen)
    b = (a + 0.3 * torch.rand(3, 1, 20, 17, generator=gen)).clamp(0, 1)
    got = ssim(a, b)
    ref = [
        structural_similarity(
            x[0].numpy().astype(np.float64), y[0].numpy().astype(np.float64), data_range=1.0
        )
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ssim(a, a), torch.ones(3))


def test_cascade_steps(tiny):
    model = tiny[0]
    n = len(parametrised_layers(model))
    assert cascade_steps(model, "1,3,all") == [1, 3, n]
    assert cascade_steps(model, "every") == list(range(1, n + 1))
    assert cascade_steps(model, "2") == [2]
    with pytest.raises(ValueError):
        cascade_steps(model, "0")


def test_cascade_curves_match_a_direct_computation(tiny):
    model, _, images, preds = tiny
    method = nb.create_method("saliency", model)
    ctx = _ctx(model, images, preds, method, sanity_images=5, cascade="1,2")
    rho = get_metric_spec("cascade_spearman").fn(ctx)
    sim = get_metric_spec("cascade_ssim").fn(ctx)
    curves_rho, curves_ssim = [], []
    for k in (1, 2):
        rmaps = nb.create_method("saliency", randomised_model(model, k, seed=0)).explain(
            images[:5], preds[:5]
        )
        curves_rho.append(_scipy_abs_spearman(ctx.saliency[:5], rmaps))
        unit = lambda m: m.abs() / m.abs().flatten(1).amax(1)[:, None, None, None]  # noqa: E731
        curves_ssim.append(
            [
                structural_similarity(x[0].double().numpy(), y[0].double().numpy(), data_range=1.0)
                for x, y in zip(unit(ctx.saliency[:5]), unit(rmaps), strict=True)
            ]
        )
    curves_rho, curves_ssim = np.stack(curves_rho, 1), np.stack(curves_ssim, 1)
    np.testing.assert_allclose(rho[:5].numpy(), curves_rho.mean(1), atol=1e-5)
    np.testing.assert_allclose(sim[:5].numpy(), curves_ssim.mean(1), atol=1e-5)
    assert rho[5:].isnan().all() and sim[5:].isnan().all()
    kept = {name: [] for name in ("curve/cascade_spearman", "curve/cascade_ssim")}
    for i, name, arr in ctx.kept:
        kept[name].append((i, arr))
    assert [i for i, _ in kept["curve/cascade_spearman"]] == list(range(5))
    np.testing.assert_allclose(
        np.stack([a for _, a in kept["curve/cascade_spearman"]]), curves_rho, atol=1e-5
    )
    # a model-independent map is identical at every step
    edges = nb.create_method("edges", model)
    ctx = _ctx(model, images, preds, edges, sanity_images=6, cascade="1,2")
    torch.testing.assert_close(get_metric_spec("cascade_spearman").fn(ctx), torch.ones(6))
    torch.testing.assert_close(get_metric_spec("cascade_ssim").fn(ctx), torch.ones(6))


# -- random logit ----------------------------------------------------------------------------------
def test_random_other_class_is_another_class_and_shard_independent():
    targets = torch.arange(10) % 4
    other = random_other_class(targets, 4, start=0, seed=3)
    assert (other != targets).all() and ((other >= 0) & (other < 4)).all()
    torch.testing.assert_close(random_other_class(targets[6:], 4, start=6, seed=3), other[6:])
    assert not torch.equal(random_other_class(targets, 4, start=0, seed=4), other)
    draws = random_other_class(torch.zeros(4000, dtype=torch.long), 4, 0, 0)
    counts = torch.bincount(draws, minlength=4)
    assert counts[0] == 0 and (counts[1:] > 1200).all()  # uniform over the other three


def test_random_logit_matches_a_direct_computation(tiny):
    model, _, images, preds = tiny
    method = nb.create_method("saliency", model)
    ctx = _ctx(model, images, preds, method, sanity_images=6)
    got = get_metric_spec("random_logit").fn(ctx)
    other = random_other_class(preds, int(model(images[:1]).shape[1]), 0, 0)
    ref = _scipy_abs_spearman(ctx.saliency, method.explain(images, other))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    center = nb.create_method("center", model)  # class-agnostic: the same map
    torch.testing.assert_close(
        get_metric_spec("random_logit").fn(_ctx(model, images, preds, center, sanity_images=6)),
        torch.ones(6),
    )


# -- refitted learned methods ----------------------------------------------------------------------
def test_learned_methods_are_refit_on_the_randomised_model(tiny):
    model, ds, images, preds = tiny
    nice = nb.create_method("nice", model, **get_method_class("nice").quick_params)
    nice.fit(ds.train_split())
    rand = cached_randomised_model(model, 3, seed=0)
    other = refit_method(nice, rand, epochs=1, n_train=32)
    assert refit_method(nice, rand, epochs=1, n_train=32) is other  # once per budget and model
    assert other is not nice and other.model is rand and other.fitted
    assert (other.epochs, other.n_train) == (1, 32) and other.lam == nice.lam
    assert other.train_info["identity"]["classifier"] != nice.train_info["identity"]["classifier"]
    assert not torch.equal(other.explain(images, preds), nice.explain(images, preds))
    # cached like a fit: a second instance loads the same weights
    again = nice.refit_on(rand, epochs=1, n_train=32)
    torch.testing.assert_close(again.explain(images, preds), other.explain(images, preds))
    # the sanity metric uses the refit: nice no longer reads 1 because it was not refit
    ctx = _ctx(model, images, preds, nice, sanity_images=6, refit_epochs=1, refit_images=32)
    rho = get_metric_spec("sanity_spearman").fn(ctx)
    assert not torch.allclose(rho[~rho.isnan()], torch.ones(int((~rho.isnan()).sum())))
    # a method that does not learn is only rebuilt on the model
    sal = nb.create_method("saliency", model)
    assert sal.refit_on(rand, epochs=1, n_train=1).model is rand


def test_refit_before_fit_raises(tiny):
    model = tiny[0]
    with pytest.raises(RuntimeError, match="fit"):
        nb.create_method("rtsal", model).refit_on(model, epochs=1, n_train=1)


# -- captum's infidelity and sensitivity ----------------------------------------------------------
def test_infidelity_matches_a_direct_evaluation_on_a_linear_model():
    gen = torch.Generator().manual_seed(0)
    b, c, h, w, n, std = 3, 2, 4, 5, 6, 0.1
    weight = torch.randn(4, c * h * w, generator=gen)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 4, bias=False))
    model[1].weight.data = weight
    x = torch.rand(b, c, h, w, generator=gen)
    targets = torch.tensor([0, 2, 3])
    maps = torch.randn(b, 1, h, w, generator=gen)
    got = infidelity(model, x, maps, targets, perturbation="gaussian", std=std, n_samples=n, seed=7)
    # directly: captum draws the perturbations of the n copies of each image in one call
    noise = torch.randn(b * n, c, h, w, generator=torch.Generator().manual_seed(7)) * std
    noise = noise.reshape(b, n, c * h * w)
    a = (noise * maps.expand(-1, c, -1, -1).reshape(b, 1, -1)).sum(-1)  # Iᵀ Φ
    d = (noise * weight[targets][:, None, :]).sum(-1)  # f(x) − f(x − I) = w_cᵀ I
    beta = (a * d).sum(1) / (a * a).sum(1)
    ref = ((beta[:, None] * a - d) ** 2).mean(1)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)
    # the model's own weights as the map (its gradient): zero infidelity
    grad_map = weight[targets].reshape(b, c, h, w)[:, :1]
    model2 = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(h * w, 4, bias=False))
    model2[1].weight.data = weight[:, : h * w]
    exact = infidelity(
        model2, x[:, :1], grad_map, targets, perturbation="gaussian", std=std, n_samples=n, seed=1
    )
    assert exact.abs().max() < 1e-6 * ref.mean()  # float32 round-off of ~1e-2 squared errors


def test_square_removal_infidelity_matches_a_direct_evaluation_on_a_linear_model():
    gen = torch.Generator().manual_seed(2)
    b, c, h, w, n = 2, 3, 8, 8, 5
    weight = torch.randn(4, c * h * w, generator=gen)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 4, bias=False))
    model[1].weight.data = weight
    model.mean = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1)  # the fill
    x = torch.rand(b, c, h, w, generator=gen)
    targets = torch.tensor([1, 3])
    maps = torch.rand(b, 1, h, w, generator=gen)
    got = infidelity(
        model, x, maps, targets, perturbation="square", square=0.25, n_samples=n, seed=4
    )
    g = torch.Generator().manual_seed(4)  # captum's one call on the b·n rows: tops, then lefts
    top = torch.randint(0, h - 2 + 1, (b * n, 1), generator=g).reshape(b, n)
    left = torch.randint(0, w - 2 + 1, (b * n, 1), generator=g).reshape(b, n)
    a, d = torch.zeros(b, n), torch.zeros(b, n)
    for i in range(b):
        for j in range(n):
            t, l_ = int(top[i, j]), int(left[i, j])
            a[i, j] = maps[i, 0, t : t + 2, l_ : l_ + 2].sum()  # the map's sum over the square
            filled = x[i].clone()
            filled[:, t : t + 2, l_ : l_ + 2] = model.mean[0]
            d[i, j] = weight[targets[i]] @ (x[i] - filled).reshape(-1)
    beta = (a * d).sum(1) / (a * a).sum(1)
    torch.testing.assert_close(got, ((beta[:, None] * a - d) ** 2).mean(1), rtol=1e-4, atol=1e-6)


def test_sensitivity_max_matches_a_direct_evaluation():
    gen = torch.Generator().manual_seed(0)
    b, n, r = 3, 5, 0.05
    x = torch.rand(b, 1, 4, 4, generator=gen)
    explain = lambda imgs, t: imgs.square() * (t.float() + 1)[:, None, None, None]  # noqa: E731
    targets = torch.tensor([0, 1, 2])
    got = sensitivity_max(explain, x, targets, radius=r, n_samples=n, seed=3)
    u = torch.rand(b * n, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    xp = x.repeat_interleave(n, 0) + (2 * u - 1) * r
    e0 = explain(x, targets).repeat_interleave(n, 0)
    e1 = explain(xp, targets.repeat_interleave(n))
    ratio = (e1 - e0).flatten(1).norm(dim=1) / e0.flatten(1).norm(dim=1)
    torch.testing.assert_close(got, ratio.reshape(b, n).amax(1))
    # precomputed maps of the unperturbed images are used as they are
    torch.testing.assert_close(
        sensitivity_max(
            explain, x, targets, maps=explain(x, targets), radius=r, n_samples=n, seed=3
        ),
        got,
    )


def test_infidelity_and_sensitivity_metrics_run_in_a_cell(tiny):
    model, _, images, preds = tiny
    ctx = _ctx(
        model,
        images,
        preds,
        nb.create_method("saliency", model),
        sensitivity_images=4,
        sensitivity_samples=3,
        infidelity_samples=4,
    )
    inf = get_metric_spec("infidelity").fn(ctx)
    sens = get_metric_spec("sensitivity_max").fn(ctx)
    assert inf.shape == (6,) and torch.isfinite(inf).all() and (inf >= 0).all()
    assert torch.isfinite(sens[:4]).all() and sens[4:].isnan().all()
    torch.testing.assert_close(get_metric_spec("infidelity").fn(ctx), inf)  # seeded


# -- complexity ------------------------------------------------------------------------------------
def test_sparseness_is_the_gini_index():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(4, 1, 5, 6, generator=gen)
    a = maps.abs().flatten(1).double().numpy()
    # Gini as the mean absolute difference over twice the mean
    ref = np.abs(a[:, :, None] - a[:, None, :]).sum((1, 2)) / (2 * a.shape[1] * a.sum(1))
    np.testing.assert_allclose(sparseness(maps).numpy(), ref, rtol=1e-5)
    one = torch.zeros(1, 1, 4, 5)
    one[0, 0, 1, 2] = -3.0
    assert sparseness(one).item() == pytest.approx(1 - 1 / 20)
    assert sparseness(torch.full((1, 1, 4, 5), 2.0)).item() == pytest.approx(0.0, abs=1e-7)
    assert sparseness(torch.zeros(1, 1, 4, 5)).isnan().all()


def test_entropy_of_the_normalised_map():
    gen = torch.Generator().manual_seed(1)
    maps = torch.randn(4, 1, 5, 6, generator=gen)
    ref = [scipy_entropy(m.abs().flatten().double().numpy()) for m in maps]
    np.testing.assert_allclose(entropy(maps).numpy(), ref, rtol=1e-5)
    one = torch.zeros(1, 1, 4, 5)
    one[0, 0, 0, 0] = 1.0
    assert entropy(one).item() == 0.0
    assert entropy(torch.ones(1, 1, 4, 5)).item() == pytest.approx(math.log(20))
    assert entropy(torch.zeros(1, 1, 4, 5)).isnan().all()


def test_footnotes_name_the_settings():
    from nicebench.metric_spec import catalogue
    from nicebench.metrics import get_metric_spec
    from nicebench.registry import METRICS
    from nicebench.report.columns import Catalogue

    specs = [get_metric_spec(n) for n in METRICS.names()]
    rows = catalogue(specs, {"seed": 5, "infidelity_std": 0.2})  # as the runner stores them
    lines = Catalogue(tuple(rows)).notes(["infidelity", "cascade_spearman", "deletion_auc"])
    text = "\n".join(lines)
    assert (
        "square of side 0.25" in text
        and "seed 5" in text
        and "1,3,all" in text
        and "re-fitted" in text
    )
    assert not any(line.startswith("sensitivity_max") for line in lines)


def test_a_run_with_the_new_metrics_stores_columns_curves_and_footnotes(
    tiny_scenes, session_cache, tmp_path, monkeypatch
):
    import pandas as pd

    from nicebench.config import RunConfig, parse_specs
    from nicebench.runner import run
    from nicebench.store import RunStore
    from nicebench.testing import TINY_SCENES

    new = [
        "cascade_spearman",
        "cascade_ssim",
        "random_logit",
        "infidelity",
        "sensitivity_max",
        "sparseness",
        "entropy",
        "sanity_spearman",
    ]
    spec = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
    cfg = RunConfig(
        datasets=parse_specs(spec),
        methods=parse_specs(["gradcam", "center"]),
        n_images=6,
        shard_size=6,
        batch_size=6,
        out=str(tmp_path),
        metrics=new,
        settings={
            "sanity_images": 4,
            "sensitivity_images": 3,
            "sensitivity_samples": 2,
            "infidelity_samples": 4,
            "cascade": "1,all",
        },
    )
    monkeypatch.setenv("NICEBENCH_CACHE", str(session_cache))  # the fixture's trained classifier
    summary = run(cfg, progress=False)
    assert summary.ok == 2 and not summary.failed
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    for col in new:
        assert board[col].notna().all(), col
    assert board.loc["center", "cascade_spearman"] == 1.0
    assert board.loc["center", "random_logit"] == 1.0
    store = RunStore(tmp_path)
    try:
        curves = store.artifacts("curve/cascade_%")
    finally:
        store.close()
    assert len(curves) == 2 * 2 * 4 and {a.shape for a in curves.array} == {(2,)}
    md = (tmp_path / "leaderboard.md").read_text()
    assert "cascade_spearman: cascade steps (top layers randomised): 1,all" in md
    assert "infidelity: captum infidelity" in md and "sensitivity_max: captum" in md
