"""Plugin contracts in one call: ``check_method(MyMethod)``, ``check_codec(MyCodec)``."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from .codec import Codec
from .compression.codecs import CodecError
from .data import BenchDataset, collate, load_dataset
from .method import Method, MethodError
from .models import build_arch

__all__ = ["check_method", "check_codec", "ContractError", "tiny_setup", "TINY_SCENES"]


class ContractError(AssertionError):
    """A plugin broke its kind's contract; the message names the plugin and the rule."""


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


def _textured(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A ``uint8 [H,W,C]`` test image: a colour gradient under seeded noise (hard to code)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)[..., :channels]
    return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)


def _require(ok: bool, name: str, rule: str) -> None:
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
    _require(
        isinstance(cls, type) and issubclass(cls, Codec), name, "must subclass nicebench.Codec"
    )
    _require(isinstance(cls.block, int) and cls.block > 0, name, "block must be a positive int")
    _require(isinstance(cls.subsamplings, tuple) and len(cls.subsamplings) > 0, name,
             "subsamplings must be a non-empty tuple")  # fmt: skip
    codec = cls(**(params or {}))
    report: dict[str, Any] = {"codec": name, "bytes": {}}
    for channels in (3, 1):
        arr = _textured(48, 40, channels, seed=channels)
        sizes = []
        for q in (10, 50, 90):
            data = codec.encode(arr, q)
            _require(isinstance(data, bytes) and len(data) > 0, name,
                     f"encode must return non-empty bytes, got {type(data).__name__}")  # fmt: skip
            dec = codec.decode(data, channels)
            _require(isinstance(dec, np.ndarray) and dec.dtype == np.uint8
                     and dec.shape == arr.shape, name,
                     f"decode must give back uint8 {arr.shape}, got "
                     f"{getattr(dec, 'dtype', type(dec).__name__)} {getattr(dec, 'shape', '')}")  # fmt: skip
            head = codec.header_size(data)
            _require(isinstance(head, (int, np.integer)) and 0 <= head < len(data), name,
                     f"header_size must be an int in [0, {len(data)}), got {head!r}")  # fmt: skip
            sizes.append(len(data))
        _require(sizes == sorted(sizes), name,
                 f"a higher quality must not give fewer bytes (q10, q50, q90: {sizes})")  # fmt: skip
        report["bytes"][channels] = sizes
        batch = np.stack([arr, _textured(48, 40, channels, seed=7)])
        coded = codec.roundtrip(batch, 50)
        streams = [codec.encode(a, 50) for a in batch]
        _require(coded.streams == streams and coded.nbytes.tolist() == [len(s) for s in streams],
                 name, "roundtrip's streams and nbytes must be those of encode")  # fmt: skip
        _require(coded.header.tolist() == [codec.header_size(s) for s in streams], name,
                 "roundtrip's header must be header_size of its streams")  # fmt: skip
        _require(coded.decoded.shape == batch.shape and coded.decoded.dtype == np.uint8
                 and np.array_equal(coded.decoded[0], codec.decode(streams[0], channels)),
                 name, "roundtrip's decoded images must be decode of its streams")  # fmt: skip
    for bad in (0, 101, 50.5):
        _expect_codec_error(name, f"quality {bad!r} in the constructor", cls,
                            **{**(params or {}), "qualities": (bad,)})  # fmt: skip
        _expect_codec_error(name, f"quality {bad!r} in roundtrip", codec.roundtrip, batch, bad)
    report["ok"] = True
    return report
