"""Stochastic gates: the hard-concrete gate of NICE (plain PyTorch reference)."""

from __future__ import annotations

from .hard_concrete import (
    BETA,
    GAMMA,
    RANK_WINDOW,
    ZETA,
    check_rank_window,
    expected_l0,
    prob_one,
    prob_zero,
    rank_window_cells,
    ranked_mask_map,
    ranked_test_mask,
    sample,
    test_mask,
    total_variation,
    upsample_cells,
)
from .masking import auto_cell

__all__ = [
    "BETA",
    "GAMMA",
    "RANK_WINDOW",
    "ZETA",
    "auto_cell",
    "check_rank_window",
    "expected_l0",
    "prob_one",
    "prob_zero",
    "rank_window_cells",
    "ranked_mask_map",
    "ranked_test_mask",
    "sample",
    "test_mask",
    "total_variation",
    "upsample_cells",
]

# the batch gate optimizer's pieces: counter-based noise and the fused (Triton) gate step
from .fused import gate_step, gate_step_reference, gate_step_triton  # noqa: E402
from .rng import content_seed, uniform  # noqa: E402

__all__ += ["content_seed", "gate_step", "gate_step_reference", "gate_step_triton", "uniform"]

from .optimizer import GateOptimizer, optimise_gates  # noqa: E402

__all__ += ["GateOptimizer", "optimise_gates"]
