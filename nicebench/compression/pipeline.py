"""``compress``: saliency-driven mixed-resolution images coded with a real codec (docs/design.md §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..codec import Codec, Coded, as_codec, check_quality, to_uint8
from .mixed import MaskError, as_map, low_resolution, mix, snap_mask, topk_mask
from .rate import image_quality

__all__ = ["CompressionResult", "compress"]


@dataclass
class CompressionResult:
    """What :func:`compress` returns; per-image arrays have length B.

    ``nbytes`` are the encoded sizes, ``ref_nbytes`` those of the reference (the original with the
    same codec settings), ``header``/``ref_header`` the bytes that are not coded image data
    (the codec's :meth:`~nicebench.Codec.header_size`). ``decoded``, ``reference`` and ``mixed``
    (the image before coding) are float ``[B,C,H,W]`` in [0,1] on the input's device; ``mask`` is
    the bool ``[B,1,H,W]`` mask used. ``psnr``/``ssim`` compare the decoded image with the original,
    ``psnr_mask``/``ssim_mask`` the same inside the mask.
    """

    nbytes: np.ndarray
    ref_nbytes: np.ndarray
    header: np.ndarray
    ref_header: np.ndarray
    decoded: torch.Tensor
    reference: torch.Tensor
    mixed: torch.Tensor
    mask: torch.Tensor
    psnr: np.ndarray
    ssim: np.ndarray
    psnr_mask: np.ndarray
    ssim_mask: np.ndarray
    streams: list[bytes] = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return int(self.mask.shape[-2] * self.mask.shape[-1])

    @property
    def ratio(self) -> np.ndarray:
        """Per-image bytes / reference bytes."""
        return self.nbytes / self.ref_nbytes

    @property
    def payload_ratio(self) -> np.ndarray:
        """Per-image ratio with the header left out of both files."""
        return (self.nbytes - self.header) / (self.ref_nbytes - self.ref_header)

    @property
    def bpp(self) -> np.ndarray:
        """8 · bytes / (H·W)."""
        return 8.0 * self.nbytes / self.pixels

    @property
    def bpp_payload(self) -> np.ndarray:
        """bpp with the header left out."""
        return 8.0 * (self.nbytes - self.header) / self.pixels

    @property
    def area(self) -> np.ndarray:
        """Share of pixels kept sharp, per image."""
        return self.mask.flatten(1).float().mean(1).cpu().numpy()

    @property
    def total_ratio(self) -> float:
        """Σ bytes / Σ reference bytes over the batch."""
        return float(self.nbytes.sum() / self.ref_nbytes.sum())

    def to_frame(self) -> pd.DataFrame:
        """One row per image with every figure."""
        return pd.DataFrame(
            {
                "bytes": self.nbytes,
                "ref_bytes": self.ref_nbytes,
                "header_bytes": self.header,
                "ref_header_bytes": self.ref_header,
                "payload_bytes": self.nbytes - self.header,
                "ref_payload_bytes": self.ref_nbytes - self.ref_header,
                "ratio": self.ratio,
                "payload_ratio": self.payload_ratio,
                "bpp": self.bpp,
                "bpp_payload": self.bpp_payload,
                "area": self.area,
                "psnr": self.psnr,
                "ssim": self.ssim,
                "psnr_mask": self.psnr_mask,
                "ssim_mask": self.ssim_mask,
            }
        )


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer ≥ {lo}, got {value!r}")
    return int(value)


def compress(
    images: torch.Tensor,
    saliency_or_mask: torch.Tensor,
    keep: float = 0.2,
    codec: str | Codec = "jpeg",
    quality: int = 75,
    factor: int = 4,
    dilate: int = 0,
    subsampling: str = "4:2:0",
    block: int | None = None,
    seed: int = 0,
    upsample: str = "auto",
    allow_empty: bool = False,
    reference: Coded | None = None,
    first_image: int = 0,
) -> CompressionResult:
    """Code ``images`` as mixed-resolution images driven by a saliency map or a mask (docs/design.md §6).

    - ``images``: float ``[B,C,H,W]`` in [0,1], C = 1 or 3.
    - ``saliency_or_mask``: a bool ``[B,1,H,W]`` mask, used as is (snapped to the block grid), or a
      float map (higher = more important) of which the top ``keep`` share of blocks is kept.
    - ``codec``/``quality``/``subsampling``: a registered codec's name (JPEG: libjpeg-turbo through
      Pillow, optimize=True) or a :class:`nicebench.Codec` instance (which carries its own
      subsampling); the reference is the original coded with the same settings.
    - ``factor``: the background is downsampled by it (area filter) and brought back up
      (``upsample="auto"``: bilinear below 8, nearest from 8; or force "bilinear"/"nearest").
      ``dilate``: grow the mask by this many blocks.
    - ``block``: the snapping grid, by default the codec's ``block`` (8 for JPEG).
    - ``seed``: breaks ties in the top-``keep`` ranking; ``first_image``: the global index of the
      first image (a shard's start), so each image's tie-break is its own. ``reference``: a :class:`Coded` of the same
      images with the same settings, to reuse it across operating points.
    - ``allow_empty``: an empty bool mask is an error by default (usually a mistake); with True it
      codes that image wholly at low resolution (a gate mask that closed every gate).
    """
    coder = as_codec(codec, subsampling)
    quality = check_quality(quality)
    factor = _check_int("factor", factor, 1)
    dilate = _check_int("dilate", dilate, 0)
    block = coder.block if block is None else _check_int("block", block, 1)
    arr = to_uint8(images)
    smap = as_map(saliency_or_mask, images)
    x = torch.from_numpy(arr).to(images.device).permute(0, 3, 1, 2).float().div_(255)
    if smap.dtype == torch.bool:
        empty = (~smap.flatten(1).any(1)).nonzero().flatten().tolist()
        if empty and not allow_empty:
            raise MaskError(
                f"saliency_or_mask is empty (no pixel set) for image(s) {empty[:10]}; pass a mask "
                "with at least one pixel, or pass the float saliency map with keep=<share> to "
                "keep its top blocks (to code the whole image at lower fidelity, lower quality)"
            )
        mask = snap_mask(smap, block, dilate)
    else:
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise MaskError(f"keep must be a share in (0, 1], got {keep!r}")
        mask = topk_mask(smap, float(keep), block, dilate, seed=seed, first_image=first_image)
    mixed = mix(x, mask, low_resolution(x, factor, upsample))
    mixed_u8 = to_uint8(mixed)
    coded = coder.roundtrip(mixed_u8, quality)
    if reference is None:
        reference = coder.roundtrip(arr, quality)
    elif len(reference.nbytes) != len(arr) or reference.decoded.shape != arr.shape:
        raise ValueError("reference: a Coded of other images; leave it None to code the originals")
    q = image_quality(arr, coded.decoded, mask[:, 0].cpu().numpy())

    def back(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255).to(images.device)

    return CompressionResult(
        nbytes=coded.nbytes,
        ref_nbytes=reference.nbytes,
        header=coded.header,
        ref_header=reference.header,
        decoded=back(coded.decoded),
        reference=back(reference.decoded),
        mixed=back(mixed_u8),
        mask=mask,
        psnr=q["psnr"],
        ssim=q["ssim"],
        psnr_mask=q["psnr_mask"],
        ssim_mask=q["ssim_mask"],
        streams=coded.streams,
        settings={
            "codec": coder.name,
            "quality": quality,
            "subsampling": coder.subsampling,
            "factor": factor,
            "upsample": upsample,
            "dilate": dilate,
            "block": block,
            "keep": None if smap.dtype == torch.bool else float(keep),
        },
    )
