"""The dataset plugin interface and :func:`load_dataset`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from .registry import DATASETS

__all__ = ["BenchDataset", "DatasetMissingError", "load_dataset", "cache_dir", "collate"]


class DatasetMissingError(FileNotFoundError):
    """A dataset whose files are not on this machine; the message says how to get them."""


class BenchDataset(Dataset):
    """Base class of dataset plugins.

    Items are ``(image, label)`` or, when :attr:`has_masks`, ``(image, label, mask)``: ``image`` a
    float32 ``[C,H,W]`` tensor in [0, 1], ``label`` an int, ``mask`` a float32 ``[1,H,W]`` tensor
    of 0/1. The classifier normalises internally with :attr:`mean` / :attr:`std`, so the "0 in
    normalised space" substrate of the metrics is the dataset's mean colour.

    Subclasses set the class attributes and implement ``__len__`` / ``__getitem__``. ``model_arch``
    names the registered architecture (:func:`nicebench.registry.list_models`) trained for it, its
    ``default`` model, and ``model_recipe`` the training settings (epochs, lr, batch size, ...).
    """

    has_masks: ClassVar[bool] = False
    model_arch: ClassVar[str] = "smallcnn"
    model_recipe: ClassVar[dict[str, Any]] = {}
    registered_name: ClassVar[str] = ""

    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict[str, Any]:
        """What identifies this dataset's content (used in cache keys of models and runs)."""
        return {"name": self.registered_name}

    def model_identity(self) -> dict[str, Any]:
        """What identifies the classifier trained for this dataset (train split, arch, recipe)."""
        ident = self.identity()
        ident.pop("split", None)
        ident.pop("n", None)
        return {**ident, "arch": self.model_arch, "recipe": self.model_recipe}

    def train_split(self) -> BenchDataset:
        """The training split that goes with this dataset (for classifiers and learned methods)."""
        raise NotImplementedError(f"{type(self).__name__} must define train_split()")

    def validation_split(self) -> BenchDataset | None:
        """Images for choosing a method's settings (NICE's ``lam="auto"``) that neither the
        classifier nor a learned method trains on, drawn as the test split is; ``None`` (the
        default) when the dataset has none, and such choices hold out training images instead."""
        return None


def collate(items: list[tuple]) -> tuple[torch.Tensor, ...]:
    """Stack a list of dataset items into batch tensors (labels as a long tensor)."""
    columns = list(zip(*items, strict=True))
    out = [torch.stack(columns[0])]
    out.append(torch.as_tensor(columns[1], dtype=torch.long))
    for col in columns[2:]:
        out.append(torch.stack(col))
    return tuple(out)


def load_dataset(name: str, split: str = "test", **params: Any) -> BenchDataset:
    """Instantiate the dataset plugin ``name``; parameters such as ``size=64`` pass through."""
    cls = DATASETS.get(name)
    try:
        return cls(split=split, **params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValueError(f"dataset {name!r}: {exc}") from None
        raise


def load_run_dataset(name: str, **params: Any) -> BenchDataset:
    """The split a run scores: the test split, unless the dataset's spec names another with
    ``split=`` (e.g. ``scenes:size=128,split=val`` to choose settings on the validation split
    without touching the test split; its classifier and learned methods still train on the
    training split, and NICE's ``lam="auto"`` then chooses λ on the images it is scored on)."""
    return load_dataset(name, **{"split": "test", **params})


def cache_dir() -> Path:
    """``$NICEBENCH_CACHE``, else ``$XDG_CACHE_HOME/nicebench``, else ``~/.cache/nicebench``."""
    env = os.environ.get("NICEBENCH_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "nicebench"
    path.mkdir(parents=True, exist_ok=True)
    return path
