"""What every codec shares, whatever its format: the :class:`Codec` base class, :class:`CodecError`,
the default quality sweep :data:`SWEEP`, quality and subsampling checks, the uint8 conversion of
tensors and the thread pool that codes a batch.

The built-in formats (one class per format) and the public face of the codec kind are in
:mod:`nicebench.codec`; this module knows no format and imports nothing of nicebench, so every
layer that codes (the compression track, the classifier's augmentation, NICE) can stand on it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

__all__ = [
    "Codec",
    "CodecError",
    "SWEEP",
    "SUBSAMPLINGS",
    "Coded",
    "check_quality",
    "check_subsampling",
    "to_uint8",
    "from_uint8",
    "roundtrip_tensor",
    "code_batch",
    "map_images",
    "codec_threads",
]

#: A codec's default quality sweep: its own rate–accuracy curve, the whole image at each quality.
SWEEP = tuple(range(5, 96, 5))
#: The chroma subsamplings, in the order of Pillow's JPEG codes 0, 1, 2.
SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")

T = TypeVar("T")


class CodecError(ValueError):
    """A codec that is unknown or not available here, bad settings, or an image it can't take."""


def check_quality(quality: int) -> int:
    """Validate a quality setting: an integer in [1, 100] for every codec."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise CodecError(f"quality must be an integer in [1, 100], got {quality!r}")
    if not 1 <= int(quality) <= 100:
        raise CodecError(f"quality must be in [1, 100], got {quality}")
    return int(quality)


def check_subsampling(name: str, subsampling: str | int, allowed: Sequence[str]) -> str:
    """``subsampling`` ("4:4:4", "4:2:2", "4:2:0"; Pillow's codes 0/1/2 also accepted) as a
    string, checked to be one of ``allowed``, the subsamplings the codec ``name`` codes."""
    if isinstance(subsampling, (int, np.integer)) and not isinstance(subsampling, bool):
        if not 0 <= int(subsampling) < len(SUBSAMPLINGS):
            raise CodecError(f"subsampling must be 0, 1, 2 or one of {SUBSAMPLINGS}")
        subsampling = SUBSAMPLINGS[int(subsampling)]
    if subsampling not in SUBSAMPLINGS:
        raise CodecError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")
    if subsampling not in allowed:
        raise CodecError(
            f"subsampling {subsampling!r}: {name} codes only {' or '.join(allowed)} chroma; "
            "pass one of those"
        )
    return subsampling


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


def from_uint8(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``uint8 [B,H,W,C]`` → ``[B,C,H,W]`` in [0,1] on ``like``'s device, in its dtype when that
    is a floating-point one (float32 otherwise)."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    out = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255)
    return out.to(like.device, dtype)


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
    :meth:`roundtrip` codes a batch with them, :meth:`roundtrip_tensor` a float tensor. Bad
    settings or images raise :class:`CodecError`.
    """

    block: ClassVar[int] = 8
    subsamplings: ClassVar[tuple[str, ...]] = SUBSAMPLINGS
    registered_name: ClassVar[str] = ""
    #: whether :meth:`encode`/:meth:`decode` may run on several threads at once (then
    #: :meth:`roundtrip` codes a batch on a thread pool); a plugin opts in.
    thread_safe: ClassVar[bool] = False

    def __init__(self, *, qualities: Iterable[int] = SWEEP, subsampling: str | int = "4:2:0"):
        self.check_available()
        self.qualities = tuple(check_quality(q) for q in qualities)
        if not self.qualities:
            raise CodecError(f"{self.name}: qualities must name at least one quality")
        self.subsampling = check_subsampling(self.name, subsampling, self.subsamplings)

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
        return code_batch(
            arr,
            lambda a: self.encode(a, quality),
            self.decode,
            self.header_size,
            parallel=self.thread_safe,
        )

    def roundtrip_tensor(
        self, images: torch.Tensor, quality: int | Sequence[int] | np.ndarray
    ) -> torch.Tensor:
        """Float ``[B,C,H,W]`` images in [0,1] (clamped) → the same images coded and decoded, on
        the input's device (:func:`from_uint8`); ``quality``: one for all, or one per image.
        :func:`roundtrip_tensor` with this codec for every image."""
        return roundtrip_tensor(images, [self] * len(images), quality)


def roundtrip_tensor(
    images: torch.Tensor, codecs: Sequence[Codec], quality: int | Sequence[int] | np.ndarray
) -> torch.Tensor:
    """Float ``[B,C,H,W]`` images in [0,1] (clamped) → each image coded and decoded by its codec
    of ``codecs`` at its ``quality`` (one for all, or one per image), on the input's device.

    The one tensor-level round trip of nicebench: the classifier's JPEG augmentation (a JPEG codec
    per image's subsampling) and NICE's codec in the loop both code through it, on the codec
    thread pool when every codec is thread-safe (the result does not depend on it).
    """
    arr = to_uint8(images.clamp(0, 1))
    b, channels = arr.shape[0], arr.shape[-1]
    if len(codecs) != b:
        raise CodecError(f"codecs: one codec per image, got {len(codecs)} for {b} images")
    qualities = [check_quality(q) for q in np.broadcast_to(np.asarray(quality), (b,))]

    def one(i: int) -> np.ndarray:
        return codecs[i].decode(codecs[i].encode(arr[i], qualities[i]), channels)

    parallel = all(c.thread_safe for c in codecs)
    return from_uint8(np.stack(map_images(one, range(b), parallel)), images)
