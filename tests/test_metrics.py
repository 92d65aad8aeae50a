"""Deletion/insertion against the plain per-image loop, localisation metrics, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

import nicebench as nb
from nicebench.metrics import (
    auc,
    bootstrap_ci,
    deletion,
    energy_pointing_game,
    insertion,
    mask_auroc,
    pixel_ranks,
    pointing_game,
)
from nicebench.metrics.reference import deletion_loop, insertion_loop
from nicebench.testing import tiny_setup


def test_auc_formula():
    curves = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])
    assert torch.allclose(auc(curves), torch.tensor([0.5, 0.2]))


def test_pixel_ranks_order_and_seeded_ties():
    sal = torch.tensor([[[[0.1, 0.9], [0.5, 0.5]]]])
    r = pixel_ranks(sal, seed=0)[0]
    assert r[1] == 0 and r[0] == 3 and {r[2].item(), r[3].item()} == {1, 2}
    flat = torch.zeros(1, 1, 8, 8)
    assert torch.equal(pixel_ranks(flat, 3), pixel_ranks(flat, 3))
    assert not torch.equal(pixel_ranks(flat, 3), pixel_ranks(flat, 4))
    # batch-independent: an image's ranks don't depend on its neighbours
    two = torch.cat([flat, torch.rand(1, 1, 8, 8)])
    assert torch.equal(pixel_ranks(two, 3)[0], pixel_ranks(flat, 3)[0])


@pytest.mark.parametrize("n_steps", [None, 7, 32])
def test_vectorised_equals_per_image_loop(n_steps):
    model, ds = tiny_setup(size=32, n=4)
    images = torch.stack([ds[i][0] for i in range(4)])
    sal = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    d = deletion(model, images, sal, n_steps=n_steps, batch_size=13)
    i = insertion(model, images, sal, n_steps=n_steps, batch_size=13)
    assert torch.allclose(d, deletion_loop(model, images, sal, n_steps=n_steps), atol=1e-5)
    assert torch.allclose(i, insertion_loop(model, images, sal, n_steps=n_steps), atol=1e-5)


def test_curve_endpoints_and_substrate():
    model, ds = tiny_setup(size=32, n=2)
    images = torch.stack([ds[i][0] for i in range(2)])
    sal = torch.rand(2, 1, 32, 32)
    _, curves = deletion(model, images, sal, n_steps=8, return_curves=True)
    with torch.no_grad():
        p = torch.softmax(model(images), 1)
        pred = p.argmax(1)
        p_full = p.gather(1, pred[:, None])[:, 0]
        fill = model.mean.expand_as(images)
        p_empty = torch.softmax(model(fill), 1).gather(1, pred[:, None])[:, 0]
    assert torch.allclose(curves[:, 0], p_full, atol=1e-6)
    assert torch.allclose(curves[:, -1], p_empty, atol=1e-6)
    _, ins = insertion(model, images, sal, n_steps=8, return_curves=True)
    assert torch.allclose(ins[:, -1], p_full, atol=1e-6)
    with pytest.raises(ValueError, match="substrate"):
        deletion(model, images, sal, substrate="purple")
    with pytest.raises(ValueError, match="does not match"):
        deletion(model, images, sal[:, :, :16])


class _RegionModel(torch.nn.Module):
    """Class-1 logit grows with the mean brightness of the top-left quadrant."""

    def forward(self, x):
        s = x[:, :, :8, :8].mean((1, 2, 3)) * 20
        return torch.stack([torch.zeros_like(s), s - 5], 1)


def test_deletion_rewards_the_right_map():
    model = _RegionModel()
    images = torch.ones(3, 3, 16, 16)
    good = torch.zeros(3, 1, 16, 16)
    good[:, :, :8, :8] = 1
    bad = 1 - good
    d_good = deletion(model, images, good, substrate="black", n_steps=16, target=torch.ones(3))
    d_bad = deletion(model, images, bad, substrate="black", n_steps=16, target=torch.ones(3))
    assert (d_good < d_bad).all()
    i_good = insertion(model, images, good, n_steps=16, start="black", target=torch.ones(3))
    i_bad = insertion(model, images, bad, n_steps=16, start="black", target=torch.ones(3))
    assert (i_good > i_bad).all()


def test_pointing_game_ties_and_tolerance():
    masks = torch.zeros(3, 1, 32, 32)
    masks[:, :, 10:20, 10:20] = 1
    sal = torch.zeros(3, 1, 32, 32)
    sal[0, 0, 15, 15] = 1  # inside
    sal[1, 0, 0, 0] = 1  # far outside
    sal[2] = 1  # constant: ties, hit share = dilated mask area share
    pg = pointing_game(sal, masks, tolerance=0)
    assert pg[0] == 1 and pg[1] == 0
    assert math.isclose(pg[2].item(), 100 / 1024, rel_tol=1e-6)
    near = torch.zeros(1, 1, 32, 32)
    near[0, 0, 15, 22] = 1  # 3 px right of the mask
    assert pointing_game(near, masks[:1], tolerance=0) == 0
    assert pointing_game(near, masks[:1], tolerance=3) == 1
    assert pointing_game(near, masks[:1]) == 0  # default: 15 px at 224 = 2.1 px at 32 < 3 px


def test_energy_and_auroc():
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, :4] = 1
    sal = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sal[1] = -1  # no positive mass → uniform
    e = energy_pointing_game(sal, masks)
    s0 = sal[0].clamp(min=0)
    assert math.isclose(e[0].item(), (s0 * masks[0]).sum().item() / s0.sum().item(), rel_tol=1e-5)
    assert math.isclose(e[1].item(), 0.5)
    a = mask_auroc(sal, masks)
    pos, neg = sal[0][masks[0] > 0].numpy(), sal[0][masks[0] == 0].numpy()
    expected = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
    assert math.isclose(a[0].item(), expected, rel_tol=1e-5)
    assert math.isclose(a[1].item(), 0.5)
    assert torch.isnan(mask_auroc(sal, torch.zeros_like(masks))).all()


def test_bootstrap_ci():
    rng = np.random.default_rng(0)
    v = rng.normal(1.0, 1.0, 400)
    mean, lo, hi, n = bootstrap_ci(v)
    assert n == 400 and lo < mean < hi
    assert math.isclose(hi - lo, 2 * 1.96 / 20, rel_tol=0.2)
    assert bootstrap_ci([np.nan, 1.0, 1.0])[3] == 2
    assert math.isnan(bootstrap_ci([])[0])


def test_metrics_registered():
    names = nb.list_metrics()
    for m in ("deletion", "insertion", "pointing_game", "energy_pointing_game", "mask_auroc"):
        assert m in names
    assert nb.list_metrics("*pointing*") == ["energy_pointing_game", "pointing_game"]


def test_register_metric_takes_a_function_or_a_spec():
    from nicebench.metrics import MetricSpec, get_metric_spec
    from nicebench.testing import restored

    with restored("metric", "zz_peak", "zz_low", "zz_full"):

        @nb.register_metric("zz_peak", higher_is_better=True, description="peak of the map")
        def peak(ctx):
            return ctx.saliency.flatten(1).amax(1)

        spec = get_metric_spec("zz_peak")
        assert callable(peak) and spec.fn is peak  # the decorator returns the function
        assert (spec.column, spec.higher_is_better, spec.needs_masks) == ("zz_peak", True, False)
        assert spec.description == "peak of the map" and spec.applies(None)

        nb.register_metric(
            "zz_low",
            lambda c: c.saliency.mean((1, 2, 3)),
            column="zz_low_col",
            higher_is_better=False,
            needs_masks=True,
        )
        low = get_metric_spec("zz_low")
        assert (low.column, low.higher_is_better, low.needs_masks) == ("zz_low_col", False, True)

        full = MetricSpec("zz_full", lambda c: c.saliency.sum((1, 2, 3)), "zz_full", True)
        assert nb.register_metric(full) is full and get_metric_spec("zz_full") is full

        with pytest.raises(TypeError, match="higher_is_better=True or False"):
            nb.register_metric("zz_nodir")(lambda c: c.saliency.sum((1, 2, 3)))
        with pytest.raises(TypeError, match="higher_is_better"):
            nb.register_metric("zz_nodir", lambda c: c.saliency.sum((1, 2, 3)))
        with pytest.raises(TypeError, match="carries its own options"):
            nb.register_metric(full, higher_is_better=False)
        with pytest.raises(TypeError, match="fn\\(ctx\\)"):
            nb.register_metric("zz_notfn", 3, higher_is_better=True)
        assert "zz_nodir" not in nb.list_metrics() and "zz_notfn" not in nb.list_metrics()
        with pytest.raises(ValueError, match="already registered"):
            nb.register_metric("zz_peak", higher_is_better=True)(lambda c: c.saliency)
    assert not {"zz_peak", "zz_low", "zz_full"} & set(nb.list_metrics())
