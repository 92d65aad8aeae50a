"""The model-randomisation sanity check of Adebayo et al. (NeurIPS 2018).

:func:`randomised_model` re-initialises the top ``k`` parametrised layers of a deep copy of the
classifier (cascading from the logits down; the layers are the leaf modules with a ``weight`` of
dimension ≥ 2 — convolutions and linear layers — in registration order, which is the forward
order of the built-in architectures; normalisation layers keep their weights and statistics).
:func:`sanity_spearman` is the per-image Spearman rank correlation between a method's map on the
trained model and its map on the randomised one. A method that ignores the model keeps its map
(correlation near 1): that is the failure the check detects; lower is better.

Ranks average ties (as ``scipy.stats.spearmanr``): maps with flat regions (ReLU'd Grad-CAM,
thresholded masks) would otherwise correlate through the arbitrary order of their ties. A map
that is constant on either model has no rank correlation: NaN, as scipy.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..method import Method

__all__ = [
    "randomised_model",
    "cached_randomised_model",
    "refit_method",
    "parametrised_layers",
    "rankdata",
    "spearman",
    "sanity_spearman",
    "rebuild_method",
    "DEFAULT_TOP_K",
]

DEFAULT_TOP_K = 3


def parametrised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every leaf layer with a weight matrix/kernel, in forward order."""
    out = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if (
            not list(mod.children())
            and isinstance(w, torch.Tensor)
            and w.dim() >= 2
            and hasattr(mod, "reset_parameters")
        ):
            out.append((name, mod))
    return out


def randomised_model(model: nn.Module, top_k: int | None = DEFAULT_TOP_K, seed: int = 0):
    """A deep copy of ``model`` with its last ``top_k`` parametrised layers re-initialised.

    ``top_k=None`` re-initialises every layer. The layers' own ``reset_parameters`` draws the new
    weights under a local generator seeded with ``seed`` (the global RNG is left alone). The copy
    keeps the original's device, eval mode and ``requires_grad`` flags.
    """
    rand = copy.deepcopy(model)
    layers = parametrised_layers(rand)
    if not layers:
        raise ValueError("the model has no parametrised (conv / linear) layer to re-initialise")
    k = len(layers) if top_k is None else int(top_k)
    if not 1 <= k <= len(layers):
        raise ValueError(f"top_k must be in 1..{len(layers)} (the model's layers), got {top_k}")
    devices = [torch.device("cuda", torch.cuda.current_device())] if _on_cuda(rand) else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for _, layer in layers[-k:]:
            layer.reset_parameters()
    rand.randomised_layers = [name for name, _ in layers[-k:]]
    return rand


# model → {(top_k, seed): randomised copy}; the entry goes with the model (weak keys), so each
# classifier a worker holds (one per dataset, model spec and device) has its copies built once
_RANDOMISED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# method → {(randomised model's id, epochs, n_train): the method on it}
_REFITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_randomised_model(model: nn.Module, top_k: int | None = DEFAULT_TOP_K, seed: int = 0):
    """:func:`randomised_model`, built once per (classifier, ``top_k``, ``seed``) and shared by
    every cell and metric that asks for it (the classifier's identity keys the cache: a worker
    loads one classifier per dataset, model spec and device). Do not modify the returned copy."""
    n = len(parametrised_layers(model))
    key = (n if top_k is None else int(top_k), int(seed))
    per_model = _RANDOMISED.setdefault(model, {})
    if key not in per_model:
        per_model[key] = randomised_model(model, key[0], key[1])
    return per_model[key]


def refit_method(method: Any, model: nn.Module, *, epochs: int = 1, n_train: int = 2000) -> Any:
    """``method`` on the randomised classifier ``model``: :meth:`nicebench.Method.refit_on`
    (a learned method re-fits with at most ``epochs`` and ``n_train``; the trained weights are
    cached on disk like any fit), remembered per (method, model, budget) in this process."""
    per_method = _REFITS.setdefault(method, {})
    key = (id(model), int(epochs), int(n_train))
    hit = per_method.get(key)
    if hit is None or hit[0]() is not model:  # the id of a collected model may be reused
        hit = (weakref.ref(model), method.refit_on(model, epochs=epochs, n_train=n_train))
        per_method[key] = hit
    return hit[1]


def _on_cuda(model: nn.Module) -> bool:
    return any(p.is_cuda for p in model.parameters())


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dim of ``[B, N]``."""
    b, n = x.shape
    vals, order = x.sort(dim=1, stable=True)
    new = torch.ones_like(vals, dtype=torch.bool)
    new[:, 1:] = vals[:, 1:] != vals[:, :-1]
    group = new.long().cumsum(1) - 1  # [B,N] group id along the sorted row
    flat_group = group + torch.arange(b, device=x.device)[:, None] * n
    pos = torch.arange(1, n + 1, device=x.device, dtype=torch.float64).expand(b, n)
    sums = torch.zeros(b * n, dtype=torch.float64, device=x.device)
    counts = torch.zeros(b * n, dtype=torch.float64, device=x.device)
    sums.index_add_(0, flat_group.reshape(-1), pos.reshape(-1))
    counts.index_add_(
        0, flat_group.reshape(-1), torch.ones(b * n, dtype=torch.float64, device=x.device)
    )
    avg = (sums / counts.clamp_min(1))[flat_group]
    ranks = torch.empty_like(avg)
    ranks.scatter_(1, order, avg)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row Spearman correlation of ``[B, ...]`` tensors (flattened), ``[B]`` float32."""
    ra = rankdata(a.reshape(a.shape[0], -1).double())
    rb = rankdata(b.reshape(b.shape[0], -1).double())
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / den
    return torch.where(den > 0, rho, torch.full_like(rho, float("nan"))).float()


def rebuild_method(method: Any, model: nn.Module) -> Any:
    """The same method on another model: :meth:`nicebench.Method.with_model`."""
    return method.with_model(model)


def sanity_spearman(
    method: Any,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    maps: torch.Tensor | None = None,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int = 0,
    absolute: bool = False,
    random_model: nn.Module | None = None,
    explain_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Per-image Spearman correlation ``[B]`` between the maps on ``model`` and on its randomised
    copy (lower is better; ≈1 means the method ignores the model).

    ``method`` is either a factory ``Callable[[nn.Module], Method]`` that builds the method on a
    given model, or a :class:`nicebench.Method` instance (rebuilt on the randomised model with
    :func:`rebuild_method`; learned methods such as ``rtsal`` keep their trained weights and only
    swap the classifier, as re-fitting on the randomised model would cost a full training).
    ``maps`` are the maps on the trained model when already computed. ``random_model`` overrides
    :func:`randomised_model` (e.g. to share one copy across methods). ``absolute`` ranks ``|map|``.
    """
    if isinstance(method, Method):
        trained = method
        make: Callable[[nn.Module], Any] = lambda m: rebuild_method(trained, m)  # noqa: E731
    elif callable(method):
        make = method
        trained = None
    else:
        raise TypeError(f"method must be a Method or a factory, got {type(method).__name__}")
    kw = explain_kwargs or {}
    if maps is None:
        trained = trained if trained is not None else make(model)
        maps = trained.explain(images, targets, **kw)
    rand = random_model if random_model is not None else randomised_model(model, top_k, seed)
    rmaps = make(rand).explain(images, targets, **kw)
    a, b = maps.to(rmaps.device).float(), rmaps.float()
    if absolute:
        a, b = a.abs(), b.abs()
    return spearman(a, b)
