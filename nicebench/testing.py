"""The plugin contracts in one call: ``check_method(MyMethod)``, ``check_gate_method``,
``check_dataset(MyDataset)``, ``check_codec(MyCodec)``."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from .codec import Codec
from .codec_base import CodecError
from .data import BenchDataset, collate, load_dataset
from .gates.hard_concrete import upsample_cells
from .gates.method import GateMaskMethod
from .learned import LearnedMethod
from .method import Method, MethodError
from .models import build_arch

FLAGS = ("learns", "needs_gradients", "deterministic", "uses_model", "needs_masks",
         "needs_indices", "gate_mask", "masked_input")  # fmt: skip

__all__ = [
    "ContractError", "check_method", "check_gate_method", "check_dataset", "check_codec",
    "tiny_setup",
    "TINY_SCENES",
]  # fmt: skip


class ContractError(AssertionError):
    """A plugin broke its kind's contract; the message names the plugin and the rule."""


def _require(ok: Any, message: str) -> None:
    """Raise :class:`ContractError` with ``message`` unless ``ok`` (unlike ``assert``, this
    survives ``python -O``)."""
    if not ok:
        raise ContractError(message)

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


def _explain(method: Method, images, targets, masks, start: int = 0):
    """``method.explain`` with the masks it needs and the dataset indices ``start, start+1, …``."""
    kw = {"masks": masks} if method.needs_masks else {}
    return method.explain(images, targets, indices=torch.arange(start, start + len(images)), **kw)


def check_method(
    cls: type[Method] | str,
    model: nn.Module | None = None,
    dataset: BenchDataset | None = None,
    params: dict[str, Any] | None = None,
    n: int = 4,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Run the plugin contract on ``cls`` and raise :class:`ContractError` naming what broke.

    Checks: capability flags are booleans; ``fit`` (learning methods) then ``explain`` give a
    finite float32 ``[B,1,H,W]`` map on the images' device; batch independence (each image alone
    gives its map in the batch); determinism (when ``deterministic``); honest flags
    (``uses_model=False`` ⇒ the map ignores the classifier, ``uses_model=True`` ⇒ it doesn't for
    methods that don't learn; ``needs_gradients=False`` ⇒ works under ``torch.inference_mode``;
    ``needs_masks`` ⇒ a clear error without masks, likewise ``needs_indices`` without the images'
    dataset indices, which it passes as ``0..n-1``: the dataset's first ``n`` images; a learned
    method's ``refit_on`` fits on another classifier). Uses a tiny untrained scenes classifier unless
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

    _require(isinstance(cls, type) and issubclass(cls, Method),
             f"{name}: a method must subclass nicebench.Method")  # fmt: skip
    for flag in FLAGS:
        _require(isinstance(getattr(cls, flag), bool), f"{name}: capability {flag} must be a bool")
    if issubclass(cls, LearnedMethod):
        _require(cls.learns, f"{name}: a LearnedMethod must keep learns=True")
    _require(not cls.masked_input or cls.gate_mask,
             f"{name}: masked_input=True needs gate_mask=True (composite needs a binary mask)")
    if cls.needs_masks:
        _require(dataset.has_masks, f"{name} needs masks: give check_method a dataset with masks")

    items = collate([dataset[i] for i in range(n)])
    images, labels = items[0], items[1]
    masks = items[2] if len(items) > 2 else None
    method = cls(model, **params)
    if cls.learns:
        _require(not method.fitted, f"{name}: learns=True but is usable before fit()")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0x5EED_CAFE)  # a state no plugin seeds to by chance
            state = torch.random.get_rng_state()
            method.fit(dataset.train_split())
            _require(torch.equal(state, torch.random.get_rng_state()),
                     f"{name}: fit() moved the global RNG (seed a generator of your own)")
        _require(method.fitted, f"{name}: fit() did not leave the method fitted")
    sal = _explain(method, images, labels, masks)

    _require(isinstance(sal, torch.Tensor), f"{name}: explain returned {type(sal).__name__}")
    _require(sal.dtype == torch.float32, f"{name}: map dtype {sal.dtype}, expected float32")
    _require(tuple(sal.shape) == (n, 1, *images.shape[-2:]),
             f"{name}: map shape {tuple(sal.shape)}")  # fmt: skip
    _require(sal.device == images.device,
             f"{name}: map on {sal.device}, images on {images.device}")  # fmt: skip
    _require(torch.isfinite(sal).all(), f"{name}: map has NaN or inf")

    singles = torch.cat(
        [
            _explain(
                method,
                images[i : i + 1],
                labels[i : i + 1],
                None if masks is None else masks[i : i + 1],
                start=i,
            )  # fmt: skip
            for i in range(n)
        ]
    )
    err = (singles - sal).abs().max().item()
    scale = max(sal.abs().max().item(), 1e-12)
    _require(err <= atol * max(1.0, scale), f"{name}: not batch-independent (max diff {err:.3g})")
    report["batch_independence_max_diff"] = err

    if cls.deterministic:
        again = _explain(method, images, labels, masks)
        diff = (again - sal).abs().max().item()
        _require(diff <= atol * max(1.0, scale),
                 f"{name}: deterministic=True but maps differ by {diff}")  # fmt: skip

    if cls.needs_masks:
        try:
            method.explain(images, labels)
        except MethodError:
            pass
        else:
            raise ContractError(f"{name}: needs_masks=True but explain() worked without masks")
    if cls.needs_indices:
        kw = {"masks": masks} if cls.needs_masks else {}
        try:
            method.explain(images, labels, **kw)
        except MethodError:
            pass
        else:
            raise ContractError(f"{name}: needs_indices=True but explain() worked without indices")

    other = copy.deepcopy(model)
    torch.manual_seed(12345)
    for m in other.modules():
        if hasattr(m, "reset_parameters") and m is not other:
            m.reset_parameters()
    other_method = method.with_model(other)
    _require(isinstance(other_method, cls) and other_method.model is other,
             f"{name}: with_model(model) must return the method on that model")  # fmt: skip
    if cls.learns:  # the randomisation tests' refit: fitted on the other classifier
        refit = method.refit_on(other, epochs=1, n_train=8)
        _require(isinstance(refit, cls) and refit.model is other and refit.fitted,
                 f"{name}: refit_on(model) must return the method fitted on that model")  # fmt: skip
    other_sal = _explain(other_method, images, labels, masks)
    changed = (other_sal - sal).abs().max().item() > atol * max(1.0, scale)
    if not cls.uses_model:
        _require(not changed, f"{name}: uses_model=False but the map changes with the classifier")
    elif not cls.learns:
        _require(changed, f"{name}: uses_model=True but the map ignores the classifier")
    report["map_depends_on_model"] = changed

    if not cls.needs_gradients:
        with torch.inference_mode():
            try:
                _explain(method, images, labels, masks)
            except RuntimeError as exc:
                raise ContractError(
                    f"{name}: needs_gradients=False but fails without autograd: {exc}"
                ) from exc
    if cls.gate_mask:
        report.update(_check_gate_hooks(method, images, labels, masks, sal, name))
    report["ok"] = True
    report["fitted_method"] = method
    return report


def _check_gate_hooks(method, images, labels, masks, sal, name) -> dict[str, Any]:
    kw = {"masks": masks} if method.needs_masks else {}
    keep = method.binary_mask(images, labels, **kw)
    _require(isinstance(keep, torch.Tensor) and keep.dtype == torch.bool,
             f"{name}: binary_mask must return a bool tensor")  # fmt: skip
    _require(tuple(keep.shape) == tuple(sal.shape),
             f"{name}: binary_mask shape {tuple(keep.shape)}, expected {tuple(sal.shape)}")
    _require(keep.device == images.device, f"{name}: binary_mask on {keep.device}")
    out: dict[str, Any] = {"mask_share": keep.float().mean().item()}
    if method.masked_input:
        x = method.composite(images, keep)
        _require(tuple(x.shape) == tuple(images.shape) and torch.isfinite(x).all(),
                 f"{name}: composite must give finite images of the input's shape")  # fmt: skip
        _require(torch.allclose(method.composite(images, torch.ones_like(keep)), images),
                 f"{name}: composite with a full mask must give the image back")  # fmt: skip
        _require(torch.equal(x[keep.expand_as(x)], images[keep.expand_as(images)]),
                 f"{name}: composite must keep the masked-in pixels as they are")
    return out


def check_gate_method(
    cls: type[GateMaskMethod] | str,
    model: nn.Module | None = None,
    dataset: BenchDataset | None = None,
    params: dict[str, Any] | None = None,
    n: int = 4,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """:func:`check_method` plus the gate-method contract (raises :class:`ContractError`).

    Checks: ``cls`` subclasses :class:`nicebench.GateMaskMethod`; ``gate_logits`` are finite
    ``[B,1,⌈H/cell⌉,⌈W/cell⌉]``; the binary mask is ``log α ≥ 0`` upsampled by the cell (constant
    on each cell) and the map is the ranked test mask, so pixels the map ranks at ≥ 0.5 are the
    kept ones; ``composite`` keeps the kept pixels and puts the reference elsewhere.
    """
    if isinstance(cls, str):
        from .registry import METHODS

        cls = METHODS.get(cls)
    name = getattr(cls, "registered_name", "") or cls.__name__
    _require(isinstance(cls, type) and issubclass(cls, GateMaskMethod),
             f"{name}: a gate method must subclass nicebench.GateMaskMethod")  # fmt: skip
    report = check_method(cls, model, dataset, params, n, atol)
    method: GateMaskMethod = report["fitted_method"]
    if model is None or dataset is None:
        model, dataset = tiny_setup(n=max(n, 4))
    images, labels = collate([dataset[i] for i in range(n)])[:2]
    h, w = images.shape[-2:]
    cell = method.cell_size(h, w)
    la = method.gate_logits(images.to(method.device), labels.to(method.device))
    _require(tuple(la.shape) == (n, 1, *method.grid_size(h, w)),
             f"{name}: gate_logits shape {tuple(la.shape)}, expected "
             f"[{n},1,{method.grid_size(h, w)[0]},{method.grid_size(h, w)[1]}]")  # fmt: skip
    _require(torch.isfinite(la).all(), f"{name}: gate_logits have NaN or inf")
    keep = method.binary_mask(images, labels)
    expected = upsample_cells(la.cpu() >= 0, cell, (h, w))
    _require(torch.equal(keep.cpu(), expected),
             f"{name}: binary_mask must be log α ≥ 0 upsampled by the cell ({cell} px)")
    sal = method.explain(images, labels)
    # the map is the test mask (≥ 0.5 exactly where kept) up to the 1e-3 tie-break
    kept = keep.cpu()
    _require(bool((sal[kept] >= 0.5 - 2e-3).all() and (sal[~kept] <= 0.5 + 2e-3).all()),
             f"{name}: the map must be ≥ 0.5 on the kept pixels and below elsewhere")
    ref = method.composite(images, torch.zeros_like(keep))
    _require(torch.allclose(ref, method.reference_image(images).expand_as(images)),
             f"{name}: composite with an empty mask must give the reference image")
    report["cell"] = cell
    return report


def _require_ds(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ContractError(f"dataset {name}: {rule}")


def check_dataset(
    cls_or_instance: type[BenchDataset] | BenchDataset | str,
    params: dict[str, Any] | None = None,
    n: int = 4,
) -> dict[str, Any]:
    """Run the dataset plugin contract; raise :class:`ContractError` naming the broken rule.

    Checks: a :class:`BenchDataset` with ``classes``, ``mean``/``std`` per channel, ``size``,
    ``channels``, a known ``model_arch`` and a bool ``has_masks``; a non-empty test split whose
    first ``n`` items are ``(image, label[, mask])`` (mask iff ``has_masks``): float32
    ``[channels, size, size]`` images in [0, 1], int labels in range, 0/1 float32 ``[1, H, W]``
    masks; the same item twice is equal (deterministic); ``IndexError`` past the end; a JSON-able
    ``identity()``; a non-empty ``train_split()`` with the same classes and channels (and so a
    ``validation_split()`` other than ``None``); the items
    collate into a batch. A class is built as ``cls(split="test", **params)``.
    """
    import json

    from .registry import MODELS

    ds = cls_or_instance
    if isinstance(ds, str):
        ds = load_dataset(ds, split="test", **(params or {}))
    elif isinstance(ds, type):
        _require_ds(issubclass(ds, BenchDataset), ds.__name__, "must subclass nicebench.BenchDataset")
        ds = ds(split="test", **(params or {}))
    cls = type(ds)
    name = vars(cls).get("registered_name") or cls.__name__  # a subclass is not its base
    _require_ds(isinstance(ds, BenchDataset), name, "must be a nicebench.BenchDataset")
    _require_ds(isinstance(cls.has_masks, bool), name, "has_masks must be a bool")
    _require_ds(ds.model_arch in MODELS, name,
             f"model_arch {ds.model_arch!r} is not one of {MODELS.names()}")  # fmt: skip
    _require_ds(len(ds.classes) >= 2 and all(isinstance(c, str) for c in ds.classes), name,
             "classes must be a list of at least two names")  # fmt: skip
    _require_ds(len(ds.mean) == ds.channels == len(ds.std), name,
             f"mean and std need one value per channel ({ds.channels})")  # fmt: skip
    _require_ds(all(s > 0 for s in ds.std), name, "std must be positive")
    _require_ds(len(ds) > 0, name, "the test split is empty")
    for i in range(min(n, len(ds))):
        item = ds[i]
        _require_ds(isinstance(item, tuple) and len(item) == 2 + ds.has_masks, name,
                 f"item {i} must be (image, label{', mask' if ds.has_masks else ''}), "
                 f"got {type(item).__name__} of {len(item)}")  # fmt: skip
        image, label = item[0], item[1]
        _require_ds(isinstance(image, torch.Tensor) and image.dtype == torch.float32, name,
                 f"item {i}: image must be a float32 tensor")  # fmt: skip
        _require_ds(tuple(image.shape) == (ds.channels, ds.size, ds.size), name,
                 f"item {i}: image of shape {tuple(image.shape)}, expected "
                 f"[{ds.channels}, {ds.size}, {ds.size}]")  # fmt: skip
        _require_ds(bool(torch.isfinite(image).all()) and image.min() >= 0 and image.max() <= 1,
                 name, f"item {i}: image values must lie in [0, 1]")  # fmt: skip
        _require_ds(isinstance(label, int) and 0 <= label < ds.num_classes, name,
                 f"item {i}: label {label!r} must be an int in [0, {ds.num_classes})")  # fmt: skip
        if ds.has_masks:
            mask = item[2]
            _require_ds(isinstance(mask, torch.Tensor) and mask.dtype == torch.float32
                     and tuple(mask.shape) == (1, *image.shape[-2:]), name,
                     f"item {i}: mask must be a float32 [1, H, W] tensor")  # fmt: skip
            _require_ds(bool(((mask == 0) | (mask == 1)).all()), name, f"item {i}: mask must be 0/1")
        again = ds[i]
        _require_ds(all(torch.equal(torch.as_tensor(a), torch.as_tensor(b))
                     for a, b in zip(item, again, strict=True)), name,
                 f"item {i} differs when read twice (items must be deterministic)")  # fmt: skip
    try:
        ds[len(ds)]
    except IndexError:
        pass
    else:
        raise ContractError(f"dataset {name}: ds[len(ds)] must raise IndexError")
    ident = ds.identity()
    _require_ds(isinstance(ident, dict) and bool(ident), name, "identity() must be a non-empty dict")
    try:
        json.dumps(ident)
    except TypeError as exc:
        raise ContractError(f"dataset {name}: identity() must be JSON-serialisable: {exc}") from exc
    train = ds.train_split()
    _require_ds(isinstance(train, BenchDataset) and len(train) > 0, name,
             "train_split() must return a non-empty BenchDataset")  # fmt: skip
    _require_ds(list(train.classes) == list(ds.classes) and train.channels == ds.channels, name,
             "train_split() must have the same classes and channels")  # fmt: skip
    val = ds.validation_split()
    if val is not None:
        _require_ds(isinstance(val, BenchDataset) and len(val) > 0, name,
                 "validation_split() must return None or a non-empty BenchDataset")  # fmt: skip
        _require_ds(list(val.classes) == list(ds.classes) and val.channels == ds.channels, name,
                 "validation_split() must have the same classes and channels")  # fmt: skip
        _require_ds(val.identity() not in (ds.identity(), train.identity()), name,
                 "validation_split() must not be the test or the training split")  # fmt: skip
    batch = collate([ds[i] for i in range(min(n, len(ds)))])
    _require_ds(batch[0].dim() == 4, name, "items must collate into a [B, C, H, W] batch")
    return {"dataset": name, "n": len(ds), "n_train": len(train),
            "n_val": 0 if val is None else len(val), "ok": True}  # fmt: skip


def _textured(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A ``uint8 [H,W,C]`` test image: a colour gradient under seeded noise (hard to code)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)[..., :channels]
    return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)


def _require_codec(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ContractError(f"codec {name}: {rule}")


def _expect_codec_error(name: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except CodecError:
        return
    except Exception as exc:  # any other error breaks the contract too
        raise ContractError(f"codec {name}: {what} must raise CodecError, raised "
                            f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    raise ContractError(f"codec {name}: {what} must raise CodecError")


def check_codec(cls: type[Codec] | str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the codec plugin contract on ``cls``; raise :class:`ContractError` naming what broke.

    Checks, on seeded textured RGB and grey images: ``block`` is a positive int and
    ``subsamplings`` a non-empty tuple; ``encode`` returns non-empty ``bytes``; ``decode`` gives back
    ``uint8 [H,W,C]``; a higher quality gives no fewer bytes; ``header_size`` is an int in
    [0, len); ``roundtrip`` agrees with ``encode``/``decode``/``header_size``; qualities outside
    [1, 100] raise :class:`CodecError` (in the constructor and in ``roundtrip``). ``params`` go to
    the constructor (default: none).
    """
    if isinstance(cls, str):
        from .registry import CODECS

        cls = CODECS.get(cls)
    name = getattr(cls, "registered_name", "") or cls.__name__
    _require_codec(
        isinstance(cls, type) and issubclass(cls, Codec), name, "must subclass nicebench.Codec"
    )
    _require_codec(isinstance(cls.block, int) and cls.block > 0, name, "block must be a positive int")
    _require_codec(isinstance(cls.subsamplings, tuple) and len(cls.subsamplings) > 0, name,
             "subsamplings must be a non-empty tuple")  # fmt: skip
    codec = cls(**(params or {}))
    report: dict[str, Any] = {"codec": name, "bytes": {}}
    for channels in (3, 1):
        arr = _textured(48, 40, channels, seed=channels)
        sizes = []
        for q in (10, 50, 90):
            data = codec.encode(arr, q)
            _require_codec(isinstance(data, bytes) and len(data) > 0, name,
                     f"encode must return non-empty bytes, got {type(data).__name__}")  # fmt: skip
            dec = codec.decode(data, channels)
            _require_codec(isinstance(dec, np.ndarray) and dec.dtype == np.uint8
                     and dec.shape == arr.shape, name,
                     f"decode must give back uint8 {arr.shape}, got "
                     f"{getattr(dec, 'dtype', type(dec).__name__)} {getattr(dec, 'shape', '')}")  # fmt: skip
            head = codec.header_size(data)
            _require_codec(isinstance(head, (int, np.integer)) and 0 <= head < len(data), name,
                     f"header_size must be an int in [0, {len(data)}), got {head!r}")  # fmt: skip
            sizes.append(len(data))
        _require_codec(sizes == sorted(sizes), name,
                 f"a higher quality must not give fewer bytes (q10, q50, q90: {sizes})")  # fmt: skip
        report["bytes"][channels] = sizes
        batch = np.stack([arr, _textured(48, 40, channels, seed=7)])
        coded = codec.roundtrip(batch, 50)
        streams = [codec.encode(a, 50) for a in batch]
        _require_codec(coded.streams == streams and coded.nbytes.tolist() == [len(s) for s in streams],
                 name, "roundtrip's streams and nbytes must be those of encode")  # fmt: skip
        _require_codec(coded.header.tolist() == [codec.header_size(s) for s in streams], name,
                 "roundtrip's header must be header_size of its streams")  # fmt: skip
        _require_codec(coded.decoded.shape == batch.shape and coded.decoded.dtype == np.uint8
                 and np.array_equal(coded.decoded[0], codec.decode(streams[0], channels)),
                 name, "roundtrip's decoded images must be decode of its streams")  # fmt: skip
    for bad in (0, 101, 50.5):
        _expect_codec_error(name, f"quality {bad!r} in the constructor", cls,
                            **{**(params or {}), "qualities": (bad,)})  # fmt: skip
        _expect_codec_error(name, f"quality {bad!r} in roundtrip", codec.roundtrip, batch, bad)
    report["ok"] = True
    return report
