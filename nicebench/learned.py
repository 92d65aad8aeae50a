"""``LearnedMethod``: the base of methods that train a module against the frozen classifier.

It owns fit → cache → train: the cache identity (code version, data, number of training images,
the classifier's weights, the training parameters), building the module from the method's own
seed (the global RNG is left as it was), the training loop (Adam with cosine decay over the first
``n_train`` images, one seeded generator for the order and any noise) and loading the cached
weights. A learned method implements :meth:`LearnedMethod.build_module`,
:meth:`LearnedMethod.training_loss` and :meth:`LearnedMethod.use_module`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from .data import BenchDataset
from .method import Method
from .models import cached_module, has_module, materialise, model_fingerprint, model_metadata

__all__ = ["LearnedMethod"]


class LearnedMethod(Method):
    """A method that learns a module on a dataset before it explains.

    Subclasses take (at least) the keyword parameters ``n_train``, ``epochs``, ``batch_size``,
    ``lr`` and ``seed`` and store them under those names, and declare ``cache_kind`` (the cache
    folder) and ``code_version`` (bump it when training changes the weights). Parameters named in
    ``explain_only`` do not change the trained module and stay out of its cache identity.
    """

    learns: ClassVar[bool] = True
    cache_kind: ClassVar[str] = ""
    code_version: ClassVar[int] = 1
    explain_only: ClassVar[tuple[str, ...]] = ()

    n_train: int
    epochs: int
    batch_size: int
    lr: float
    seed: int

    # -- what a learned method implements ------------------------------------------------------
    def build_module(self, dataset: Any) -> nn.Module:
        """The untrained module for ``dataset`` (called with the RNG seeded by ``seed``)."""
        raise NotImplementedError(f"{type(self).__name__} must override build_module()")

    def training_loss(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch (images ``x`` in [0, 1] and targets ``y`` on :attr:`device`) and
        the figures to log; ``gen`` is the training's own generator for any noise."""
        raise NotImplementedError(f"{type(self).__name__} must override training_loss()")

    def use_module(self, module: nn.Module, dataset: Any) -> None:
        """Keep the trained (or loaded) module, on :attr:`device`, for ``attribute``."""
        raise NotImplementedError(f"{type(self).__name__} must override use_module()")

    def prepare(self, dataset: Any) -> None:
        """Work out what the identity and the module depend on (before both); default: nothing."""

    def training_targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The targets to train against (uint8 ``images``); default: the labels."""
        return labels

    def cache_identity(self, dataset: Any, n: int) -> dict[str, Any]:
        """Everything that changes the trained weights (hashed into the cache key)."""
        return {
            "code": self.code_version,
            "data": dataset.identity() if isinstance(dataset, BenchDataset) else repr(dataset),
            "n_train": n,
            "classifier": model_fingerprint(self.model),
            "params": self.training_params(),
        }

    # -- what the base does --------------------------------------------------------------------
    def training_params(self) -> dict[str, Any]:
        """The parameters that identify a trained module (with the data and classifier)."""
        return {k: v for k, v in self.params().items() if k not in self.explain_only}

    def fit(self, dataset: Any) -> LearnedMethod:
        """Train on the first ``n_train`` images of ``dataset``, or load the cached module."""
        self.prepare(dataset)
        n = min(self.n_train, len(dataset))
        identity = self.cache_identity(dataset, n)

        def build() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                return self.build_module(dataset)

        def train(module: nn.Module) -> dict[str, Any]:
            with torch.random.fork_rng(devices=[]):
                return self.train_module(module, dataset, n)

        module = cached_module(self.cache_kind, identity, build, train).to(self.device)
        module.requires_grad_(False)
        self.train_info = model_metadata(self.cache_kind, identity)
        self.use_module(module, dataset)
        self.fit_dataset = dataset  # what refit_on trains on
        self.fitted = True
        return self

    def would_train(self, dataset: Any) -> bool:
        """Whether :meth:`fit` on ``dataset`` finds no module for its identity in the cache or
        the package's shipped weights (it then trains one); builds and trains nothing."""
        self.prepare(dataset)
        identity = self.cache_identity(dataset, min(self.n_train, len(dataset)))
        return not has_module(self.cache_kind, identity)

    def refit_on(self, model: nn.Module, *, epochs: int, n_train: int) -> LearnedMethod:
        """A new instance on ``model`` (a randomised copy of the classifier), trained from its
        own seed on the data this one was fitted on with the same parameters, except at most
        ``epochs`` epochs over at most ``n_train`` images (the shorter fit of the randomisation
        tests). Cached like :meth:`fit`: the classifier's weights are part of the identity."""
        data = getattr(self, "fit_dataset", None)
        if data is None:
            raise RuntimeError(f"{self.name}: call fit(train_dataset) before refit_on()")
        params = self.params()
        params["epochs"] = min(int(self.epochs), int(epochs))
        params["n_train"] = min(int(self.n_train), int(n_train))
        other = type(self)(model, **params)
        other.fit(data)
        return other

    def train_module(self, module: nn.Module, dataset: Any, n: int) -> dict[str, Any]:
        """Adam with cosine decay for ``epochs`` over the first ``n`` images of ``dataset``."""
        device = self.device
        subset = torch.utils.data.Subset(dataset, range(n))
        subset.registered_name = getattr(dataset, "registered_name", "dataset")
        x_all, labels = materialise(subset)
        y_all = self.training_targets(x_all, labels)
        module.to(device).train()
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(module.parameters(), lr=self.lr)
        bs = self.batch_size
        steps = self.epochs * math.ceil(n / bs)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        history = []
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            sums: dict[str, float] = {}
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                x = x_all[idx].to(device).float().div_(255)
                loss, logged = self.training_loss(module, x, y_all[idx].to(device), gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                for k, v in logged.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            history.append({k: v / n for k, v in sums.items()})
        module.eval()
        return {"history": history, "n_train": n}
