"""The codec plugin kind: an image codec the compression track codes with (docs/design.md §6).

A codec is not an explanation method: a run lists it under ``codecs``, its cells code the whole
image at each quality of its sweep (the rate–accuracy curve every method is measured against), and
the run's first codec also codes every method's mixed-resolution images. Built-ins, one class per
format Pillow writes: ``jpeg`` (:class:`JpegCodec`), ``webp`` (:class:`WebpCodec`), ``avif``
(:class:`AvifCodec`), on the shared :class:`PillowCodec`. Third-party codecs subclass
:class:`Codec` and register with ``@register_codec("name")`` or the ``nicebench.codecs``
entry-point group; what every codec shares (the base class, :class:`CodecError`, :data:`SWEEP`,
the thread pool) is in :mod:`nicebench.codec_base` and exported here.
"""

from __future__ import annotations

import io
import struct
from typing import Any, ClassVar

import numpy as np
from PIL import Image, features

from .codec_base import (
    SUBSAMPLINGS,
    SWEEP,
    Codec,
    CodecError,
    Coded,
    check_quality,
    roundtrip_tensor,
    to_uint8,
)
from .registry import CODECS, UnknownPluginError, register_codec

__all__ = [
    "Codec",
    "CodecError",
    "Coded",
    "SWEEP",
    "check_quality",
    "to_uint8",
    "roundtrip_tensor",
    "create_codec",
    "as_codec",
    "available_codecs",
    "PillowCodec",
    "JpegCodec",
    "WebpCodec",
    "AvifCodec",
]


class PillowCodec(Codec):
    """A format Pillow writes, coded in memory. A subclass names its format and says how it
    differs: ``pil_format`` (Pillow's format name), ``pil_feature`` (the name
    :func:`PIL.features.check` knows), ``max_side`` (the largest side it codes), and it overrides
    :meth:`save_options` (its encoder settings) and :meth:`header_size` (its container)."""

    pil_format: ClassVar[str] = ""
    pil_feature: ClassVar[str] = ""
    max_side: ClassVar[int] = 0
    thread_safe = True

    @classmethod
    def available(cls) -> bool:
        """Whether this Pillow build can write the format."""
        return bool(features.check(cls.pil_feature))

    def check_available(self) -> None:
        if not self.available():
            raise CodecError(
                f"codec {self.name!r} is not available in this Pillow build (Pillow has: "
                f"{available_codecs()}); install a Pillow wheel built with it"
            )

    def save_options(self, image: Image.Image) -> dict[str, Any]:
        """Keyword arguments of :meth:`PIL.Image.Image.save` besides format and quality."""
        return {}

    def encode(self, arr: np.ndarray, quality: int) -> bytes:
        quality = check_quality(quality)
        self._check_array(arr)
        image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        buf = io.BytesIO()
        try:
            image.save(buf, format=self.pil_format, quality=quality, **self.save_options(image))
        except (OSError, ValueError) as exc:
            msg = f"images: {self.name} could not encode a {image.mode} {image.size} image: {exc}"
            raise CodecError(msg) from exc
        return buf.getvalue()

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
        arr = np.asarray(image)
        return arr[..., None] if arr.ndim == 2 else arr

    def _check_array(self, arr: np.ndarray) -> None:
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] not in (1, 3):
            raise CodecError(
                f"images: {self.name} takes uint8 [H,W,1] or [H,W,3] arrays (grey or RGB), got "
                f"{arr.dtype} {tuple(arr.shape)}"
            )
        h, w = arr.shape[:2]
        if min(h, w) < 1 or max(h, w) > self.max_side:
            raise CodecError(
                f"images: {self.name} codes sides of 1..{self.max_side} px, got {h}×{w}"
            )


@register_codec("jpeg")
class JpegCodec(PillowCodec):
    """JPEG (libjpeg-turbo through Pillow, ``optimize=True``: Huffman tables fitted per image).

    ``block`` 8, the luma DCT block, at every subsampling (with 4:2:0 a 16×16 MCU carries its
    chroma, so a mask edge on the 8-px grid can still fall inside a chroma block; pass
    ``block=16`` to :func:`nicebench.compression.compress` to snap to whole MCUs). Sides up to
    65,500 px (16-bit dimensions).
    """

    pil_format = "JPEG"
    pil_feature = "jpg"
    max_side = 65_500
    block = 8
    subsamplings = SUBSAMPLINGS

    def save_options(self, image: Image.Image) -> dict[str, Any]:
        options: dict[str, Any] = {"optimize": True}
        if image.mode == "RGB":
            options["subsampling"] = SUBSAMPLINGS.index(self.subsampling)  # Pillow's code
        return options

    def header_size(self, data: bytes) -> int:
        """Every marker segment (SOI, APPn, DQT, SOF, DHT, SOS headers, EOI): all but the
        entropy-coded scan data. With ``optimize=True`` the Huffman tables are fitted to the
        image, so this is "fixed" per file rather than per setting (about 285 B at q75 4:2:0)."""
        return len(data) - self._scan_bytes(data)

    @staticmethod
    def _scan_bytes(data: bytes) -> int:
        """Total length of the entropy-coded segments of a JPEG stream."""
        if data[:2] != b"\xff\xd8":
            raise CodecError("not a JPEG stream (no SOI marker)")
        pos, n, scan = 2, len(data), 0
        while pos + 4 <= n:
            if data[pos] != 0xFF:
                raise CodecError(f"corrupt JPEG stream at byte {pos}")
            marker = data[pos + 1]
            if marker == 0xD9:  # EOI
                break
            length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
            pos += 2 + length
            if marker == 0xDA:  # SOS: entropy-coded data up to the next non-RST marker
                start = pos
                while pos + 1 < n:
                    byte = data[pos + 1]
                    if data[pos] == 0xFF and byte != 0 and not 0xD0 <= byte <= 0xD7:
                        break
                    pos += 1
                scan += pos - start
        return scan


@register_codec("webp")
class WebpCodec(PillowCodec):
    """Lossy WebP (libwebp through Pillow): always 4:2:0 chroma, ``block`` 16 (the VP8
    macroblock), sides up to 16,383 px (14-bit dimensions)."""

    pil_format = "WEBP"
    pil_feature = "webp"
    max_side = 16_383
    block = 16
    subsamplings = ("4:2:0",)

    def header_size(self, data: bytes) -> int:
        """The RIFF header, chunk headers, any non-image chunk, and the 10-byte VP8 key-frame
        header (or the 5-byte VP8L header); the VP8 partitions count as payload."""
        if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise CodecError("not a WebP stream (no RIFF/WEBP header)")
        pos, payload = 12, 0
        while pos + 8 <= len(data):
            fourcc = data[pos : pos + 4]
            size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
            if fourcc == b"VP8 ":
                payload += max(size - 10, 0)
            elif fourcc == b"VP8L":
                payload += max(size - 5, 0)
            pos += 8 + size + (size & 1)
        return len(data) - payload


@register_codec("avif")
class AvifCodec(PillowCodec):
    """AVIF (libavif through Pillow). ``block`` 8, a common AV1 transform size (AV1 partitions
    adaptively from 128 down to 4 px); sides up to 16,384 px (libavif's default limit)."""

    pil_format = "AVIF"
    pil_feature = "avif"
    max_side = 16_384
    block = 8
    subsamplings = SUBSAMPLINGS

    def save_options(self, image: Image.Image) -> dict[str, Any]:
        return {"subsampling": self.subsampling if image.mode == "RGB" else "4:0:0"}

    def header_size(self, data: bytes) -> int:
        """Every ISOBMFF box (ftyp, meta, ...) and the mdat box header; the mdat payload (the AV1
        OBUs, including its ~12-byte sequence header) counts as payload."""
        pos, payload = 0, 0
        while pos + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            head = 8
            if size == 1:
                size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
                head = 16
            elif size == 0:
                size = len(data) - pos
            if size < head:
                raise CodecError(f"corrupt AVIF stream at byte {pos}")
            if kind == b"mdat":
                payload += size - head
            pos += size
        if payload == 0:
            raise CodecError("not an AVIF stream (no mdat box)")
        return len(data) - payload


def available_codecs() -> list[str]:
    """The built-in Pillow codecs this Pillow build can write (``nicebench.list_codecs()`` lists
    every registered codec, third-party ones included)."""
    return [c.registered_name for c in (JpegCodec, WebpCodec, AvifCodec) if c.available()]


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
