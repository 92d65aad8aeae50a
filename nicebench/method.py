"""The method plugin interface: one verb, ``explain``; a new method overrides ``attribute``."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
from torch import nn

from .params import Parameter, check_names
from .registry import METHODS

__all__ = ["Method", "MethodError", "create_method"]


class MethodError(ValueError):
    """Bad input to a method, or a method that returned something off-contract."""


class Method:
    """Base class of every explanation / saliency method.

    Subclasses override :meth:`attribute` (and :meth:`fit` when they learn) and declare their
    capabilities as class attributes; :meth:`explain` validates inputs and outputs around it.

    Capability flags (checked by :func:`nicebench.testing.check_method`):

    - ``learns``: :meth:`fit` trains something on a dataset before ``explain`` can be used
      (subclass :class:`nicebench.LearnedMethod`, which owns fit → cache → train).
    - ``needs_gradients``: ``attribute`` back-propagates through the model.
    - ``deterministic``: the same inputs give the same map.
    - ``uses_model``: the map depends on the classifier (False for sanity baselines).
    - ``needs_masks``: ``attribute`` needs the ground-truth masks (``oracle``).
    - ``needs_indices``: ``attribute`` needs the dataset (global) indices of the images it
      explains, ``explain(..., indices=...)`` (``precomputed``: maps looked up by image index).
    - ``gate_mask``: the method has a binary gate mask of its own (:meth:`binary_mask`) and a
      masked input (:meth:`composite`): the compression track codes that mask as one operating
      point, and ``mask_share``/``masked_accuracy`` apply (subclass
      :class:`nicebench.GateMaskMethod`).
    - ``masked_input``: :meth:`composite` builds the masked input the gates were learned against,
      so ``masked_accuracy`` applies (every :class:`nicebench.GateMaskMethod`; ``oracle`` has a
      gate mask but no reference image of its own).

    Hooks the core calls, each declared here with its default: :meth:`fit`, :meth:`attribute`
    (via :meth:`explain`), :meth:`params`, :meth:`with_model` and :meth:`refit_on` (the randomisation tests), and for
    ``gate_mask`` methods :meth:`binary_mask`, for ``masked_input`` methods :meth:`composite`.

    ``quick_params`` are parameters that make ``fit``/``explain`` fast (used by
    :func:`nicebench.testing.check_method` and the smoke tests).
    """

    learns: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    deterministic: ClassVar[bool] = True
    uses_model: ClassVar[bool] = True
    needs_masks: ClassVar[bool] = False
    needs_indices: ClassVar[bool] = False
    gate_mask: ClassVar[bool] = False
    masked_input: ClassVar[bool] = False
    quick_params: ClassVar[dict[str, Any]] = {}
    registered_name: ClassVar[str] = ""

    def __init__(self, model: nn.Module | None, **params: Any):
        if params:
            raise MethodError(
                f"method {self.name!r} got unknown parameter(s) {sorted(params)}; "
                f"it takes {sorted(self.default_params())}"
            )
        self.model = model
        self.fitted = not self.learns

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.registered_name or type(self).__name__.lower()

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """The keyword parameters of the constructor and their defaults (a constructor that
        passes ``**params`` on to its base class takes the base's parameters too)."""
        import inspect

        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        out: dict[str, Any] = {}
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            params = inspect.signature(klass.__init__).parameters
            for k, p in params.items():
                if k not in ("self", "model") and p.kind in kinds and p.default is not p.empty:
                    out.setdefault(k, p.default)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                break
        return out

    def params(self) -> dict[str, Any]:
        """The constructor's keyword parameters as this instance holds them (attributes of the
        same names), so ``type(self)(model, **self.params())`` rebuilds it."""
        return {k: getattr(self, k) for k in self.default_params() if hasattr(self, k)}

    @property
    def device(self) -> torch.device:
        if self.model is not None:
            for p in self.model.parameters():
                return p.device
        return torch.device("cpu")

    # -- the plugin API ---------------------------------------------------------------------------
    def fit(self, dataset: Any) -> Method:
        """Train what the method learns on ``dataset`` (a no-op for methods that don't learn)."""
        self.fitted = True
        return self

    def would_train(self, dataset: Any) -> bool:
        """Whether :meth:`fit` on ``dataset`` would train rather than load what it learned from a
        cache (``nicebench run --dry-run`` lists those); trains nothing. Default: :attr:`learns`
        (a method that learns and keeps no cache trains on every fit)."""
        return self.learns

    def attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Saliency ``[B,1,H,W]`` (or ``[B,C,H,W]``, ``[B,H,W]``) of ``images`` for ``targets``.

        The one function a new method overrides. ``images`` are on :attr:`device`, in [0, 1].
        A ``needs_indices`` method also gets ``indices``, the images' dataset indices (int64
        ``[B]`` on the CPU).
        """
        raise NotImplementedError(f"{type(self).__name__} must override attribute()")

    def with_model(self, model: nn.Module) -> Method:
        """This method on another classifier of the same architecture (the sanity check's
        randomised model): a new instance with the same parameters. A fitted learned method keeps
        what it learned and only swaps the classifier (re-fitting would be a full training)."""
        if self.learns:
            other = copy.copy(self)
            other.model = model
            return other
        return type(self)(model, **self.params())

    def refit_on(self, model: nn.Module, *, epochs: int, n_train: int) -> Method:
        """This method on ``model``, a randomised copy of its classifier (the randomisation
        tests: ``sanity_spearman``, ``cascade_*``), fitted against it where the method learns.
        Default: :meth:`with_model`; :class:`nicebench.LearnedMethod` re-trains its module on the
        data it was fitted on, with at most ``epochs`` epochs over ``n_train`` images."""
        return self.with_model(model)

    def binary_mask(
        self, images: torch.Tensor, targets: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """The method's own kept pixels, bool ``[B,1,H,W]`` (only when ``gate_mask``)."""
        raise MethodError(f"{self.name}: has no gate mask of its own (gate_mask=False)")

    def composite(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask ⊙ x + (1 − mask) ⊙ r`` with the method's reference ``r`` (only when
        ``masked_input``): the masked input the method's gates were learned against."""
        raise MethodError(f"{self.name}: has no masked input of its own (masked_input=False)")

    def explain(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | list[int] | int,
        *,
        indices: torch.Tensor | list[int] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Saliency maps, float32 ``[B,1,H,W]`` on the images' device; higher = more important.

        ``indices``: the images' indices in the dataset (the runner passes them for every batch);
        handed on to :meth:`attribute` only for ``needs_indices`` methods, which require them.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise MethodError(f"{self.name}: images must be a [B,C,H,W] tensor, got {shape}")
        if self.learns and not self.fitted:
            raise MethodError(f"{self.name}: call fit(train_dataset) before explain()")
        if self.needs_masks and kwargs.get("masks") is None:
            raise MethodError(
                f"{self.name}: needs the ground-truth masks (explain(images, targets, masks=...)); "
                "use it on a dataset that has them"
            )
        b, _, h, w = images.shape
        if self.needs_indices:
            if indices is None:
                raise MethodError(
                    f"{self.name}: needs the images' dataset indices "
                    "(explain(images, targets, indices=...))"
                )
            indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
            if indices.numel() != b:
                raise MethodError(f"{self.name}: {indices.numel()} indices for {b} images")
            kwargs["indices"] = indices
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
        if targets.numel() == 1 and b > 1:
            targets = targets.expand(b)
        if targets.numel() != b:
            raise MethodError(f"{self.name}: {targets.numel()} targets for {b} images")
        out_device = images.device
        device = self.device
        # gradient methods get autograd even when the caller is in no_grad / inference mode; the
        # copies made there are ordinary tensors that autograd may save
        grad_mode = torch.inference_mode(False) if self.needs_gradients else nullcontext()
        with grad_mode, torch.enable_grad() if self.needs_gradients else nullcontext():
            # the plugin gets its own detached copy: it may modify it or call requires_grad_()
            images = images.to(device, torch.float32).detach().clone()
            targets = targets.to(device).clone()
            if kwargs.get("masks") is not None:
                kwargs["masks"] = kwargs["masks"].to(device).detach().clone()
            sal = self.attribute(images, targets, **kwargs)
        sal = _as_map(sal, b, h, w, self.name)
        return sal.to(out_device)


def _as_map(sal: torch.Tensor, b: int, h: int, w: int, name: str) -> torch.Tensor:
    if not isinstance(sal, torch.Tensor):
        raise MethodError(f"{name}: attribute() returned {type(sal).__name__}, not a tensor")
    sal = sal.detach()
    if sal.dim() == 3:
        sal = sal.unsqueeze(1)
    if sal.dim() != 4 or sal.shape[0] != b or sal.shape[-2:] != (h, w):
        raise MethodError(f"{name}: map of shape {tuple(sal.shape)}, expected [{b},1,{h},{w}]")
    if sal.shape[1] != 1:
        sal = sal.sum(1, keepdim=True)
    return sal.float().contiguous()


def create_method(name: str, model: nn.Module | None = None, **params: Any) -> Method:
    """Instantiate the registered method ``name`` on ``model`` with its keyword parameters."""
    cls = METHODS.get(name)
    known = [Parameter(k, default=v) for k, v in cls.default_params().items()]
    check_names("method", name, params, known, error=MethodError)
    return cls(model, **params)
