"""A counter-based uniform generator that PyTorch and a Triton kernel evaluate bit-identically.

``u(seed, offset, index)`` hashes three integers with Chris Wellons' ``lowbias32`` integer hash
(two multiply–xorshift rounds on 32-bit words) and maps the top 23 bits of the result to the open
interval (0, 1): ``u = (k + 0.5) / 2**23``, ``k ∈ [0, 2**23)``, so ``u ∈ [2**-24, 1 − 2**-24]`` is
never exactly 0 or 1 and is exact in float32. The 32-bit arithmetic is emulated in int64 with
masking (each 32×32-bit product is split into 16-bit halves so no int64 product overflows), so the
same code runs on CPU and CUDA tensors and, in :mod:`nicebench.gates.fused`, inside a Triton
kernel (where the formulas are repeated with ``tl`` ops; the tests check they agree bit for bit).

No state: noise for gate ``index`` of image ``seed`` at step ``offset`` is a pure function, so it
does not depend on batch composition, device or evaluation order.
"""

from __future__ import annotations

import torch

__all__ = ["MASK32", "HASH_M1", "HASH_M2", "SALT", "hash32", "uniform", "content_seed"]

MASK32 = 0xFFFFFFFF
HASH_M1 = 0x7FEB352D
HASH_M2 = 0x846CA68B
SALT = (0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F)  # one per hashed word
_INV_2_23 = 1.0 / (1 << 23)


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """``(a · c) mod 2**32`` for ``a`` in [0, 2**32) (int64) and a 32-bit constant ``c``."""
    lo, hi = c & 0xFFFF, c >> 16
    return (a * lo + (((a * hi) & 0xFFFF) << 16)) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` of the low 32 bits of an int64 tensor; values in [0, 2**32)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, HASH_M1)
    x = x ^ (x >> 15)
    x = _mul32(x, HASH_M2)
    return x ^ (x >> 16)


def _key(seed: torch.Tensor, offset: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    h = hash32(index + SALT[0])
    h = hash32((h ^ (offset & MASK32)) + SALT[1])
    h = hash32((h ^ (seed & MASK32)) + SALT[2])
    return hash32((h ^ ((seed >> 32) & MASK32)) + SALT[3])


def uniform(
    seed: torch.Tensor | int, offset: torch.Tensor | int, index: torch.Tensor | int
) -> torch.Tensor:
    """Uniform noise in (0, 1), float32, broadcast over the three int64 arguments.

    ``seed`` may use all 64 bits (``seed >= 0``); ``offset`` and ``index`` use their low 32 bits.
    """
    tensors = [a for a in (seed, offset, index) if isinstance(a, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    seed, offset, index = (
        torch.as_tensor(a, dtype=torch.int64, device=device) for a in (seed, offset, index)
    )
    k = _key(seed, offset, index) >> 9
    return (k.to(torch.float32) + 0.5) * _INV_2_23


def content_seed(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A 63-bit seed per image from its content (8-bit quantised) and ``seed``: int64 ``[B]``.

    Index-free, so the noise an image gets does not depend on the batch it is in.
    """
    q = (images.detach().float().clamp(0, 1) * 255).round().to(torch.int64).flatten(1)
    pos = torch.arange(q.shape[1], device=q.device, dtype=torch.int64)
    # 23-bit weights times q+1 <= 256: each term < 2**31, so sums of < 2**32 terms fit in int64
    h1 = ((q + 1) * (hash32(pos + SALT[0]) >> 9)).sum(1)
    h2 = ((q + 1) * (hash32(pos + SALT[1]) >> 9)).sum(1)
    s = torch.as_tensor(int(seed) & ((1 << 63) - 1), dtype=torch.int64, device=q.device)
    lo = hash32(hash32(h1 ^ (h1 >> 32)) ^ hash32(s & MASK32))
    hi = hash32(hash32(h2 ^ (h2 >> 32)) ^ hash32(s >> 32)) & 0x7FFFFFFF
    return (hi << 32) | lo
