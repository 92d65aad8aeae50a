"""The NICE gate step, fused: one Triton kernel forward, one backward, and the PyTorch reference.

One gate step takes per-image cell logits ``log_alpha`` ``[B,1,h,w]`` (cells of ``cell``×``cell``
pixels, ``h = ceil(H/cell)``), images ``x`` and reference images ``r`` (``[B,C,H,W]`` or anything
that broadcasts to it, e.g. a mean colour ``[1,C,1,1]``), an int64 seed per image and a counter
``offset``, and returns for ``samples`` hard-concrete samples per image

- ``x_tilde`` ``[samples·B, C, H, W]`` (sample-major): ``z⊙x + (1−z)⊙r``, ``z`` the gate sample on the
  cell grid upsampled (nearest); sample ``j`` of image ``i`` uses the noise
  ``rng.uniform(seeds[i], offset + j, cell_index)``,
- ``l0`` ``[B]``: mean expected L0 over the cells (deterministic, no noise),
- ``tv`` ``[B]``: total variation of the sampled mask (mean |Δ| over neighbouring cells, as in
  :func:`~nicebench.gates.hard_concrete.total_variation`), averaged over the samples,

all differentiable in ``log_alpha`` (and in ``x`` and ``r``). :func:`gate_step_reference` composes
:mod:`~nicebench.gates.hard_concrete` ops; :func:`gate_step_triton` computes the same in one kernel
launch each way (no intermediate mask tensors; the backward recomputes the noise from the counter).
:func:`gate_step` dispatches: the kernel on CUDA, the reference elsewhere, unless the environment
variable ``NICEBENCH_GATE_IMPL`` (``triton`` | ``reference`` | ``auto``) forces one. The kernel runs
on CPU tensors only under ``TRITON_INTERPRET=1`` (set before this module is imported).
"""

from __future__ import annotations

import math
import os

import torch

from . import hard_concrete as hc
from . import rng

__all__ = [
    "HAS_TRITON",
    "gate_step",
    "gate_step_reference",
    "gate_step_triton",
    "resolve_impl",
    "triton_usable",
]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAS_TRITON = False
if torch.cuda.is_available() or _INTERPRET or os.environ.get("NICEBENCH_GATE_IMPL") == "triton":
    try:
        import triton
        import triton.language as tl

        HAS_TRITON = True
    except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
        HAS_TRITON = False

_LOG_L0_SHIFT = math.log(-hc.GAMMA / hc.ZETA)  # expected L0 = σ(log α − β·this)


def _grid_shape(height: int, width: int, cell: int) -> tuple[int, int]:
    return -(-height // cell), -(-width // cell)


def _check(log_alpha: torch.Tensor, x: torch.Tensor, cell: int) -> tuple[int, int]:
    if x.dim() != 4 or log_alpha.dim() != 4 or log_alpha.shape[1] != 1:
        raise ValueError(
            f"gate_step: want log_alpha [B,1,h,w] and x [B,C,H,W], got "
            f"{tuple(log_alpha.shape)} and {tuple(x.shape)}"
        )
    h, w = _grid_shape(x.shape[2], x.shape[3], cell)
    if tuple(log_alpha.shape) != (x.shape[0], 1, h, w):
        raise ValueError(
            f"gate_step: log_alpha {tuple(log_alpha.shape)} does not match images "
            f"{tuple(x.shape)} with cell {cell} (want [{x.shape[0]},1,{h},{w}])"
        )
    return h, w


# ------------------------------------------------------------------------------------------------
# Reference
# ------------------------------------------------------------------------------------------------


def gate_noise(seeds: torch.Tensor, offset: int, samples: int, h: int, w: int) -> torch.Tensor:
    """The uniform noise of a gate step: float32 ``[samples, B, 1, h, w]``."""
    dev = seeds.device
    offs = offset + torch.arange(samples, device=dev, dtype=torch.int64)
    idx = torch.arange(h * w, device=dev, dtype=torch.int64)
    u = rng.uniform(seeds.view(1, -1, 1), offs.view(-1, 1, 1), idx.view(1, 1, -1))
    return u.view(samples, -1, 1, h, w)


def gate_step_reference(
    log_alpha: torch.Tensor,
    x: torch.Tensor,
    r: torch.Tensor,
    seeds: torch.Tensor,
    offset: int = 0,
    *,
    cell: int = 1,
    samples: int = 1,
    beta: float = hc.BETA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gate step in plain PyTorch ops (autograd does the backward); see the module doc."""
    h, w = _check(log_alpha, x, cell)
    b, c, height, width = x.shape
    u = gate_noise(seeds, offset, samples, h, w)
    z = hc.sample(log_alpha.unsqueeze(0).expand(samples, -1, -1, -1, -1), u=u, beta=beta)
    zz = z.reshape(samples * b, 1, h, w)
    zu = hc.upsample_cells(zz, cell, (height, width)).view(samples, b, 1, height, width)
    out = (zu * x + (1 - zu) * r).reshape(samples * b, c, height, width)
    l0 = hc.expected_l0(log_alpha, beta=beta).flatten(1).mean(1)
    tv = hc.total_variation(zz).view(samples, b).mean(0)
    return out, l0, tv


# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _mul32(a, c: tl.constexpr):
        # (a * c) mod 2**32 for int64 a in [0, 2**32): 16-bit halves keep products below 2**48
        return (a * (c & 0xFFFF) + (((a * (c >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF

    @triton.jit
    def _hash32(x):
        x = x & 0xFFFFFFFF
        x = x ^ (x >> 16)
        x = _mul32(x, 0x7FEB352D)
        x = x ^ (x >> 15)
        x = _mul32(x, 0x846CA68B)
        return x ^ (x >> 16)

    @triton.jit
    def _uniform(seed, offset, index):
        # rng.uniform, bit for bit (the arithmetic is int64)
        seed = seed.to(tl.int64)
        offset = offset.to(tl.int64)
        h = _hash32(index.to(tl.int64) + 0x9E3779B9)
        h = _hash32((h ^ (offset & 0xFFFFFFFF)) + 0x85EBCA6B)
        h = _hash32((h ^ (seed & 0xFFFFFFFF)) + 0xC2B2AE35)
        h = _hash32((h ^ ((seed >> 32) & 0xFFFFFFFF)) + 0x27D4EB2F)
        k = (h >> 9).to(tl.float32)
        return (k + 0.5) * 1.1920928955078125e-07  # 2**-23

    @triton.jit
    def _gate(la, seed, offset, index, beta, eps):
        # hard-concrete sample z and dz/dlog α of the gates at cell ``index``
        u = _uniform(seed, offset, index)
        u = tl.minimum(tl.maximum(u, eps), 1.0 - eps)
        s = tl.sigmoid((tl.log(u) - tl.log(1.0 - u) + la) / beta)
        zs = s * 1.2 - 0.1  # s·(ζ−γ)+γ
        z = tl.minimum(tl.maximum(zs, 0.0), 1.0)
        inside = (zs >= 0.0) & (zs <= 1.0)
        dz = tl.where(inside, 1.2 * s * (1.0 - s) / beta, 0.0)
        return z, dz

    @triton.jit
    def _sign(d):
        return tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))

    @triton.jit
    def _fwd_kernel(
        la_ptr,
        seed_ptr,
        x_ptr,
        r_ptr,
        out_ptr,
        part_ptr,
        offset,
        B,
        C,
        H,
        W,
        h,
        w,
        cell,
        beta,
        eps,
        l0_shift,
        sxb,
        sxc,
        sxh,
        sxw,
        srb,
        src,
        srh,
        srw,
        sob,
        soc,
        soh,
        sow,
        CELL_P: tl.constexpr,
        BLOCK_W: tl.constexpr,
    ):
        # program: (sample·B + image, cell row, block of BLOCK_W pixel columns)
        pid = tl.program_id(0)
        ci = tl.program_id(1)
        pj = tl.program_id(2)
        b = (pid % B).to(tl.int64)
        smp = (pid // B).to(tl.int64)
        seed = tl.load(seed_ptr + b)
        off = offset + smp
        cols = pj * BLOCK_W + tl.arange(0, BLOCK_W)
        cmask = cols < W
        cj = cols // cell
        cidx = (ci * w + cj).to(tl.int64)
        la = tl.load(la_ptr + b * h * w + cidx, mask=cmask, other=0.0)
        z, _ = _gate(la, seed, off, cidx, beta, eps)

        # cell terms, counted once per cell (at its first pixel column)
        first = cmask & (cols % cell == 0)
        l0 = tl.sum(tl.where(first, tl.sigmoid(la - beta * l0_shift), 0.0), axis=0)
        right = first & (cj + 1 < w)
        la_r = tl.load(la_ptr + b * h * w + cidx + 1, mask=right, other=0.0)
        z_r, _ = _gate(la_r, seed, off, cidx + 1, beta, eps)
        down = first & (ci + 1 < h)
        la_d = tl.load(la_ptr + b * h * w + cidx + w, mask=down, other=0.0)
        z_d, _ = _gate(la_d, seed, off, cidx + w, beta, eps)
        tv = tl.sum(
            tl.where(right, tl.abs(z_r - z), 0.0) + tl.where(down, tl.abs(z_d - z), 0.0), axis=0
        )
        part = part_ptr + ((pid * h + ci) * tl.num_programs(2) + pj) * 2
        tl.store(part, l0)
        tl.store(part + 1, tv)

        # composite the pixels of this cell row
        rows = ci * cell + tl.arange(0, CELL_P)
        pmask = ((tl.arange(0, CELL_P) < cell) & (rows < H))[:, None] & cmask[None, :]
        zz = z[None, :]
        xo = x_ptr + b * sxb + rows[:, None] * sxh + cols[None, :] * sxw
        ro = r_ptr + b * srb + rows[:, None] * srh + cols[None, :] * srw
        oo = out_ptr + pid.to(tl.int64) * sob + rows[:, None] * soh + cols[None, :] * sow
        for c in range(C):
            xv = tl.load(xo + c * sxc, mask=pmask, other=0.0)
            rv = tl.load(ro + c * src, mask=pmask, other=0.0)
            tl.store(oo + c * soc, zz * xv + (1.0 - zz) * rv, mask=pmask)

    @triton.jit
    def _bwd_kernel(
        la_ptr,
        seed_ptr,
        x_ptr,
        r_ptr,
        g_ptr,
        gl0_ptr,
        gtv_ptr,
        dla_ptr,
        dx_ptr,
        dr_ptr,
        offset,
        samples,
        B,
        C,
        H,
        W,
        h,
        w,
        cell,
        beta,
        eps,
        l0_shift,
        l0_scale,
        tv_scale,
        sxb,
        sxc,
        sxh,
        sxw,
        srb,
        src,
        srh,
        srw,
        sgs,
        sgb,
        sgc,
        sgh,
        sgw,
        sdxb,
        sdxc,
        sdxh,
        sdxw,
        sdrb,
        sdrc,
        sdrh,
        sdrw,
        CELL_P: tl.constexpr,
        BLOCK_C: tl.constexpr,
        NEED_DX: tl.constexpr,
        NEED_DR: tl.constexpr,
    ):
        # program: (image, cell row, block of BLOCK_C cells); tiles [CELL_P rows, BLOCK_C, CELL_P]
        b = tl.program_id(0).to(tl.int64)
        ci = tl.program_id(1)
        cj = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cj < w
        cidx = (ci * w + cj).to(tl.int64)
        seed = tl.load(seed_ptr + b)
        la = tl.load(la_ptr + b * h * w + cidx, mask=cm, other=0.0)

        d = tl.arange(0, CELL_P)
        rows = ci * cell + d
        cols = cj[None, :, None] * cell + d[None, None, :]
        pmask = (
            ((d < cell) & (rows < H))[:, None, None]
            & (cm[None, :, None] & (cols < W))
            & (d < cell)[None, None, :]
        )
        r3 = rows[:, None, None]
        xo = x_ptr + b * sxb + r3 * sxh + cols * sxw
        ro = r_ptr + b * srb + r3 * srh + cols * srw
        go = g_ptr + b * sgb + r3 * sgh + cols * sgw
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c in range(C):
            xv = tl.load(xo + c * sxc, mask=pmask, other=0.0)
            rv = tl.load(ro + c * src, mask=pmask, other=0.0)
            dxv = tl.zeros([CELL_P, BLOCK_C, CELL_P], dtype=tl.float32)
            drv = tl.zeros([CELL_P, BLOCK_C, CELL_P], dtype=tl.float32)
            for s in range(samples):
                z, dz = _gate(la, seed, offset + s, cidx, beta, eps)
                gv = tl.load(go + s * sgs + c * sgc, mask=pmask, other=0.0)
                z3 = z[None, :, None]
                acc += dz * tl.sum(tl.sum(gv * (xv - rv), axis=2), axis=0)
                if NEED_DX:
                    dxv += gv * z3
                if NEED_DR:
                    drv += gv * (1.0 - z3)
            if NEED_DX:
                tl.store(dx_ptr + b * sdxb + c * sdxc + r3 * sdxh + cols * sdxw, dxv, mask=pmask)
            if NEED_DR:
                tl.store(dr_ptr + b * sdrb + c * sdrc + r3 * sdrh + cols * sdrw, drv, mask=pmask)

        # the TV term (sample mask) and the L0 term (closed form), per cell
        gtv = tl.load(gtv_ptr + b) * tv_scale
        has_l = cm & (cj > 0)
        has_r = cm & (cj + 1 < w)
        has_u = cm & (ci > 0)
        has_d = cm & (ci + 1 < h)
        la_l = tl.load(la_ptr + b * h * w + cidx - 1, mask=has_l, other=0.0)
        la_r = tl.load(la_ptr + b * h * w + cidx + 1, mask=has_r, other=0.0)
        la_u = tl.load(la_ptr + b * h * w + cidx - w, mask=has_u, other=0.0)
        la_d = tl.load(la_ptr + b * h * w + cidx + w, mask=has_d, other=0.0)
        for s in range(samples):
            off = offset + s
            z, dz = _gate(la, seed, off, cidx, beta, eps)
            z_l, _ = _gate(la_l, seed, off, cidx - 1, beta, eps)
            z_r, _ = _gate(la_r, seed, off, cidx + 1, beta, eps)
            z_u, _ = _gate(la_u, seed, off, cidx - w, beta, eps)
            z_d, _ = _gate(la_d, seed, off, cidx + w, beta, eps)
            sg = (
                tl.where(has_l, _sign(z - z_l), 0.0)
                + tl.where(has_r, _sign(z - z_r), 0.0)
                + tl.where(has_u, _sign(z - z_u), 0.0)
                + tl.where(has_d, _sign(z - z_d), 0.0)
            )
            acc += gtv * sg * dz
        e = tl.sigmoid(la - beta * l0_shift)
        acc += tl.load(gl0_ptr + b) * l0_scale * e * (1.0 - e)
        tl.store(dla_ptr + b * h * w + cidx, acc, mask=cm)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _fwd_launch(la, seeds, x, r, offset, cell, samples, beta):
    b, c, height, width = x.shape
    h, w = _grid_shape(height, width, cell)
    out = torch.empty((samples * b, c, height, width), device=x.device, dtype=torch.float32)
    block_w = min(_next_pow2(width), max(16, 1024 // _next_pow2(cell)))
    nblk = -(-width // block_w)
    part = torch.empty((samples * b, h, nblk, 2), device=x.device, dtype=torch.float32)
    _fwd_kernel[(samples * b, h, nblk)](
        la,
        seeds,
        x,
        r,
        out,
        part,
        int(offset),
        b,
        c,
        height,
        width,
        h,
        w,
        cell,
        float(beta),
        hc.EPS,
        _LOG_L0_SHIFT,
        *x.stride(),
        *r.stride(),
        *out.stride(),
        CELL_P=_next_pow2(cell),
        BLOCK_W=block_w,
    )
    l0 = part[:b, ..., 0].sum((1, 2)) / (h * w)
    npairs = (h - 1) * w + h * (w - 1)
    tv = part[..., 1].view(samples, b, -1).sum(-1).mean(0) / max(npairs, 1)
    return out, l0, tv


class _FusedGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_alpha, x, r, seeds, offset, cell, samples, beta):
        b, c, height, width = x.shape
        la = log_alpha.detach().float().contiguous()
        xe = x.detach().float()
        re = r.detach().float().expand(b, c, height, width)
        seeds = seeds.to(device=x.device, dtype=torch.int64).contiguous()
        out, l0, tv = _fwd_launch(la, seeds, xe, re, offset, cell, samples, beta)
        ctx.save_for_backward(la, xe, re, seeds)
        ctx.cfg = (int(offset), int(cell), int(samples), float(beta), tuple(r.shape), r.dtype)
        return out, l0, tv

    @staticmethod
    def backward(ctx, g_out, g_l0, g_tv):
        la, x, r, seeds = ctx.saved_tensors
        offset, cell, samples, beta, r_shape, r_dtype = ctx.cfg
        b, c, height, width = x.shape
        h, w = _grid_shape(height, width, cell)
        dev = x.device
        if g_out is None:
            g_out = torch.zeros((samples * b, c, height, width), device=dev)
        g_l0 = torch.zeros(b, device=dev) if g_l0 is None else g_l0.float().contiguous()
        g_tv = torch.zeros(b, device=dev) if g_tv is None else g_tv.float().contiguous()
        need_dx, need_dr = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        dla = torch.empty_like(la)
        dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else x
        dr = torch.empty((b, c, height, width), device=dev) if need_dr else x
        npairs = (h - 1) * w + h * (w - 1)
        block_c = max(1, min(_next_pow2(w), 256 // _next_pow2(cell)))
        g_out = g_out.float()
        _bwd_kernel[(b, h, -(-w // block_c))](
            la,
            seeds,
            x,
            r,
            g_out,
            g_l0,
            g_tv,
            dla,
            dx,
            dr,
            offset,
            samples,
            b,
            c,
            height,
            width,
            h,
            w,
            cell,
            beta,
            hc.EPS,
            _LOG_L0_SHIFT,
            1.0 / (h * w),
            1.0 / (samples * max(npairs, 1)),
            *x.stride(),
            *r.stride(),
            b * g_out.stride(0),
            *g_out.stride(),
            *dx.stride(),
            *dr.stride(),
            CELL_P=_next_pow2(cell),
            BLOCK_C=block_c,
            NEED_DX=bool(need_dx),
            NEED_DR=bool(need_dr),
        )
        if need_dr:
            dr = _sum_to(dr, r_shape).to(r_dtype)
        return (dla, dx if need_dx else None, dr if need_dr else None) + (None,) * 5


def _sum_to(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``shape``."""
    lead = t.dim() - len(shape)
    t = t.sum(tuple(range(lead))) if lead else t
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1)
    return t.sum(dims, keepdim=True) if dims else t


def triton_usable(device: torch.device | str) -> bool:
    """Whether the Triton kernel can run on ``device`` (CUDA, or any device when interpreting)."""
    return HAS_TRITON and (torch.device(device).type == "cuda" or _INTERPRET)


def gate_step_triton(
    log_alpha: torch.Tensor,
    x: torch.Tensor,
    r: torch.Tensor,
    seeds: torch.Tensor,
    offset: int = 0,
    *,
    cell: int = 1,
    samples: int = 1,
    beta: float = hc.BETA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gate step as the fused Triton kernel (float32); same contract as the reference."""
    if not triton_usable(x.device):
        raise RuntimeError(
            "the fused gate kernel needs Triton and a CUDA tensor (or TRITON_INTERPRET=1 set "
            "before nicebench.gates.fused is imported)"
        )
    _check(log_alpha, x, cell)
    return _FusedGate.apply(log_alpha, x, r, seeds, int(offset), int(cell), int(samples), beta)


def resolve_impl(device: torch.device | str, impl: str | None = None) -> str:
    """``"triton"`` or ``"reference"``: ``impl``, else ``$NICEBENCH_GATE_IMPL``, else by device."""
    impl = (impl or os.environ.get("NICEBENCH_GATE_IMPL") or "auto").lower()
    if impl not in ("auto", "triton", "reference"):
        raise ValueError(f"NICEBENCH_GATE_IMPL must be triton, reference or auto, got {impl!r}")
    if impl == "auto":
        return "triton" if HAS_TRITON and torch.device(device).type == "cuda" else "reference"
    return impl


def gate_step(
    log_alpha: torch.Tensor,
    x: torch.Tensor,
    r: torch.Tensor,
    seeds: torch.Tensor,
    offset: int = 0,
    *,
    cell: int = 1,
    samples: int = 1,
    beta: float = hc.BETA,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One gate step ``(x_tilde [samples·B,C,H,W], l0 [B], tv [B])``; see the module doc."""
    fn = gate_step_triton if resolve_impl(x.device, impl) == "triton" else gate_step_reference
    return fn(log_alpha, x, r, seeds, offset, cell=cell, samples=samples, beta=beta)
