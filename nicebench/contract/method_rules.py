"""The method contract: what every :class:`nicebench.Method` plugin must do, rule by rule."""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ..data import BenchDataset, collate
from ..learned import LearnedMethod
from ..method import Method, MethodError
from .rules import Broken, RuleBook, When, plugin_name, require

__all__ = ["FLAGS", "METHOD_RULES", "LEARNED_METHOD_RULES", "MethodCase", "explain_batch"]

FLAGS = (
    "learns",
    "needs_gradients",
    "deterministic",
    "uses_model",
    "needs_masks",
    "needs_indices",
    "gate_mask",
    "masked_input",
)


def explain_batch(method: Method, images, targets, masks, start: int = 0) -> torch.Tensor:
    """``method.explain`` with the masks it needs and the dataset indices ``start, start+1…``."""
    kw = {"masks": masks} if method.needs_masks else {}
    return method.explain(images, targets, indices=torch.arange(start, start + len(images)), **kw)


class MethodCase:
    """A method class on a classifier and the dataset's first ``n`` images; the rules read it
    (the method, its map, the other classifier are made when a rule first asks for them)."""

    def __init__(
        self,
        cls: Any,
        model: nn.Module,
        dataset: BenchDataset,
        params: dict[str, Any] | None,
        n: int,
        atol: float,
    ):
        self.cls, self.model, self.dataset, self.n, self.atol = cls, model, dataset, n, atol
        self.extra_params = params or {}
        self.name = plugin_name(cls)
        self.report: dict[str, Any] = {"method": self.name}
        self.keep: torch.Tensor | None = None  # the binary mask, once a rule has read it
        self.logits: torch.Tensor | None = None  # a gate method's gate logits, likewise

    @cached_property
    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(images, labels, masks or None) of the dataset's first ``n`` items."""
        items = collate([self.dataset[i] for i in range(self.n)])
        return items[0], items[1], items[2] if len(items) > 2 else None

    @cached_property
    def method(self) -> Method:
        """The method on the classifier, with ``quick_params`` under the given ``params``."""
        return self.cls(self.model, **{**self.cls.quick_params, **self.extra_params})

    @cached_property
    def sal(self) -> torch.Tensor:
        """The map of the batch (after ``fit`` for a learning method)."""
        return self.explain(self.method)

    @cached_property
    def tolerance(self) -> float:
        """``atol`` scaled by the map's largest magnitude (at least 1)."""
        return self.atol * max(1.0, max(self.sal.abs().max().item(), 1e-12))

    @cached_property
    def other_model(self) -> nn.Module:
        """A copy of the classifier with every layer re-initialised (seed 12345)."""
        other = copy.deepcopy(self.model)
        torch.manual_seed(12345)
        for m in other.modules():
            if hasattr(m, "reset_parameters") and m is not other:
                m.reset_parameters()
        return other

    @cached_property
    def other_method(self) -> Method:
        return self.method.with_model(self.other_model)

    def explain(self, method: Method) -> torch.Tensor:
        images, labels, masks = self.batch
        return explain_batch(method, images, labels, masks)


LEARNS = When("learns=True", lambda case: case.cls.learns)
GATE_MASK = When("gate_mask=True", lambda case: case.cls.gate_mask)
MASKED_INPUT = When("masked_input=True", lambda case: case.cls.masked_input)
DETERMINISTIC = When("deterministic=True", lambda case: case.cls.deterministic)
NEEDS_MASKS = When("needs_masks=True", lambda case: case.cls.needs_masks)
NEEDS_INDICES = When("needs_indices=True", lambda case: case.cls.needs_indices)
NO_GRADIENTS = When("needs_gradients=False", lambda case: not case.cls.needs_gradients)
_book = RuleBook()


@_book.rule("is-method", "subclass nicebench.Method")
def _is_method(case: MethodCase) -> None:
    require(
        isinstance(case.cls, type) and issubclass(case.cls, Method),
        "a method must subclass nicebench.Method",
    )


@_book.rule("flags-are-bools", f"the capability flags ({', '.join(FLAGS)}) are bools")
def _flags_are_bools(case: MethodCase) -> None:
    for flag in FLAGS:
        require(isinstance(getattr(case.cls, flag), bool), f"capability {flag} must be a bool")


@_book.rule("learned-method-learns", "a LearnedMethod keeps learns=True")
def _learned_method_learns(case: MethodCase) -> None:
    require(
        not issubclass(case.cls, LearnedMethod) or case.cls.learns,
        "a LearnedMethod must keep learns=True",
    )


@_book.rule(
    "masked-input-needs-gate-mask",
    "masked_input=True needs gate_mask=True (composite needs a binary mask)",
)
def _masked_input_needs_gate_mask(case: MethodCase) -> None:
    require(
        not case.cls.masked_input or case.cls.gate_mask, "masked_input=True needs gate_mask=True"
    )


@_book.rule("masks-to-check-with", "the method is checked on a dataset with masks", NEEDS_MASKS)
def _masks_to_check_with(case: MethodCase) -> None:
    require(case.dataset.has_masks, "needs masks: give check_method a dataset with masks")


@_book.rule("unusable-before-fit", "a learning method is not usable before fit()", LEARNS)
def _unusable_before_fit(case: MethodCase) -> None:
    require(not case.method.fitted, "learns=True but is usable before fit()")


@_book.rule(
    "fit-keeps-global-rng",
    "fit() leaves the global RNG as it was (seed a torch.Generator of your own)",
    LEARNS,
)
def _fit_keeps_global_rng(case: MethodCase) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0x5EED_CAFE)  # a state no plugin seeds to by chance
        state = torch.random.get_rng_state()
        case.method.fit(case.dataset.train_split())
        require(
            torch.equal(state, torch.random.get_rng_state()),
            "fit() moved the global RNG (seed a generator of your own)",
        )


@_book.rule("fit-leaves-fitted", "fit() leaves the method fitted (fitted=True)", LEARNS)
def _fit_leaves_fitted(case: MethodCase) -> None:
    require(case.method.fitted, "fit() did not leave the method fitted")


@_book.rule(
    "map-format", "explain() returns a finite float32 [B,1,H,W] tensor on the images' device"
)
def _map_format(case: MethodCase) -> None:
    sal, images = case.sal, case.batch[0]
    require(isinstance(sal, torch.Tensor), f"explain returned {type(sal).__name__}")
    require(sal.dtype == torch.float32, f"map dtype {sal.dtype}, expected float32")
    require(tuple(sal.shape) == (case.n, 1, *images.shape[-2:]), f"map shape {tuple(sal.shape)}")
    require(sal.device == images.device, f"map on {sal.device}, images on {images.device}")
    require(torch.isfinite(sal).all(), "map has NaN or inf")


@_book.rule(
    "batch-independent",
    "each image explained alone gets the map it gets in the batch (within atol)",
)
def _batch_independent(case: MethodCase) -> None:
    images, labels, masks = case.batch
    singles = torch.cat(
        [
            explain_batch(
                case.method,
                images[i : i + 1],
                labels[i : i + 1],
                None if masks is None else masks[i : i + 1],
                start=i,
            )
            for i in range(case.n)
        ]
    )
    err = (singles - case.sal).abs().max().item()
    require(err <= case.tolerance, f"not batch-independent (max diff {err:.3g})")
    case.report["batch_independence_max_diff"] = err


@_book.rule("deterministic", "the same batch explained twice gets the same map", DETERMINISTIC)
def _deterministic(case: MethodCase) -> None:
    diff = (case.explain(case.method) - case.sal).abs().max().item()
    require(diff <= case.tolerance, f"deterministic=True but maps differ by {diff}")


def _refuses(case: MethodCase, flag: str, **kwargs: Any) -> None:
    """``explain`` without what ``flag`` says the method needs must raise :class:`MethodError`."""
    images, labels, _ = case.batch
    try:
        case.method.explain(images, labels, **kwargs)
    except MethodError:
        return
    what = {"needs_masks": "masks", "needs_indices": "indices"}[flag]
    raise Broken(f"{flag}=True but explain() worked without {what}")


@_book.rule("needs-masks-enforced", "explain() without masks raises MethodError", NEEDS_MASKS)
def _needs_masks_enforced(case: MethodCase) -> None:
    _refuses(case, "needs_masks")


@_book.rule(
    "needs-indices-enforced",
    "explain() without the images' dataset indices raises MethodError",
    NEEDS_INDICES,
)
def _needs_indices_enforced(case: MethodCase) -> None:
    _refuses(case, "needs_indices", **({"masks": case.batch[2]} if case.cls.needs_masks else {}))


@_book.rule("with-model", "with_model(model) returns the method (same class) on that model")
def _with_model(case: MethodCase) -> None:
    other = case.other_method
    require(
        isinstance(other, case.cls) and other.model is case.other_model,
        "with_model(model) must return the method on that model",
    )


@_book.rule("refit-on", "refit_on(model) returns the method fitted on that model", LEARNS)
def _refit_on(case: MethodCase) -> None:
    refit = case.method.refit_on(case.other_model, epochs=1, n_train=8)
    require(
        isinstance(refit, case.cls) and refit.model is case.other_model and refit.fitted,
        "refit_on(model) must return the method fitted on that model",
    )


@_book.rule(
    "uses-model-honest",
    "uses_model=False: the map ignores the classifier; uses_model=True (a method that "
    "does not learn): the map changes with it",
)
def _uses_model_honest(case: MethodCase) -> None:
    other_sal = case.explain(case.other_method)
    changed = (other_sal - case.sal).abs().max().item() > case.tolerance
    if not case.cls.uses_model:
        require(not changed, "uses_model=False but the map changes with the classifier")
    elif not case.cls.learns:
        require(changed, "uses_model=True but the map ignores the classifier")
    case.report["map_depends_on_model"] = changed


@_book.rule("works-without-autograd", "explain() works under torch.inference_mode", NO_GRADIENTS)
def _works_without_autograd(case: MethodCase) -> None:
    with torch.inference_mode():
        try:
            case.explain(case.method)
        except RuntimeError as exc:
            raise Broken(f"needs_gradients=False but fails without autograd: {exc}") from exc


@_book.rule(
    "binary-mask-format",
    "binary_mask() returns a bool tensor of the map's shape on the images' device",
    GATE_MASK,
)
def _binary_mask_format(case: MethodCase) -> None:
    images, labels, masks = case.batch
    kw = {"masks": masks} if case.cls.needs_masks else {}
    keep = case.method.binary_mask(images, labels, **kw)
    require(
        isinstance(keep, torch.Tensor) and keep.dtype == torch.bool,
        "binary_mask must return a bool tensor",
    )
    require(
        tuple(keep.shape) == tuple(case.sal.shape),
        f"binary_mask shape {tuple(keep.shape)}, expected {tuple(case.sal.shape)}",
    )
    require(keep.device == images.device, f"binary_mask on {keep.device}")
    case.report["mask_share"] = keep.float().mean().item()
    case.keep = keep


@_book.rule(
    "composite-keeps-kept-pixels",
    "composite(images, mask) gives finite images of the input's shape that keep the "
    "masked-in pixels as they are (a full mask: the image itself)",
    MASKED_INPUT,
)
def _composite_keeps_kept_pixels(case: MethodCase) -> None:
    images, keep, method = case.batch[0], case.keep, case.method
    x = method.composite(images, keep)
    require(
        tuple(x.shape) == tuple(images.shape) and torch.isfinite(x).all(),
        "composite must give finite images of the input's shape",
    )
    require(
        torch.allclose(method.composite(images, torch.ones_like(keep)), images),
        "composite with a full mask must give the image back",
    )
    require(
        torch.equal(x[keep.expand_as(x)], images[keep.expand_as(images)]),
        "composite must keep the masked-in pixels as they are",
    )


METHOD_RULES = tuple(_book.rules)
LEARNED_METHOD_RULES = tuple(rule for rule in METHOD_RULES if rule.when is LEARNS)
