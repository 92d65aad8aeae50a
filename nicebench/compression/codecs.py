"""In-memory image codecs through Pillow: JPEG (libjpeg-turbo), WebP (libwebp), AVIF (libavif).

These are the functions the built-in :class:`nicebench.Codec` plugins (``jpeg``, ``webp``,
``avif`` in :mod:`nicebench.codec`) are made of; the compression track itself codes through codec
plugins. Every call encodes one ``uint8`` image ``[H,W,C]`` (C = 1 or 3) to a ``bytes`` object and decodes it
back; nothing touches the disk. :func:`header_size` parses the encoded file and returns the bytes
that are not coded image data (the codec's container and headers), so rates can also be reported
with the fixed header left out: at 28–64 px the JPEG header is a large share of the file.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, features

__all__ = [
    "map_images",
    "PILLOW_CODECS",
    "SUBSAMPLINGS",
    "BLOCK",
    "CodecError",
    "available_codecs",
    "check_codec",
    "check_quality",
    "check_subsampling",
    "block_size",
    "encode",
    "decode",
    "header_size",
    "Coded",
    "to_uint8",
    "roundtrip",
    "code_batch",
    "codec_threads",
]

#: The codecs Pillow can write (the built-in codec plugins; ``nicebench.list_codecs()`` lists every
#: registered codec, third-party ones included).
PILLOW_CODECS = ("jpeg", "webp", "avif")
_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
_PIL_FEATURE = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}
_SUBSAMPLING = ("4:4:4", "4:2:2", "4:2:0")
#: The chroma subsamplings each codec can code (lossy WebP: always 4:2:0).
SUBSAMPLINGS = {"jpeg": _SUBSAMPLING, "webp": ("4:2:0",), "avif": _SUBSAMPLING}
#: The block grid a mask is snapped to (see :func:`block_size`).
BLOCK = {"jpeg": 8, "webp": 16, "avif": 8}
_JPEG_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
#: The largest side each codec can code (JPEG: 16-bit dimensions; WebP: 14-bit; AVIF: libavif's
#: default limit of 16384 along a side is the practical one).
MAX_SIDE = {"jpeg": 65_500, "webp": 16_383, "avif": 16_384}


class CodecError(ValueError):
    """A codec that is unknown or not built into Pillow, bad settings, or an image it can't take."""


T = TypeVar("T")


def available_codecs() -> list[str]:
    """The codecs of :data:`PILLOW_CODECS` that this Pillow build can write."""
    return [c for c in PILLOW_CODECS if features.check(_PIL_FEATURE[c])]


def check_codec(codec: str) -> str:
    """Validate ``codec`` (case-insensitive) and return its canonical name."""
    name = str(codec).lower()
    if name == "jpg":
        name = "jpeg"
    if name not in PILLOW_CODECS:
        raise CodecError(f"codec must be one of {list(PILLOW_CODECS)}, got {codec!r}")
    if not features.check(_PIL_FEATURE[name]):
        raise CodecError(
            f"codec {name!r} is not available in this Pillow build (Pillow has: "
            f"{available_codecs()}); install a Pillow wheel built with it"
        )
    return name


def check_quality(quality: int) -> int:
    """Validate a quality setting: an integer in [1, 100] for every codec."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise CodecError(f"quality must be an integer in [1, 100], got {quality!r}")
    if not 1 <= int(quality) <= 100:
        raise CodecError(f"quality must be in [1, 100], got {quality}")
    return int(quality)


def check_subsampling(codec: str, subsampling: str | int) -> str:
    """Validate chroma subsampling ("4:4:4", "4:2:2", "4:2:0"; Pillow's 0/1/2 also accepted).

    WebP's lossy mode always codes 4:2:0 chroma, so it accepts only that (:data:`SUBSAMPLINGS`).
    """
    return check_subsampling_in(codec, subsampling, SUBSAMPLINGS[codec])


def check_subsampling_in(codec: str, subsampling: str | int, allowed: tuple[str, ...]) -> str:
    """Normalise ``subsampling`` and check that it is one of ``allowed`` for ``codec``."""
    if isinstance(subsampling, (int, np.integer)) and not isinstance(subsampling, bool):
        inverse = {v: k for k, v in _JPEG_SUBSAMPLING.items()}
        if int(subsampling) not in inverse:
            raise CodecError(f"subsampling must be 0, 1, 2 or one of {_SUBSAMPLING}")
        subsampling = inverse[int(subsampling)]
    if subsampling not in _SUBSAMPLING:
        raise CodecError(f"subsampling must be one of {_SUBSAMPLING}, got {subsampling!r}")
    if subsampling not in allowed:
        only = "lossy WebP always codes" if codec == "webp" else f"{codec} codes only"
        raise CodecError(f"subsampling {subsampling!r}: {only} {' or '.join(allowed)} chroma")
    return subsampling


def block_size(codec: str, subsampling: str = "4:2:0") -> int:
    """The side of the block grid a mask is snapped to for ``codec``.

    JPEG: 8, the luma DCT block, at every subsampling (with 4:2:0 a 16×16 MCU carries its chroma,
    so a mask edge on the 8-px grid can still fall inside a chroma block; pass ``block=16`` to
    :func:`nicebench.compression.compress` to snap to whole MCUs). WebP: 16, the VP8 macroblock.
    AVIF: 8, a common AV1 transform size (AV1 partitions adaptively from 128 down to 4 px).
    """
    check_subsampling(codec, subsampling)
    return BLOCK[codec]


def _check_array(arr: np.ndarray, codec: str) -> None:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise CodecError(
            f"images: {codec} takes uint8 [H,W,1] or [H,W,3] arrays (grey or RGB), got "
            f"{arr.dtype} {tuple(arr.shape)}"
        )
    h, w = arr.shape[:2]
    if min(h, w) < 1 or max(h, w) > MAX_SIDE[codec]:
        raise CodecError(f"images: {codec} codes sides of 1..{MAX_SIDE[codec]} px, got {h}×{w}")


def encode(arr: np.ndarray, codec: str, quality: int, subsampling: str = "4:2:0") -> bytes:
    """Encode one ``uint8 [H,W,C]`` image in memory; JPEG with ``optimize=True`` (Huffman tables).

    Arguments are assumed validated by :func:`check_codec` / :func:`check_quality` /
    :func:`check_subsampling`; the array is checked here.
    """
    _check_array(arr, codec)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    kw: dict = {"quality": int(quality)}
    if codec == "jpeg":
        kw["optimize"] = True
        if img.mode == "RGB":
            kw["subsampling"] = _JPEG_SUBSAMPLING[subsampling]
    elif codec == "avif":
        kw["subsampling"] = subsampling if img.mode == "RGB" else "4:0:0"
    buf = io.BytesIO()
    try:
        img.save(buf, format=_PIL_FORMAT[codec], **kw)
    except (OSError, ValueError) as exc:
        msg = f"images: {codec} could not encode a {img.mode} {img.size} image: {exc}"
        raise CodecError(msg) from exc
    return buf.getvalue()


def decode(data: bytes, channels: int) -> np.ndarray:
    """Decode an encoded image to ``uint8 [H,W,channels]``."""
    img = Image.open(io.BytesIO(data))
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def header_size(data: bytes, codec: str) -> int:
    """Bytes of ``data`` that are not coded image data, found by parsing the file.

    - JPEG: every marker segment (SOI, APPn, DQT, SOF, DHT, SOS headers, EOI) — all but the
      entropy-coded scan data. With ``optimize=True`` the Huffman tables are fitted to the image,
      so this is "fixed" per file rather than per setting (about 285 B at q75 4:2:0).
    - WebP: the RIFF header, chunk headers, any non-image chunk, and the 10-byte VP8 key-frame
      header (or the 5-byte VP8L header); the VP8 partitions count as payload.
    - AVIF: every ISOBMFF box (ftyp, meta, ...) and the mdat box header; the mdat payload (the AV1
      OBUs, including its ~12-byte sequence header) counts as payload.
    """
    if codec == "jpeg":
        return len(data) - _jpeg_scan_bytes(data)
    if codec == "webp":
        return _webp_header(data)
    if codec == "avif":
        return _avif_header(data)
    raise CodecError(f"codec must be one of {list(PILLOW_CODECS)}, got {codec!r}")


def _jpeg_scan_bytes(data: bytes) -> int:
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
                if data[pos] == 0xFF and data[pos + 1] != 0 and not 0xD0 <= data[pos + 1] <= 0xD7:
                    break
                pos += 1
            scan += pos - start
    return scan


def _webp_header(data: bytes) -> int:
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


def _avif_header(data: bytes) -> int:
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


@dataclass
class Coded:
    """A batch encoded with one codec setting: the streams, their sizes and the decoded images."""

    streams: list[bytes]
    nbytes: np.ndarray  # int64 [B]
    header: np.ndarray  # int64 [B], bytes that are not coded image data
    decoded: np.ndarray  # uint8 [B,H,W,C]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float ``[B,C,H,W]`` in [0,1] → ``uint8 [B,H,W,C]`` (round half up), checking the input."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CodecError(f"images must be a float [B,C,H,W] tensor in [0, 1], got {shape}")
    if images.shape[1] not in (1, 3):
        raise CodecError(
            f"images: the codecs take 1 (grey) or 3 (RGB) channels, got {images.shape[1]}"
        )
    if images.shape[0] == 0:
        raise CodecError("images: empty batch")
    if images.dtype == torch.uint8:
        return images.permute(0, 2, 3, 1).cpu().numpy()
    if not torch.isfinite(images).all():
        raise CodecError("images contain NaN or infinite values")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise CodecError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    arr = (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def codec_threads() -> int:
    """Threads that encode and decode a batch: ``NICEBENCH_CODEC_THREADS``, else the CPUs this
    process may use (at most 8). Pillow releases the GIL while it codes, so threads scale."""
    env = os.environ.get("NICEBENCH_CODEC_THREADS", "")
    if env.strip():
        return max(1, int(env))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(codec_threads(), thread_name_prefix="nicebench-codec")
        return _POOL


def map_images(fn: Callable[[Any], T], items: Sequence[Any], parallel: bool = True) -> list[T]:
    """``[fn(item) for item in items]``, on the shared codec thread pool (:func:`codec_threads`)
    when ``parallel`` and there is more than one item and thread (``fn`` must be thread-safe:
    Pillow's coders are). The order, and so the result, is the same either way."""
    if parallel and len(items) > 1 and codec_threads() > 1:
        return list(_pool().map(fn, items, chunksize=1))
    return [fn(item) for item in items]


def code_batch(
    arr: np.ndarray,
    encode_one: Callable[[np.ndarray], bytes],
    decode_one: Callable[[bytes, int], np.ndarray],
    header_of: Callable[[bytes], int],
    parallel: bool = False,
) -> Coded:
    """Encode and decode every image of ``uint8 [B,H,W,C]`` with the given per-image functions;
    ``parallel``: on a shared thread pool (:func:`codec_threads`), for thread-safe codecs. The
    result is the same either way."""
    channels = arr.shape[-1]

    def one(a: np.ndarray) -> tuple[bytes, np.ndarray]:
        data = encode_one(a)
        return data, decode_one(data, channels)

    done = map_images(one, arr, parallel)
    streams = [d[0] for d in done]
    decoded = np.stack([d[1] for d in done])
    return Coded(
        streams=streams,
        nbytes=np.array([len(s) for s in streams], dtype=np.int64),
        header=np.array([header_of(s) for s in streams], dtype=np.int64),
        decoded=decoded,
    )


def roundtrip(arr: np.ndarray, codec: str, quality: int, subsampling: str = "4:2:0") -> Coded:
    """Encode and decode every image of ``uint8 [B,H,W,C]`` (one Pillow call per image)."""
    return code_batch(
        arr, lambda a: encode(a, codec, quality, subsampling), decode,
        lambda s: header_size(s, codec), parallel=True,
    )  # fmt: skip
