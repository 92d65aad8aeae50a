"""The codec plugin kind: an image codec the compression track codes with (SPEC §6).

A codec is not an explanation method: a run lists it under ``codecs``, its cells code the whole
image at each quality of its sweep (the rate–accuracy curve every method is measured against), and
the run's first codec also codes every method's mixed-resolution images. Built-ins: ``jpeg``,
``webp``, ``avif`` (Pillow); third-party codecs subclass :class:`Codec` and register with
``@register_codec("name")`` or the ``nicebench.codecs`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from .compression import codecs as pillow
from .compression.codecs import CodecError, Coded, check_quality
from .registry import CODECS, UnknownPluginError, register_codec

__all__ = ["Codec", "SWEEP", "create_codec", "as_codec", "JpegCodec", "WebpCodec", "AvifCodec"]

_ALL_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
#: The default quality sweep of a codec's own rate–accuracy curve.
SWEEP = tuple(range(5, 96, 5))


class Codec:
    """Base class of the codec plugins; :func:`nicebench.testing.check_codec` checks the contract.

    Class attributes:

    - ``block``: the side of the block grid masks are snapped to (JPEG's 8×8 DCT block).
    - ``subsamplings``: the chroma subsamplings it can code (a capability; the constructor refuses
      others with :class:`CodecError`).
    - ``registered_name``: set by ``@register_codec``; :attr:`name` falls back to the class name.
    - ``thread_safe``: True lets :meth:`roundtrip` code a batch on a thread pool (the Pillow codecs
      do: Pillow releases the GIL while it codes).

    Instances hold the settings of a run: ``qualities`` (the sweep, integers in [1, 100]) and
    ``subsampling``. Subclasses implement :meth:`encode` and :meth:`decode`, and
    :meth:`header_size` when they can tell their container/header bytes from coded image data;
    :meth:`roundtrip` codes a batch with them. Bad settings or images raise :class:`CodecError`.
    """

    block: ClassVar[int] = 8
    subsamplings: ClassVar[tuple[str, ...]] = _ALL_SUBSAMPLINGS
    registered_name: ClassVar[str] = ""
    #: whether :meth:`encode`/:meth:`decode` may run on several threads at once (then
    #: :meth:`roundtrip` codes a batch on a thread pool); a plugin opts in.
    thread_safe: ClassVar[bool] = False

    def __init__(self, *, qualities: Iterable[int] = SWEEP, subsampling: str | int = "4:2:0"):
        self.check_available()
        self.qualities = tuple(check_quality(q) for q in qualities)
        if not self.qualities:
            raise CodecError(f"{self.name}: qualities must name at least one quality")
        self.subsampling = pillow.check_subsampling_in(self.name, subsampling, self.subsamplings)

    @property
    def name(self) -> str:
        return self.registered_name or type(self).__name__.lower()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(subsampling={self.subsampling!r}, qualities={self.qualities})"
        )

    def check_available(self) -> None:
        """Raise :class:`CodecError` when this machine can't code with it (default: it can)."""

    def encode(self, arr: np.ndarray, quality: int) -> bytes:
        """One ``uint8 [H,W,C]`` image (C = 1 or 3) → the encoded file, in memory."""
        raise NotImplementedError(f"{type(self).__name__} must override encode()")

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        """An encoded file → ``uint8 [H,W,channels]``."""
        raise NotImplementedError(f"{type(self).__name__} must override decode()")

    def header_size(self, data: bytes) -> int:
        """Bytes of ``data`` that are not coded image data, in [0, len(data)) (default 0)."""
        return 0

    def roundtrip(self, arr: np.ndarray, quality: int) -> Coded:
        """Encode and decode every image of ``uint8 [B,H,W,C]`` at ``quality``."""
        quality = check_quality(quality)
        return pillow.code_batch(
            arr, lambda a: self.encode(a, quality), self.decode, self.header_size,
            parallel=self.thread_safe,
        )  # fmt: skip


class _PillowCodec(Codec):
    """A codec Pillow writes; the work is done by :mod:`nicebench.compression.codecs`."""

    codec: ClassVar[str] = ""
    thread_safe = True

    def check_available(self) -> None:
        pillow.check_codec(self.codec)

    def encode(self, arr: np.ndarray, quality: int) -> bytes:
        return pillow.encode(arr, self.codec, check_quality(quality), self.subsampling)

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        return pillow.decode(data, channels)

    def header_size(self, data: bytes) -> int:
        return pillow.header_size(data, self.codec)


@register_codec("jpeg")
class JpegCodec(_PillowCodec):
    """JPEG (libjpeg-turbo through Pillow, optimize=True) at a quality sweep."""

    codec = "jpeg"
    block = pillow.BLOCK["jpeg"]
    subsamplings = pillow.SUBSAMPLINGS["jpeg"]


@register_codec("webp")
class WebpCodec(_PillowCodec):
    """Lossy WebP (libwebp through Pillow; always 4:2:0) at a quality sweep."""

    codec = "webp"
    block = pillow.BLOCK["webp"]
    subsamplings = pillow.SUBSAMPLINGS["webp"]


@register_codec("avif")
class AvifCodec(_PillowCodec):
    """AVIF (libavif through Pillow) at a quality sweep."""

    codec = "avif"
    block = pillow.BLOCK["avif"]
    subsamplings = pillow.SUBSAMPLINGS["avif"]


def create_codec(name: str, **params: Any) -> Codec:
    """An instance of the registered codec ``name`` (``"jpg"`` means ``"jpeg"``) with ``params``
    (``qualities``, ``subsampling``); an unknown name raises :class:`CodecError`."""
    key = str(name).lower()
    key = "jpeg" if key == "jpg" else key
    try:
        cls = CODECS.get(key)
    except UnknownPluginError as exc:
        raise CodecError(f"codec must be one of {CODECS.names()}, got {name!r}: {exc}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise CodecError(f"codec {key!r}: {exc}") from None


def as_codec(codec: str | Codec, subsampling: str | int = "4:2:0") -> Codec:
    """``codec`` itself when it is a :class:`Codec`, else :func:`create_codec` of the name."""
    if isinstance(codec, Codec):
        return codec
    return create_codec(codec, subsampling=subsampling)
