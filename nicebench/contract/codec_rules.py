"""The codec contract: what every :class:`nicebench.Codec` plugin must do, rule by rule."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from ..codec import Codec, CodecError
from .rules import Broken, RuleBook, plugin_name, require

__all__ = ["CODEC_RULES", "CodecCase", "textured"]

QUALITIES = (10, 50, 90)  # coded per test image, in this order
BAD_QUALITIES = (0, 101, 50.5)


def textured(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A ``uint8 [H,W,C]`` test image: a colour gradient under seeded noise (hard to code)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)[..., :channels]
    return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)


class CodecCase:
    """A codec class built with ``params``, and seeded textured RGB and grey test images."""

    def __init__(self, cls: Any, params: dict[str, Any] | None):
        self.cls, self.params = cls, params or {}
        self.name = plugin_name(cls)
        # channels → one test image, and a batch of two images for roundtrip
        self.images = {c: textured(48, 40, c, seed=c) for c in (3, 1)}
        self.batches = {
            c: np.stack([image, textured(48, 40, c, seed=7)]) for c, image in self.images.items()
        }

    @cached_property
    def codec(self) -> Codec:
        return self.cls(**self.params)

    @cached_property
    def streams(self) -> dict[int, list[bytes]]:
        """channels → the test image encoded at each of :data:`QUALITIES`."""
        return {c: [self.codec.encode(a, q) for q in QUALITIES] for c, a in self.images.items()}


_book = RuleBook()


@_book.rule("is-codec", "subclass nicebench.Codec")
def _is_codec(case: CodecCase) -> None:
    require(
        isinstance(case.cls, type) and issubclass(case.cls, Codec), "must subclass nicebench.Codec"
    )


@_book.rule("block-is-positive-int", "block (the codec's block size in pixels) is a positive int")
def _block_is_positive_int(case: CodecCase) -> None:
    block = case.cls.block
    require(isinstance(block, int) and block > 0, "block must be a positive int")


@_book.rule("subsamplings-not-empty", "subsamplings is a non-empty tuple")
def _subsamplings_not_empty(case: CodecCase) -> None:
    subs = case.cls.subsamplings
    require(isinstance(subs, tuple) and len(subs) > 0, "subsamplings must be a non-empty tuple")


@_book.rule("encode-gives-bytes", "encode(image, quality) returns non-empty bytes")
def _encode_gives_bytes(case: CodecCase) -> None:
    for data in (d for streams in case.streams.values() for d in streams):
        require(
            isinstance(data, bytes) and len(data) > 0,
            f"encode must return non-empty bytes, got {type(data).__name__}",
        )


@_book.rule("decode-gives-uint8", "decode(data, channels) gives back the uint8 [H,W,C] image")
def _decode_gives_uint8(case: CodecCase) -> None:
    for channels, streams in case.streams.items():
        shape = case.images[channels].shape
        for data in streams:
            dec = case.codec.decode(data, channels)
            got = f"{getattr(dec, 'dtype', type(dec).__name__)} {getattr(dec, 'shape', '')}"
            require(
                isinstance(dec, np.ndarray) and dec.dtype == np.uint8 and dec.shape == shape,
                f"decode must give back uint8 {shape}, got {got}",
            )


@_book.rule("header-size-in-range", "header_size(data) is an int in [0, len(data))")
def _header_size_in_range(case: CodecCase) -> None:
    for data in (d for streams in case.streams.values() for d in streams):
        head = case.codec.header_size(data)
        require(
            isinstance(head, (int, np.integer)) and 0 <= head < len(data),
            f"header_size must be an int in [0, {len(data)}), got {head!r}",
        )


@_book.rule("quality-monotone", "a higher quality gives no fewer bytes")
def _quality_monotone(case: CodecCase) -> None:
    for streams in case.streams.values():
        sizes = [len(d) for d in streams]
        require(
            sizes == sorted(sizes),
            f"a higher quality must not give fewer bytes (q10, q50, q90: {sizes})",
        )


@_book.rule(
    "roundtrip-agrees",
    "roundtrip(batch, quality) gives the streams, sizes, headers and decoded images of "
    "encode, header_size and decode",
)
def _roundtrip_agrees(case: CodecCase) -> None:
    codec = case.codec
    for channels, batch in case.batches.items():
        coded = codec.roundtrip(batch, 50)
        streams = [codec.encode(a, 50) for a in batch]
        require(
            coded.streams == streams and coded.nbytes.tolist() == [len(s) for s in streams],
            "roundtrip's streams and nbytes must be those of encode",
        )
        require(
            coded.header.tolist() == [codec.header_size(s) for s in streams],
            "roundtrip's header must be header_size of its streams",
        )
        require(
            coded.decoded.shape == batch.shape
            and coded.decoded.dtype == np.uint8
            and np.array_equal(coded.decoded[0], codec.decode(streams[0], channels)),
            "roundtrip's decoded images must be decode of its streams",
        )


def _raises_codec_error(what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except CodecError:
        return
    except Exception as exc:  # any other error breaks the contract too
        raise Broken(f"{what} must raise CodecError, raised {type(exc).__name__}: {exc}") from exc
    raise Broken(f"{what} must raise CodecError")


@_book.rule(
    "bad-quality-rejected",
    "a quality outside [1, 100] or not an int raises CodecError, in the constructor "
    "and in roundtrip",
)
def _bad_quality_rejected(case: CodecCase) -> None:
    for bad in BAD_QUALITIES:
        _raises_codec_error(
            f"quality {bad!r} in the constructor", case.cls, **{**case.params, "qualities": (bad,)}
        )
        _raises_codec_error(
            f"quality {bad!r} in roundtrip", case.codec.roundtrip, case.batches[1], bad
        )


CODEC_RULES = tuple(_book.rules)
