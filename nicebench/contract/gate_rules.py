"""The gate-method contract: what a :class:`nicebench.GateMaskMethod` adds to the method rules."""

from __future__ import annotations

import torch

from ..gates.hard_concrete import upsample_cells
from ..gates.method import GateMaskMethod
from .method_rules import MethodCase
from .rules import RuleBook, require

__all__ = ["GATE_METHOD_RULES"]

_book = RuleBook()


@_book.rule("is-gate-method", "subclass nicebench.GateMaskMethod")
def _is_gate_method(case: MethodCase) -> None:
    require(
        isinstance(case.cls, type) and issubclass(case.cls, GateMaskMethod),
        "a gate method must subclass nicebench.GateMaskMethod",
    )


@_book.rule("gate-logits-format", "gate_logits() are finite [B,1,⌈H/cell⌉,⌈W/cell⌉]")
def _gate_logits_format(case: MethodCase) -> None:
    method, (images, labels, _) = case.method, case.batch
    h, w = images.shape[-2:]
    grid = method.grid_size(h, w)
    case.logits = method.gate_logits(images.to(method.device), labels.to(method.device))
    require(
        tuple(case.logits.shape) == (case.n, 1, *grid),
        f"gate_logits shape {tuple(case.logits.shape)}, expected [{case.n},1,{grid[0]},{grid[1]}]",
    )
    require(torch.isfinite(case.logits).all(), "gate_logits have NaN or inf")


@_book.rule(
    "binary-mask-is-gates",
    "binary_mask() is log α ≥ 0 upsampled by the cell (constant on each cell)",
)
def _binary_mask_is_gates(case: MethodCase) -> None:
    method, (images, labels, _) = case.method, case.batch
    h, w = images.shape[-2:]
    cell = method.cell_size(h, w)
    case.keep = method.binary_mask(images, labels)
    expected = upsample_cells(case.logits.cpu() >= 0, cell, (h, w))
    require(
        torch.equal(case.keep.cpu(), expected),
        f"binary_mask must be log α ≥ 0 upsampled by the cell ({cell} px)",
    )
    case.report["cell"] = cell


@_book.rule(
    "map-is-ranked-mask",
    "the map is ≥ 0.5 on the kept pixels and below elsewhere (the ranked test mask)",
)
def _map_is_ranked_mask(case: MethodCase) -> None:
    images, labels, _ = case.batch
    sal = case.method.explain(images, labels)
    kept = case.keep.cpu()
    # the map is the test mask (≥ 0.5 exactly where kept) up to the 1e-3 tie-break
    require(
        bool((sal[kept] >= 0.5 - 2e-3).all() and (sal[~kept] <= 0.5 + 2e-3).all()),
        "the map must be ≥ 0.5 on the kept pixels and below elsewhere",
    )


@_book.rule(
    "composite-empty-is-reference", "composite() with an empty mask gives the reference image"
)
def _composite_empty_is_reference(case: MethodCase) -> None:
    images, method = case.batch[0], case.method
    ref = method.composite(images, torch.zeros_like(case.keep))
    require(
        torch.allclose(ref, method.reference_image(images).expand_as(images)),
        "composite with an empty mask must give the reference image",
    )


# check_gate_method runs the first (is-gate-method) before the method rules, the rest after them
GATE_METHOD_RULES = tuple(_book.rules)
