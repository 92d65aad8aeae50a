"""LIME, RISE and real-time saliency: estimators on toy models, caching (contract: test_contract)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nicebench.methods.lime import LimeMethod, WeightedRidge, superpixels
from nicebench.methods.rise import Rise, rise_masks
from nicebench.methods.rtsal import RealTimeSaliency, feature_taps
from nicebench.testing import tiny_setup

pytestmark = pytest.mark.usefixtures("test_cache_one_thread")


class RegionModel(nn.Module):
    """Class 0's logit is 8 × the mean brightness of the top-left quadrant; class 1's is 4."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0), requires_grad=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        region = x[:, :, : h // 2, : w // 2].mean((1, 2, 3))
        return torch.stack([self.scale * region, torch.full_like(region, 4.0)], 1)


def _quadrant_contrast(sal: torch.Tensor) -> float:
    h, w = sal.shape[-2:]
    inside = sal[..., : h // 2, : w // 2].mean()
    outside = (sal.sum() - sal[..., : h // 2, : w // 2].sum()) / (sal.numel() * 3 / 4)
    return float(inside - outside)


def test_rise_masks_shape_range_and_seed():
    m = rise_masks(200, 4, 0.5, (32, 40), seed=3)
    assert m.shape == (200, 1, 32, 40)
    assert m.min() >= 0 and m.max() <= 1
    assert abs(m.mean().item() - 0.5) < 0.05
    assert torch.equal(m, rise_masks(200, 4, 0.5, (32, 40), seed=3))
    assert not torch.equal(m, rise_masks(200, 4, 0.5, (32, 40), seed=4))
    # random shifts: the masks are not all aligned on the same cell grid
    assert (m[:, 0, 0, 0] - m[:, 0, 0, 1]).abs().sum() > 0


def test_rise_finds_the_region_that_drives_the_score():
    model = RegionModel()
    x = torch.ones(2, 3, 32, 32)
    sal = Rise(model, n_masks=400, grid=4, batch_size=256).explain(x, torch.tensor([0, 1]))
    assert sal.shape == (2, 1, 32, 32)
    assert _quadrant_contrast(sal[0]) > 0.05  # class 0 lives in the top-left quadrant
    assert _quadrant_contrast(sal[1]) < -0.05  # class 1 gains where class 0 loses


def test_rise_is_unbiased_for_a_constant_model():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, x):
            return torch.zeros(len(x), 2) + self.w

    sal = Rise(Flat(), n_masks=500, p=0.3, grid=4).explain(torch.rand(1, 3, 24, 24), 0)
    # E[M] = p, so Σ 0.5·M / (N p) ≈ 0.5 everywhere
    assert abs(sal.mean().item() - 0.5) < 0.03


def test_lime_weighted_ridge_matches_weighted_least_squares():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(200, 6, generator=gen) < 0.5).float()
    coef = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    y = x @ coef + 0.7 + 0.01 * torch.randn(200, generator=gen)
    w = torch.rand(200, generator=gen)
    ridge = WeightedRidge(alpha=1e-9)
    ridge.fit(DataLoader(TensorDataset(x, y, w), batch_size=200))
    a = np.c_[x.numpy(), np.ones(200)] * np.sqrt(w.numpy())[:, None]
    ref = np.linalg.lstsq(a, y.numpy() * np.sqrt(w.numpy()), rcond=None)[0][:6]
    np.testing.assert_allclose(ridge.representation().numpy(), ref, atol=1e-4)


def test_lime_superpixels_and_region():
    model = RegionModel()
    x = torch.ones(1, 3, 32, 32)
    x[:, 1] = torch.linspace(0, 1, 32)[None, :, None]  # a gradient so SLIC has structure
    seg = superpixels(x[0], 16)
    assert seg.shape == (32, 32) and seg.min() == 0
    assert torch.equal(torch.unique(seg), torch.arange(seg.max() + 1))
    method = LimeMethod(model, n_samples=200, n_segments=16, baseline="black")
    sal = method.explain(x, 0)
    assert _quadrant_contrast(sal[0]) > 0
    assert torch.equal(sal, method.explain(x, 0))  # seeded
    other = LimeMethod(model, n_samples=200, n_segments=16, baseline="black", seed=1).explain(x, 0)
    assert not torch.equal(sal, other)


def test_rtsal_taps_trains_caches_and_swaps_model(tmp_path, monkeypatch):
    model, ds = tiny_setup(n=8)
    taps = feature_taps(model, (3, 32, 32), max_scales=3)
    assert [c for _, c in taps] == [32, 64, 128]
    train = ds.train_split()
    params = {"n_train": 32, "epochs": 1, "batch_size": 16}
    m = RealTimeSaliency(model, **params).fit(train)
    assert (tmp_path / "cache" / "rtsal").is_dir()
    x = torch.stack([ds[i][0] for i in range(4)])
    sal = m.explain(x, torch.tensor([0, 1, 2, 3]))
    assert sal.shape == (4, 1, 32, 32) and sal.min() >= 0 and sal.max() <= 1
    assert not torch.equal(sal, m.explain(x, torch.tensor([1, 2, 3, 4])))  # class-conditioned

    # a second instance loads the cached decoder instead of training
    monkeypatch.setattr(RealTimeSaliency, "train_module", lambda *a: pytest.fail("retrained"))
    again = RealTimeSaliency(model, **params).fit(train)
    assert torch.equal(again.explain(x, torch.tensor([0, 1, 2, 3])), sal)

    other = tiny_setup(n=8, seed=1)[0]
    swapped = m.with_model(other)
    assert swapped.decoder is m.decoder and swapped.model is other
    assert not torch.allclose(swapped.explain(x, torch.tensor([0, 1, 2, 3])), sal)
