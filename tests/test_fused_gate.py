"""The counter-based noise, the reference gate step, and the Triton kernel under the interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nicebench.gates import content_seed, fused, hard_concrete, rng


def _lowbias32_numpy(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x = x * np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x = x * np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def test_hash_is_lowbias32():
    xs = np.arange(0, 2**32, 65537, dtype=np.int64)
    ours = rng.hash32(torch.from_numpy(xs)).numpy()
    assert np.array_equal(ours, _lowbias32_numpy(xs).astype(np.int64))


def test_uniform_range_determinism_and_moments(monkeypatch):
    seeds = torch.tensor([[0], [1], [2**62 + 12345]])
    u = rng.uniform(seeds, 7, torch.arange(200_000))
    assert u.dtype == torch.float32 and u.shape == (3, 200_000)
    assert (u > 0).all() and (u < 1).all()
    assert torch.equal(u, rng.uniform(seeds, 7, torch.arange(200_000)))
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    # seed, offset and index all change the stream; the high half of the seed counts too
    assert (u[0] != u[1]).float().mean() > 0.99
    assert (rng.uniform(0, 8, torch.arange(1000)) != u[0, :1000]).float().mean() > 0.99
    assert (rng.uniform(2**40, 7, torch.arange(1000)) != u[0, :1000]).float().mean() > 0.99
    # the extremes of the hash map to the ends of the lattice, inside (0, 1) in float32
    monkeypatch.setattr(rng, "_key", lambda seed, offset, index: torch.tensor([0, rng.MASK32]))
    ends = rng.uniform(0, 0, torch.arange(2))
    assert ends.tolist() == [2.0**-24, 1 - 2.0**-24]
    assert ends[0] > 0 and ends[1] < 1


def test_content_seed_is_per_image():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    s = content_seed(x, seed=3)
    assert s.dtype == torch.int64 and (s >= 0).all() and len(set(s.tolist())) == 4
    assert torch.equal(torch.cat([content_seed(x[i : i + 1], 3) for i in range(4)]), s)
    assert not torch.equal(content_seed(x, seed=4), s)
    assert torch.equal(content_seed(x.flip(0), 3), s.flip(0))


def test_reference_step_matches_hard_concrete():
    torch.manual_seed(0)
    b, c, size, cell, samples = 3, 3, 14, 4, 2
    h = -(-size // cell)
    la = torch.randn(b, 1, h, h)
    x, r = torch.rand(b, c, size, size), torch.rand(b, c, size, size)
    seeds = torch.tensor([1, 2, 3])
    out, l0, tv = fused.gate_step_reference(la, x, r, seeds, 5, cell=cell, samples=samples)
    assert out.shape == (samples * b, c, size, size) and l0.shape == tv.shape == (b,)
    for j in range(samples):
        u = rng.uniform(seeds.view(-1, 1, 1, 1), 5 + j, torch.arange(h * h).view(1, 1, h, h))
        z = hard_concrete.sample(la, u=u)
        zu = hard_concrete.upsample_cells(z, cell, (size, size))
        torch.testing.assert_close(out[j * b : (j + 1) * b], zu * x + (1 - zu) * r)
    torch.testing.assert_close(l0, hard_concrete.expected_l0(la).flatten(1).mean(1))
    # the sample-major layout: each image's noise does not depend on the batch
    one = fused.gate_step_reference(la[1:2], x[1:2], r[1:2], seeds[1:2], 5, cell=cell, samples=2)
    torch.testing.assert_close(one[0], out.view(samples, b, c, size, size)[:, 1])


def test_reference_step_gradcheck_float64():
    torch.manual_seed(1)
    b, c, size, cell = 2, 2, 7, 3  # 7 is not a multiple of 3: the last cells are cropped
    la = torch.randn(b, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.rand(b, c, size, size, dtype=torch.float64, requires_grad=True)
    r = torch.rand(1, c, 1, 1, dtype=torch.float64, requires_grad=True)
    seeds = torch.tensor([11, 12])

    def step(la, x, r):
        return fused.gate_step_reference(la, x, r, seeds, 0, cell=cell, samples=2)

    assert torch.autograd.gradcheck(step, (la, x, r), eps=1e-6, atol=1e-5)


def test_dispatch_and_env_switch(monkeypatch):
    monkeypatch.delenv("NICEBENCH_GATE_IMPL", raising=False)
    assert fused.resolve_impl("cpu") == "reference"
    monkeypatch.setenv("NICEBENCH_GATE_IMPL", "reference")
    assert fused.resolve_impl("cuda") == "reference"
    monkeypatch.setenv("NICEBENCH_GATE_IMPL", "triton")
    assert fused.resolve_impl("cpu") == "triton"
    monkeypatch.setenv("NICEBENCH_GATE_IMPL", "fast")
    with pytest.raises(ValueError, match="NICEBENCH_GATE_IMPL"):
        fused.resolve_impl("cpu")
    if not fused.triton_usable("cpu"):  # this process did not set TRITON_INTERPRET=1
        la, x = torch.zeros(1, 1, 2, 2), torch.rand(1, 3, 8, 8)
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            fused.gate_step(la, x, x, torch.tensor([0]), cell=4, impl="triton")


# ------------------------------------------------------------------------------------------------
# The kernel, run by the Triton interpreter in a subprocess (TRITON_INTERPRET must be set before
# triton and nicebench.gates.fused are imported).
# ------------------------------------------------------------------------------------------------

_KERNEL_SCRIPT = textwrap.dedent(
    """
    import json, torch, triton, triton.language as tl
    from nicebench.gates import fused, rng
    assert fused.triton_usable("cpu")

    @triton.jit
    def noise_kernel(seed_ptr, out_ptr, offset, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        seed = tl.load(seed_ptr + tl.program_id(0))
        u = fused._uniform(seed, offset, i)
        tl.store(out_ptr + tl.program_id(0) * n + i, u, mask=i < n)

    seeds = torch.tensor([0, 1, 2**62 + 987654321, 2**33 - 1])
    got = torch.empty(4, 512)
    noise_kernel[(4,)](seeds, got, 123456, 512, BLOCK=512)
    noise_equal = torch.equal(got, rng.uniform(seeds.view(-1, 1), 123456, torch.arange(512)))

    def compare(b, c, hh, ww, cell, samples, channels_last, r_full, grad_x, offset):
        g = torch.Generator().manual_seed(b * 100 + hh + cell)
        h, w = -(-hh // cell), -(-ww // cell)
        la = (2 * torch.randn(b, 1, h, w, generator=g)).requires_grad_(True)
        x = torch.rand(b, c, hh, ww, generator=g)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        r = torch.rand(b, c, hh, ww, generator=g) if r_full else torch.rand(1, c, 1, 1, generator=g)
        x.requires_grad_(grad_x)
        r.requires_grad_(grad_x)
        seeds = torch.randint(0, 2**62, (b,), generator=g)
        g_out = torch.randn(samples * b, c, hh, ww, generator=g).transpose(2, 3)
        g_out = g_out.contiguous().transpose(2, 3)  # non-contiguous incoming gradient
        g_l0, g_tv = torch.randn(b, generator=g), torch.randn(b, generator=g)
        res = []
        for impl in ("reference", "triton"):
            out, l0, tv = fused.gate_step(la, x, r, seeds, offset, cell=cell, samples=samples,
                                          impl=impl)
            loss = (out * g_out).sum() + (l0 * g_l0).sum() + (tv * g_tv).sum()
            inputs = (la, x, r) if grad_x else (la,)
            res.append([out, l0, tv, *torch.autograd.grad(loss, inputs)])
        names = ["out", "l0", "tv", "d_log_alpha", "d_x", "d_r"]
        return {n: (a - b_).abs().max().item() / max(1.0, a.abs().max().item())
                for n, a, b_ in zip(names, *res)}

    cases = {
        "cell4": compare(2, 3, 16, 16, 4, 1, False, False, True, 0),
        "cell4_channels_last_2samples": compare(2, 3, 16, 12, 4, 2, True, False, True, 2**31 + 5),
        "cell3_cropped_full_ref": compare(2, 1, 13, 11, 3, 2, False, True, True, 7),
        "cell1": compare(1, 3, 6, 8, 1, 3, False, True, True, 0),
        "cell8_logalpha_only": compare(1, 3, 32, 24, 8, 1, False, False, False, 99),
    }
    print(json.dumps({"noise_equal": noise_equal, "cases": cases}))
    """
)


def _interpreted(script: str) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env.pop("NICEBENCH_GATE_IMPL", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kernel_results():
    pytest.importorskip("triton")
    return _interpreted(_KERNEL_SCRIPT)


def test_kernel_noise_is_bit_identical(kernel_results):
    assert kernel_results["noise_equal"]


@pytest.mark.parametrize(
    "case",
    [
        "cell4",
        "cell4_channels_last_2samples",
        "cell3_cropped_full_ref",
        "cell1",
        "cell8_logalpha_only",
    ],
)
def test_kernel_matches_reference(kernel_results, case):
    errs = kernel_results["cases"][case]
    assert set(errs) >= {"out", "l0", "tv", "d_log_alpha"}
    for name, err in errs.items():
        assert err < 1e-5, f"{case}: {name} differs by {err:.3g} (relative)"
