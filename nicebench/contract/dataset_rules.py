"""The dataset contract: what every :class:`nicebench.BenchDataset` plugin must do, rule by rule."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import torch

from ..data import BenchDataset, collate
from ..registry import MODELS
from .rules import Broken, RuleBook, When, plugin_name, require

__all__ = ["DATASET_RULES", "DatasetCase"]


class DatasetCase:
    """A dataset class (built as ``cls(split="test", **params)``) or instance, and its first
    ``n`` items; the rules read it."""

    def __init__(self, given: Any, params: dict[str, Any] | None, n: int):
        self.given, self.params, self.n = given, params or {}, n
        self.name = plugin_name(given)

    @cached_property
    def ds(self) -> BenchDataset:
        if isinstance(self.given, type):
            return self.given(split="test", **self.params)
        return self.given

    @cached_property
    def items(self) -> list[tuple]:
        return [self.ds[i] for i in range(min(self.n, len(self.ds)))]

    @cached_property
    def train(self) -> BenchDataset:
        return self.ds.train_split()

    @cached_property
    def val(self) -> BenchDataset | None:
        return self.ds.validation_split()


HAS_MASKS = When("has_masks=True", lambda case: case.ds.has_masks)
_book = RuleBook()


@_book.rule("is-dataset", "subclass nicebench.BenchDataset")
def _is_dataset(case: DatasetCase) -> None:
    given = case.given
    cls = given if isinstance(given, type) else type(given)
    require(issubclass(cls, BenchDataset), "must subclass nicebench.BenchDataset")


@_book.rule("has-masks-is-bool", "has_masks is a bool")
def _has_masks_is_bool(case: DatasetCase) -> None:
    require(isinstance(type(case.ds).has_masks, bool), "has_masks must be a bool")


@_book.rule("known-model-arch", "model_arch names a registered classifier architecture")
def _known_model_arch(case: DatasetCase) -> None:
    arch = case.ds.model_arch
    require(arch in MODELS, f"model_arch {arch!r} is not one of {MODELS.names()}")


@_book.rule("class-names", "classes is a list of at least two names")
def _class_names(case: DatasetCase) -> None:
    classes = case.ds.classes
    require(
        len(classes) >= 2 and all(isinstance(c, str) for c in classes),
        "classes must be a list of at least two names",
    )


@_book.rule("normalisation", "mean and std give one value per channel; std is positive")
def _normalisation(case: DatasetCase) -> None:
    ds = case.ds
    require(
        len(ds.mean) == ds.channels == len(ds.std),
        f"mean and std need one value per channel ({ds.channels})",
    )
    require(all(s > 0 for s in ds.std), "std must be positive")


@_book.rule("test-split-not-empty", "the test split has at least one item")
def _test_split_not_empty(case: DatasetCase) -> None:
    require(len(case.ds) > 0, "the test split is empty")


@_book.rule("item-is-tuple", "an item is (image, label), or (image, label, mask) with has_masks")
def _item_is_tuple(case: DatasetCase) -> None:
    size = 2 + case.ds.has_masks
    for i, item in enumerate(case.items):
        require(
            isinstance(item, tuple) and len(item) == size,
            f"item {i} must be (image, label{', mask' if case.ds.has_masks else ''}), "
            f"got {type(item).__name__} of {len(item)}",
        )


@_book.rule("image-format", "an image is a float32 [channels, size, size] tensor in [0, 1]")
def _image_format(case: DatasetCase) -> None:
    ds = case.ds
    for i, (image, *_) in enumerate(case.items):
        require(
            isinstance(image, torch.Tensor) and image.dtype == torch.float32,
            f"item {i}: image must be a float32 tensor",
        )
        require(
            tuple(image.shape) == (ds.channels, ds.size, ds.size),
            f"item {i}: image of shape {tuple(image.shape)}, expected "
            f"[{ds.channels}, {ds.size}, {ds.size}]",
        )
        require(
            bool(torch.isfinite(image).all()) and image.min() >= 0 and image.max() <= 1,
            f"item {i}: image values must lie in [0, 1]",
        )


@_book.rule("label-in-range", "a label is an int in [0, num_classes)")
def _label_in_range(case: DatasetCase) -> None:
    k = case.ds.num_classes
    for i, (_, label, *_) in enumerate(case.items):
        require(
            isinstance(label, int) and 0 <= label < k,
            f"item {i}: label {label!r} must be an int in [0, {k})",
        )


@_book.rule("mask-format", "a mask is a 0/1 float32 [1, H, W] tensor", HAS_MASKS)
def _mask_format(case: DatasetCase) -> None:
    for i, (image, _, mask) in enumerate(case.items):
        require(
            isinstance(mask, torch.Tensor)
            and mask.dtype == torch.float32
            and tuple(mask.shape) == (1, *image.shape[-2:]),
            f"item {i}: mask must be a float32 [1, H, W] tensor",
        )
        require(bool(((mask == 0) | (mask == 1)).all()), f"item {i}: mask must be 0/1")


@_book.rule("items-deterministic", "the same item read twice is equal")
def _items_deterministic(case: DatasetCase) -> None:
    for i, item in enumerate(case.items):
        again = case.ds[i]
        require(
            all(
                torch.equal(torch.as_tensor(a), torch.as_tensor(b))
                for a, b in zip(item, again, strict=True)
            ),
            f"item {i} differs when read twice (items must be deterministic)",
        )


@_book.rule("index-error-past-end", "ds[len(ds)] raises IndexError")
def _index_error_past_end(case: DatasetCase) -> None:
    try:
        case.ds[len(case.ds)]
    except IndexError:
        return
    raise Broken("ds[len(ds)] must raise IndexError")


@_book.rule("identity-json", "identity() is a non-empty, JSON-serialisable dict")
def _identity_json(case: DatasetCase) -> None:
    ident = case.ds.identity()
    require(isinstance(ident, dict) and bool(ident), "identity() must be a non-empty dict")
    try:
        json.dumps(ident)
    except TypeError as exc:
        raise Broken(f"identity() must be JSON-serialisable: {exc}") from exc


@_book.rule(
    "train-split", "train_split() is a non-empty BenchDataset with the same classes and channels"
)
def _train_split(case: DatasetCase) -> None:
    train, ds = case.train, case.ds
    require(
        isinstance(train, BenchDataset) and len(train) > 0,
        "train_split() must return a non-empty BenchDataset",
    )
    require(
        list(train.classes) == list(ds.classes) and train.channels == ds.channels,
        "train_split() must have the same classes and channels",
    )


@_book.rule(
    "validation-split",
    "validation_split() is None, or a non-empty BenchDataset with the same classes and "
    "channels that is neither the test nor the training split",
)
def _validation_split(case: DatasetCase) -> None:
    val, ds = case.val, case.ds
    if val is None:
        return
    require(
        isinstance(val, BenchDataset) and len(val) > 0,
        "validation_split() must return None or a non-empty BenchDataset",
    )
    require(
        list(val.classes) == list(ds.classes) and val.channels == ds.channels,
        "validation_split() must have the same classes and channels",
    )
    require(
        val.identity() not in (ds.identity(), case.train.identity()),
        "validation_split() must not be the test or the training split",
    )


@_book.rule("items-collate", "the items collate into a [B, C, H, W] batch")
def _items_collate(case: DatasetCase) -> None:
    require(collate(case.items)[0].dim() == 4, "items must collate into a [B, C, H, W] batch")


DATASET_RULES = tuple(_book.rules)
