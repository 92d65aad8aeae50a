"""The ``nice`` plugin on tiny configs: shapes, sparsity vs λ, caching, binary mask, composite."""

from __future__ import annotations

import pytest
import torch

import nicebench as nb
from nicebench import MethodError
from nicebench.data import collate
from nicebench.metrics.gate import mask_share, masked_correct
from nicebench.models import build_arch
from nicebench.registry import get_method_class

QUICK = {"epochs": 1, "n_train": 64, "batch_size": 32}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / "cache"))


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    test = nb.load_dataset("scenes", size=32, n=8)
    model = build_arch("scenecnn", test, seed=seed).eval().requires_grad_(False)
    train = nb.load_dataset("scenes", split="train", size=32, n=64)
    images, labels = collate([test[i] for i in range(8)])[:2]
    return model, train, images, labels


def _nice(model, **params):
    return get_method_class("nice")(model, **{**QUICK, **params})


def test_registered_and_flags() -> None:
    cls = get_method_class("nice")
    assert "nice" in nb.list_methods()
    assert cls.learns and cls.gate_mask and cls.deterministic and not cls.needs_gradients
    model = _setup()[0]
    bads = (
        {"reference": "grey"},
        {"generator": "big"},
        {"target": "x"},
        {"cell": 0},
        {"rank_window": -0.1},
    )
    for bad in bads:
        with pytest.raises(MethodError, match=next(iter(bad))):
            cls(model, **bad)
    with pytest.raises(MethodError):
        cls(None)


@pytest.mark.parametrize("generator", ["small", "tiny"])
@pytest.mark.parametrize("cell", ["auto", 4])
def test_shapes_and_range(generator: str, cell) -> None:
    model, train, images, labels = _setup()
    m = _nice(model, generator=generator, cell=cell)
    with pytest.raises(MethodError):
        m.explain(images, labels)
    m.fit(train)
    sal = m.explain(images, labels)
    assert sal.shape == (8, 1, 32, 32) and sal.dtype == torch.float32
    assert sal.min() >= 0 and sal.max() <= 1
    grid = m.log_alpha(images)
    side = 32 if cell == "auto" else 8  # auto: one gate per pixel at 32 px
    assert grid.shape == (8, 1, side, side)
    if cell == 4:  # constant on each 4×4 cell
        assert torch.equal(
            sal, sal[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1)
        )
    # class-agnostic: the targets do not change the mask
    assert torch.equal(sal, m.explain(images, (labels + 1) % 6))


def test_larger_lambda_gives_sparser_masks() -> None:
    model, train, images, labels = _setup()
    shares = []
    for lam in (0.0, 30.0):
        m = _nice(model, lam=lam, epochs=6, batch_size=16, lr=0.05, cell=4)
        m.fit(train)
        shares.append(mask_share(m.binary_mask(images)).mean().item())
        hist = m.train_info["history"]
        if lam > 0:
            assert hist[-1]["l0"] < hist[0]["l0"]
    assert shares[1] < shares[0] - 0.2, shares


def test_training_is_cached_and_keyed_by_classifier_and_params(monkeypatch) -> None:
    model, train, images, labels = _setup()
    first = _nice(model).fit(train)
    sal = first.explain(images, labels)
    cls = get_method_class("nice")

    def fail(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(cls, "train_module", fail)
    second = _nice(model).fit(train)
    assert torch.equal(second.explain(images, labels), sal)
    # the tie-break window only reorders the explanation map: same generator, same open gates
    plain = _nice(model, rank_window=0).fit(train)
    assert torch.equal(plain.binary_mask(images), second.binary_mask(images))
    assert not torch.equal(plain.explain(images, labels), sal)
    with pytest.raises(AssertionError, match="retrained"):
        _nice(model, lam=3.0).fit(train)
    other, *_ = _setup(seed=1)
    with pytest.raises(AssertionError, match="retrained"):
        _nice(other).fit(train)


def test_deterministic_training() -> None:
    model, train, images, labels = _setup()
    a = _nice(model).fit(train).explain(images, labels)
    nb.cache_dir()  # same env; remove the cached weights to force a retrain
    for f in (nb.cache_dir() / "nice").iterdir():
        f.unlink()
    b = _nice(model).fit(train).explain(images, labels)
    assert torch.equal(a, b)


@pytest.mark.parametrize("reference", ["zero", "mean", "lowres"])
def test_binary_mask_and_composite(reference: str) -> None:
    model, train, images, labels = _setup()
    m = _nice(model, reference=reference, cell=4).fit(train)
    keep = m.binary_mask(images, labels)
    assert keep.dtype == torch.bool and keep.shape == (8, 1, 32, 32)
    assert torch.equal(keep, m.explain(images, labels) >= 0.5)
    ones, zeros = torch.ones_like(keep), torch.zeros_like(keep)
    torch.testing.assert_close(m.composite(images, ones), images)
    ref = m.composite(images, zeros)
    if reference == "zero":
        assert ref.abs().max() == 0
    elif reference == "mean":
        torch.testing.assert_close(ref[0, :, 0, 0], model.mean.view(-1))
    else:  # ×4 area downsample then bilinear: the ×4 block means are preserved on average
        assert ref.shape == images.shape
        pooled = torch.nn.functional.avg_pool2d(images, 4)
        assert (ref - images).abs().mean() > 0
        torch.testing.assert_close(
            torch.nn.functional.avg_pool2d(ref, 32),
            torch.nn.functional.avg_pool2d(pooled, 8),
            atol=0.02,
            rtol=0,
        )
    mixed = m.composite(images, keep)
    torch.testing.assert_close(mixed[keep.expand_as(images)], images[keep.expand_as(images)])
    share = mask_share(keep)
    assert share.shape == (8,) and ((share >= 0) & (share <= 1)).all()
    correct = masked_correct(model, images, keep, m.composite, labels)
    assert correct.shape == (8,) and set(correct.unique().tolist()) <= {0.0, 1.0}
    direct = (model(mixed).argmax(1) == labels).float()
    assert torch.equal(correct, direct)


def test_small_generator_at_one_pixel_cells_convolves_at_half_resolution() -> None:
    """At cell 1 (28-px images) the convolutions run on a 14×14 grid; the head's logits come back
    to 28×28 with per-pixel detail from the image (not constant on 2×2 blocks)."""
    from nicebench.methods.nice import MaskGenerator

    torch.manual_seed(0)
    net = MaskGenerator(1, 1, "small", [0.3], [0.3]).eval()
    sizes = []
    for conv in net.body.modules():
        if isinstance(conv, torch.nn.Conv2d):
            conv.register_forward_hook(lambda mod, inp, out: sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        out = net(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 1, 28, 28)
    assert sizes == [(14, 14)] * 4  # three conv blocks and the 1×1 head
    blocks = out.unfold(-2, 2, 2).unfold(-2, 2, 2).reshape(2, 1, 14, 14, 4)
    assert (blocks.std(-1) > 1e-4).float().mean() > 0.9


@pytest.mark.parametrize("cell", [1, 2, 4])
def test_inference_copy_folds_batchnorm_with_the_same_logits(cell: int) -> None:
    from nicebench.methods.nice import MaskGenerator

    torch.manual_seed(0)
    net = MaskGenerator(3, cell, "small", [0.4] * 3, [0.2] * 3)
    net.train()
    with torch.no_grad():  # BatchNorm statistics away from their initial values
        for _ in range(3):
            net(torch.rand(8, 3, 32, 32))
    net.eval()
    x = torch.rand(4, 3, 32, 32)
    for channels_last in (False, True):
        fast = net.for_inference(channels_last)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        with torch.no_grad():
            torch.testing.assert_close(fast(x), net(x), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # a copy


@pytest.mark.parametrize("generator", ["small", "tiny"])
def test_class_conditioned_generator_masks_depend_on_the_target(generator: str) -> None:
    """``condition="class"``: trained through the normal fit path on the training targets, its
    masks differ between target classes on the same images and follow the prediction when no
    targets are given; the unconditioned generator ignores the targets."""
    model, train, images, labels = _setup()
    other = (labels + 1) % 6
    plain = _nice(model, generator=generator).fit(train)
    assert torch.equal(plain.explain(images, labels), plain.explain(images, other))
    cond = _nice(model, generator=generator, condition="class")
    assert cond.would_train(train)
    cond.fit(train)
    assert cond.train_info["history"]  # trained, by the base's loop
    a, b = cond.explain(images, labels), cond.explain(images, other)
    assert a.shape == (8, 1, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, b)
    assert not torch.equal(cond.binary_mask(images, labels), cond.binary_mask(images, other))
    pred = model(images).argmax(1)
    assert torch.equal(cond.log_alpha(images), cond._logits(images, pred))
    # the cache keeps the two apart; the default's identity has no `condition` key
    assert "condition" not in plain.training_params()
    assert cond.training_params()["condition"] == "class"
    with pytest.raises(MethodError, match="condition"):
        _nice(model, condition="label")


def test_class_conditioned_inference_copy_keeps_the_logits() -> None:
    from nicebench.methods.nice import MaskGenerator

    torch.manual_seed(0)
    net = MaskGenerator(3, 1, "small", [0.4] * 3, [0.2] * 3, n_classes=6).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 3, 5, 3])
    with torch.no_grad():
        out = net(x, y)
        assert out.shape == (4, 1, 32, 32)
        torch.testing.assert_close(net.for_inference(True)(x, y), out, atol=1e-4, rtol=1e-4)
        assert not torch.equal(net(x, (y + 1) % 6), out)
    with pytest.raises(MethodError, match="target classes"):
        net(x)
