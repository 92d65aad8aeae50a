"""``nice-opt``: the batched per-image gate optimizer (reference gate step on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import nicebench as nb
from nicebench.models import build_arch, predict, train_classifier
from nicebench.registry import METHODS


@pytest.fixture(scope="module")
def trained():
    """A small scenes-32 classifier trained in a few seconds (about 60% test accuracy) and a batch
    of test images with its predictions."""
    torch.manual_seed(0)
    train = nb.load_dataset("scenes", split="train", size=32, n=2000)
    model = build_arch("scenecnn", train)
    train_classifier(model, train, {"epochs": 6, "lr": 5e-3, "batch_size": 64, "jpeg_p": 0.0})
    model.eval().requires_grad_(False)
    test = nb.load_dataset("scenes", split="test", size=32, n=24)
    images, labels, _ = nb.collate([test[i] for i in range(len(test))])
    return model, images, labels, predict(model, images)


def _method(model, **kw):
    return METHODS.get("nice-opt")(model, **{"cell": 4, "steps": 30, **kw})


def test_registered_with_capabilities():
    cls = METHODS.get("nice-opt")
    assert cls.gate_mask and cls.needs_gradients and cls.deterministic and not cls.learns
    assert {"steps", "lam", "mu", "cell", "reference", "samples", "lr", "target", "seed"} <= set(
        cls.default_params()
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_beats_random_on_deletion_and_insertion(trained, precision):
    model, images, _, preds = trained
    sal = _method(model, precision=precision).explain(images, preds)
    rnd = METHODS.get("random")(model).explain(images, preds)
    d_opt, d_rnd = (nb.metrics.deletion(model, images, s).mean().item() for s in (sal, rnd))
    i_opt, i_rnd = (nb.metrics.insertion(model, images, s).mean().item() for s in (sal, rnd))
    assert d_opt < d_rnd - 0.02, (d_opt, d_rnd)
    assert i_opt > i_rnd, (i_opt, i_rnd)


def test_early_stopping(trained):
    model, images, _, preds = trained
    x, y = images[:6], preds[:6]
    # a large λ closes every gate within a few steps, after which the binary mask stays put
    m = _method(model, lam=50.0, steps=80, patience=2, check_every=4)
    m.explain(x, y)
    assert m.last_stats["stopped_early"] == 6 and m.last_stats["steps_max"] < 80
    never = _method(model, lam=50.0, steps=20, patience=0)
    never.explain(x, y)
    assert never.last_stats["stopped_early"] == 0 and never.last_stats["steps_mean"] == 20


def test_batch_independence_and_determinism(trained):
    model, images, _, preds = trained
    x, y = images[:5], preds[:5]
    m = _method(model, steps=15, samples=2)
    batch = m.explain(x, y)
    singles = torch.cat(
        [_method(model, steps=15, samples=2).explain(x[i : i + 1], y[i : i + 1]) for i in range(5)]
    )
    assert (batch - singles).abs().max() < 1e-4
    # a different batch composition (reordered, duplicated) gives the same per-image maps
    order = torch.tensor([4, 0, 0, 2])
    torch.testing.assert_close(
        _method(model, steps=15, samples=2).explain(x[order], y[order]),
        batch[order],
        atol=1e-4,
        rtol=0,
    )
    assert torch.equal(_method(model, steps=15, samples=2).explain(x, y), batch)
    assert not torch.equal(_method(model, steps=15, samples=2, seed=1).explain(x, y), batch)


def test_binary_mask_and_composite(trained):
    model, images, _, preds = trained
    x, y = images[:4], preds[:4]
    m = _method(model, reference="lowres")
    sal = m.explain(x, y)
    keep = m.binary_mask(x, y)
    assert keep.dtype == torch.bool and keep.shape == (4, 1, 32, 32)
    assert torch.equal(keep, sal >= 0.5)
    # the mask is constant on 4x4 cells
    assert torch.equal(keep, keep[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1))
    mixed = m.composite(x, keep)
    assert torch.equal(mixed[keep.expand_as(x)], x[keep.expand_as(x)])
    zero = _method(model, reference="zero").composite(x, torch.zeros_like(keep))
    assert torch.equal(zero, torch.zeros_like(x))


def test_targets_change_the_mask(trained):
    model, images, _, preds = trained
    x, y = images[:3], preds[:3]
    a = _method(model).explain(x, y)
    b = _method(model).explain(x, (y + 1) % 6)
    assert (a - b).abs().max() > 0.1
    torch.testing.assert_close(_method(model, target="pred").explain(x, (y + 1) % 6), a)


def test_bad_parameters():
    model = build_arch("scenecnn", nb.load_dataset("scenes", size=32, n=1))
    bads = (
        {"reference": "blur"},
        {"target": "top"},
        {"cell": 0},
        {"steps": 0},
        {"precision": "fp16"},
        {"rank_window": 1.5},
    )
    for bad in bads:
        with pytest.raises(nb.MethodError, match=next(iter(bad))):
            METHODS.get("nice-opt")(model, **bad)


def test_precision_choice(monkeypatch):
    from nicebench import models

    model = build_arch("scenecnn", nb.load_dataset("scenes", size=32, n=1))
    cls = METHODS.get("nice-opt")
    assert cls(model, precision="fp32").uses_bf16("cuda") is False
    assert cls(model, precision="bf16").uses_bf16("cpu") is True
    assert cls(model).uses_bf16("cuda") is True
    for native in (True, False):
        monkeypatch.setattr(models.torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(models.torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert models.native_cpu_bf16() is native
        assert cls(model).uses_bf16("cpu") is native


_TRITON_OPT_SCRIPT = textwrap.dedent(
    """
    import json, os, torch
    import nicebench as nb
    from nicebench.gates import fused
    from nicebench.registry import METHODS
    from nicebench.testing import tiny_setup
    assert fused.triton_usable("cpu")
    model, ds = tiny_setup(size=32, n=2)
    x, y, _ = nb.collate([ds[0], ds[1]])
    maps = {}
    for impl in ("reference", "triton"):
        os.environ["NICEBENCH_GATE_IMPL"] = impl
        m = METHODS.get("nice-opt")(model, steps=3, cell=8, samples=2, mu=1.0)
        maps[impl] = m.explain(x, y)
    print(json.dumps({"diff": (maps["reference"] - maps["triton"]).abs().max().item()}))
    """
)


def test_optimizer_through_the_kernel_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_OPT_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["diff"] < 1e-4
