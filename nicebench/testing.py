"""The method plugin contract in one call: ``check_method(MyMethod)``."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .data import BenchDataset, collate, load_dataset
from .method import Method, MethodError
from .models import build_arch

__all__ = ["check_method", "tiny_setup", "TINY_SCENES"]

# scenes parameters for end-to-end tests: 32 px, 64 test images, a classifier trained in seconds
TINY_SCENES = {"size": 32, "n": 64, "train_n": 1500, "train_epochs": 3}


def tiny_setup(size: int = 32, n: int = 6, seed: int = 0) -> tuple[nn.Module, BenchDataset]:
    """A randomly initialised (untrained, seeded) scenes classifier and a tiny scenes test set."""
    ds = load_dataset("scenes", size=size, n=n, seed=seed, train_n=64)
    torch.manual_seed(seed)
    model = build_arch(ds.model_arch, ds, seed=seed).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ds


def _explain(method: Method, images, targets, masks):
    kw = {"masks": masks} if method.needs_masks else {}
    return method.explain(images, targets, **kw)


def check_method(
    cls: type[Method] | str,
    model: nn.Module | None = None,
    dataset: BenchDataset | None = None,
    params: dict[str, Any] | None = None,
    n: int = 4,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Run the plugin contract on ``cls`` and raise ``AssertionError`` naming what broke.

    Checks: capability flags are booleans; ``fit`` (learning methods) then ``explain`` give a
    finite float32 ``[B,1,H,W]`` map on the images' device; batch independence (each image alone
    gives its map in the batch); determinism (when ``deterministic``); honest flags
    (``uses_model=False`` ⇒ the map ignores the classifier, ``uses_model=True`` ⇒ it doesn't for
    methods that don't learn; ``needs_gradients=False`` ⇒ works under ``torch.inference_mode``;
    ``needs_masks`` ⇒ a clear error without masks). Uses a tiny untrained scenes classifier unless
    ``model``/``dataset`` are given, and ``cls.quick_params`` merged under ``params``.
    """
    if isinstance(cls, str):
        from .registry import METHODS

        cls = METHODS.get(cls)
    name = getattr(cls, "registered_name", "") or cls.__name__
    if model is None or dataset is None:
        model, dataset = tiny_setup(n=max(n, 4))
    params = {**cls.quick_params, **(params or {})}
    report: dict[str, Any] = {"method": name}

    for flag in ("learns", "needs_gradients", "deterministic", "uses_model", "needs_masks"):
        assert isinstance(getattr(cls, flag), bool), f"{name}: capability {flag} must be a bool"
    if cls.needs_masks:
        assert dataset.has_masks, f"{name} needs masks: give check_method a dataset with masks"

    items = collate([dataset[i] for i in range(n)])
    images, labels = items[0], items[1]
    masks = items[2] if len(items) > 2 else None
    method = cls(model, **params)
    if cls.learns:
        assert not method.fitted, f"{name}: learns=True but is usable before fit()"
        method.fit(dataset.train_split() if hasattr(dataset, "train_split") else dataset)
    sal = _explain(method, images, labels, masks)

    assert isinstance(sal, torch.Tensor), f"{name}: explain returned {type(sal).__name__}"
    assert sal.dtype == torch.float32, f"{name}: map dtype {sal.dtype}, expected float32"
    assert tuple(sal.shape) == (n, 1, *images.shape[-2:]), f"{name}: map shape {tuple(sal.shape)}"
    assert sal.device == images.device, f"{name}: map on {sal.device}, images on {images.device}"
    assert torch.isfinite(sal).all(), f"{name}: map has NaN or inf"

    singles = torch.cat(
        [
            _explain(
                method,
                images[i : i + 1],
                labels[i : i + 1],
                None if masks is None else masks[i : i + 1],
            )  # fmt: skip
            for i in range(n)
        ]
    )
    err = (singles - sal).abs().max().item()
    scale = max(sal.abs().max().item(), 1e-12)
    assert err <= atol * max(1.0, scale), f"{name}: not batch-independent (max diff {err:.3g})"
    report["batch_independence_max_diff"] = err

    if cls.deterministic:
        again = _explain(method, images, labels, masks)
        diff = (again - sal).abs().max().item()
        assert diff <= atol * max(1.0, scale), (
            f"{name}: deterministic=True but maps differ by {diff}"
        )

    if cls.needs_masks:
        try:
            method.explain(images, labels)
        except MethodError:
            pass
        else:
            raise AssertionError(f"{name}: needs_masks=True but explain() worked without masks")

    other = copy.deepcopy(model)
    torch.manual_seed(12345)
    for m in other.modules():
        if hasattr(m, "reset_parameters") and m is not other:
            m.reset_parameters()
    other_method = cls(other, **params)
    if cls.learns:
        other_method = copy.copy(method)
        other_method.model = other
    other_sal = _explain(other_method, images, labels, masks)
    changed = (other_sal - sal).abs().max().item() > atol * max(1.0, scale)
    if not cls.uses_model:
        assert not changed, f"{name}: uses_model=False but the map changes with the classifier"
    elif not cls.learns:
        assert changed, f"{name}: uses_model=True but the map ignores the classifier"
    report["map_depends_on_model"] = changed

    if not cls.needs_gradients:
        with torch.inference_mode():
            try:
                _explain(method, images, labels, masks)
            except RuntimeError as exc:
                raise AssertionError(
                    f"{name}: needs_gradients=False but fails without autograd: {exc}"
                ) from exc
    report["ok"] = True
    return report
