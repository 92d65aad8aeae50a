"""Bootstrap confidence intervals for per-image scores."""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(
    values, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the mean of ``values`` (NaNs dropped), percentile bootstrap."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(n_boot, n))].mean(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(v.mean()), float(lo), float(hi), n
