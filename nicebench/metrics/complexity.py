"""Complexity of a map: sparseness (Chalasani et al., ICML 2020) and entropy (Bhatt et al.,
IJCAI 2020), both on ``|map|`` flattened over the image, vectorised over the batch.

- :func:`sparseness`: the Gini index of ``|map|`` — with the values sorted increasingly
  ``a_(1) ≤ … ≤ a_(n)``, ``Σ_k (2k − n − 1) a_(k) / (n Σ_k a_(k))``: 0 for a uniform map, ``1 − 1/n``
  for a map with one non-zero pixel; higher = sparser (Quantus' ``Sparseness``).
- :func:`entropy`: the Shannon entropy (nats) of ``p = |map| / Σ |map|``: 0 for one non-zero pixel,
  ``log n`` for a uniform map; lower = simpler (Quantus' ``Complexity``).

An all-zero map has neither: NaN.
"""

from __future__ import annotations

import torch

from ..metric_spec import MetricSpec
from ..registry import register_metric

__all__ = ["sparseness", "entropy"]


def _flat_abs(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = maps.reshape(maps.shape[0], -1).abs().double()
    return a, a.sum(1)


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index ``[B]`` of ``|maps|`` (``[B, ...]``), NaN for an all-zero map."""
    a, total = _flat_abs(maps)
    n = a.shape[1]
    k = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    gini = ((2 * k - n - 1) * a.sort(1).values).sum(1) / (n * total)
    return torch.where(total > 0, gini, torch.full_like(gini, float("nan"))).float()


def entropy(maps: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) ``[B]`` of ``|maps| / Σ|maps|`` (``[B, ...]``), NaN for an all-zero map."""
    a, total = _flat_abs(maps)
    p = a / total.clamp_min(torch.finfo(a.dtype).tiny)[:, None]
    h = -torch.special.xlogy(p, p).sum(1)
    return torch.where(total > 0, h, torch.full_like(h, float("nan"))).float()


register_metric(
    MetricSpec(
        "sparseness",
        lambda c: sparseness(c.saliency),
        "sparseness",
        higher_is_better=True,
        category="complexity",
        citation="Chalasani et al., ICML 2020",
        checked_against="a NumPy Gini index (mean absolute difference over twice the mean), "
        "tests/test_randomisation_robustness.py::test_sparseness_is_the_gini_index",
        in_combined_rank=False,
        description="Chalasani et al.: Gini index of |map| (higher = sparser)",
    )
)
register_metric(
    MetricSpec(
        "entropy",
        lambda c: entropy(c.saliency),
        "entropy",
        higher_is_better=False,
        category="complexity",
        citation="Bhatt et al., IJCAI 2020",
        checked_against="SciPy scipy.stats.entropy, "
        "tests/test_randomisation_robustness.py::test_entropy_of_the_normalised_map",
        in_combined_rank=False,
        description="Bhatt et al.: entropy (nats) of |map| normalised to sum 1 (lower = simpler)",
    )
)
