"""``jpeg2000``: JPEG 2000 (OpenJPEG through Pillow), lossy, at a target PSNR per quality step."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from nicebench import SWEEP, Codec, CodecError
from PIL import Image, features

SOT = b"\xff\x90"  # start of the first tile: everything before it is the main header


class Jpeg2000(Codec):
    """JPEG 2000 (9/7 wavelet, raw J2K codestream) at a PSNR of 15 + 0.4·quality dB."""

    block = 8  # no block grid of its own; masks are snapped to 8 px like JPEG's
    subsamplings = ("4:4:4",)  # colour goes through the component transform, not subsampled

    def __init__(self, *, qualities: Iterable[int] = SWEEP, subsampling: str = "4:4:4"):
        super().__init__(qualities=qualities, subsampling=subsampling)

    def check_available(self) -> None:
        if not features.check("jpg_2000"):
            raise CodecError("jpeg2000: this Pillow build has no OpenJPEG")

    @staticmethod
    def target_psnr(quality: int) -> float:
        """The rate-control target of a quality in [1, 100]: 15.4 dB at 1, 55 dB at 100."""
        return 15.0 + 0.4 * quality

    def encode(self, arr: np.ndarray, quality: int) -> bytes:
        image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        buf = io.BytesIO()
        image.save(
            buf,
            format="JPEG2000",
            no_jp2=True,
            irreversible=True,
            quality_mode="dB",
            quality_layers=[self.target_psnr(quality)],
        )
        return buf.getvalue()

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        image = image.convert("L" if channels == 1 else "RGB")
        return np.asarray(image).reshape(image.size[1], image.size[0], channels)

    def header_size(self, data: bytes) -> int:
        at = data.find(SOT)
        return at if at > 0 else 0
