"""The hard-concrete gate: Monte-Carlo checks against the closed forms, gradients, TV, upsampling."""

from __future__ import annotations

import math

import pytest
import torch

from nicebench.gates import hard_concrete as hc

N = 200_000
LOG_ALPHAS = [-3.0, -1.0, 0.0, 0.7, 2.5]


def _samples(log_alpha: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    la = torch.full((N,), log_alpha, dtype=torch.float64)
    return hc.sample(la, generator=g)


def _tol(p: float) -> float:
    """Five standard errors of a proportion estimated from N samples (plus float slack)."""
    return 5 * math.sqrt(max(p * (1 - p), 1e-4) / N) + 1e-6


@pytest.mark.parametrize("log_alpha", LOG_ALPHAS)
def test_point_masses_and_expected_l0(log_alpha: float) -> None:
    z = _samples(log_alpha)
    assert z.min() >= 0 and z.max() <= 1
    la = torch.tensor(log_alpha, dtype=torch.float64)
    p0, p1, l0 = hc.prob_zero(la).item(), hc.prob_one(la).item(), hc.expected_l0(la).item()
    assert abs((z == 0).double().mean().item() - p0) < _tol(p0)
    assert abs((z == 1).double().mean().item() - p1) < _tol(p1)
    assert abs((z != 0).double().mean().item() - l0) < _tol(l0)
    assert abs(p0 + l0 - 1) < 1e-12


@pytest.mark.parametrize("log_alpha", [-1.0, 0.0, 1.5])
def test_interior_cdf(log_alpha: float) -> None:
    """P(z ≤ t) = σ(β·logit((t−γ)/(ζ−γ)) − log α) for t in (0, 1)."""
    z = _samples(log_alpha, seed=1)
    for t in (0.1, 0.5, 0.9):
        q = (t - hc.GAMMA) / (hc.ZETA - hc.GAMMA)
        cdf = 1 / (1 + math.exp(-(hc.BETA * math.log(q / (1 - q)) - log_alpha)))
        assert abs((z <= t).double().mean().item() - cdf) < _tol(cdf)


def test_sample_with_given_noise_matches_formula_and_generator_is_deterministic() -> None:
    la = torch.linspace(-4, 4, 101, dtype=torch.float64)
    u = torch.rand(101, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + la) / hc.BETA)
    ref = (s * (hc.ZETA - hc.GAMMA) + hc.GAMMA).clamp(0, 1)
    torch.testing.assert_close(hc.sample(la, u), ref)
    a = hc.sample(la, generator=torch.Generator().manual_seed(5))
    b = hc.sample(la, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, hc.sample(la, generator=torch.Generator().manual_seed(6)))
    # extreme noise stays finite
    assert torch.isfinite(hc.sample(la, torch.tensor([0.0, 1.0]).repeat(51)[:101])).all()


def test_test_mask() -> None:
    la = torch.tensor([-10.0, -2.3978952728, 0.0, 2.3978952728, 10.0])  # logit(1/12), logit(11/12)
    expected = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0])
    torch.testing.assert_close(hc.test_mask(la), expected, atol=1e-6, rtol=0)
    la = torch.randn(1000)
    z = hc.test_mask(la)
    torch.testing.assert_close(z, (torch.sigmoid(la) * 1.2 - 0.1).clamp(0, 1))
    # z ≥ 0.5 exactly where log α ≥ 0
    assert torch.equal(z >= 0.5, la >= 0)


def test_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    la = (torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    u = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64) * 0.6 + 0.2
    # stay away from the clamp kinks, where the derivative is undefined
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / hc.BETA) * 1.2 - 0.1
    assert ((s - 0).abs() > 1e-3).all() and ((s - 1).abs() > 1e-3).all()
    assert torch.autograd.gradcheck(lambda a: hc.sample(a, u), (la,))
    assert torch.autograd.gradcheck(hc.expected_l0, (la,))
    assert torch.autograd.gradcheck(lambda a: hc.total_variation(hc.sample(a, u)), (la,))
    assert torch.autograd.gradcheck(lambda a: hc.upsample_cells(a, 2, (5, 6)), (la,))
    grad = torch.autograd.grad(hc.sample(la, u).sum(), la)[0]
    assert (grad >= 0).all() and (grad > 0).any()


def test_total_variation() -> None:
    m = torch.zeros(2, 1, 4, 4)
    m[0, :, :, 2:] = 1  # one vertical edge: 4 of the 24 neighbour pairs differ
    assert torch.allclose(hc.total_variation(m), torch.tensor([4 / 24, 0.0]))
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2
    assert hc.total_variation(checker.float()[None, None]).item() == 1.0
    assert hc.total_variation(torch.ones(3, 1, 1, 1)).tolist() == [0.0, 0.0, 0.0]
    row = torch.tensor([[[[0.0, 1.0, 1.0]]]])
    assert hc.total_variation(row).item() == pytest.approx(0.5)


def test_upsample_cells() -> None:
    z = torch.arange(6.0).view(1, 1, 2, 3)
    up = hc.upsample_cells(z, 2)
    assert up.shape == (1, 1, 4, 6)
    assert torch.equal(up[0, 0, :2, :2], torch.zeros(2, 2))
    assert torch.equal(up[0, 0, 2:, 4:], torch.full((2, 2), 5.0))
    assert torch.equal(up, torch.nn.functional.interpolate(z, scale_factor=2, mode="nearest"))
    assert torch.equal(hc.upsample_cells(z, 1), z)
    assert hc.upsample_cells(z, 4, size=(7, 10)).shape == (1, 1, 7, 10)
    assert hc.upsample_cells(z, 4, size=(7, 13))[0, 0, 0, -1].item() == 2.0


def test_ranked_test_mask_orders_plateaus_without_moving_gates() -> None:
    la = torch.full((1, 1, 12, 12), -30.0)
    la[0, 0, 2:9, 2:9] = 40.0  # a large kept block, logits far past σ's float32 saturation
    la[0, 0, 10, 10] = 60.0  # an isolated kept cell with the largest logit
    la[0, 0, 0, 11] = 0.3  # a partly open gate
    z = hc.test_mask(la)
    assert torch.sigmoid(la[0, 0, 10, 10]) == torch.sigmoid(la[0, 0, 5, 5])  # tied by σ alone
    plain = hc.ranked_test_mask(la)
    assert torch.allclose(plain, (1 - hc.TIE_BREAK) * z + hc.TIE_BREAK * torch.sigmoid(la))
    assert plain.min() >= 0 and plain.max() <= 1
    window = hc.rank_window_cells(12, 12)
    assert window == 3 and hc.rank_window_cells(32, 32) == 7 and hc.rank_window_cells(8, 8, 0) == 1
    ranked = hc.ranked_test_mask(la, window)
    # the same gates are open; every ranked value stays within 2e-3 of the test mask
    assert ((ranked - z).abs() <= 2 * hc.TIE_BREAK).all()
    assert torch.equal(ranked >= 0.5, z >= 0.5) and ranked.min() >= 0 and ranked.max() <= 1
    # fully open > partly open > closed still holds, and inside the open plateau the interior of
    # the block outranks both its rim and the isolated cell
    assert ranked[0, 0, 5, 5] == ranked.max()
    assert ranked[0, 0, 5, 5] > ranked[0, 0, 2, 2] > ranked[0, 0, 10, 10] > ranked[0, 0, 0, 11]
    assert ranked[0, 0, 0, 11] > ranked[0, 0, 0, 0]
