"""Classifiers: reproducible training, unchanged cache keys, the architecture registry, model specs."""

from __future__ import annotations

import json

import pytest
import torch

import nicebench as nb
from nicebench.models import load_model_path, model_fingerprint


def test_trained_classifier_does_not_depend_on_the_global_rng(tmp_path, monkeypatch):
    ds = nb.load_dataset("scenes", size=32, n=8, train_n=256, train_epochs=1)
    prints = []
    for i, draw in enumerate((0, 1000)):  # other code drew from the global RNG before loading
        monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / str(i)))
        torch.manual_seed(123)
        torch.rand(draw)
        prints.append(model_fingerprint(nb.load_model(ds)))
        after = torch.rand(1)
        torch.manual_seed(123)
        torch.rand(draw)
        assert torch.equal(after, torch.rand(1))  # loading left the global RNG where it was
    assert prints[0] == prints[1]
    meta = json.loads(load_model_path(ds).with_suffix(".json").read_text())
    assert meta["threads"] == torch.get_num_threads() and meta["torch"] == torch.__version__


def test_cache_keys_are_unchanged(tmp_path, monkeypatch):
    """Pinned to the values the code before the models package computed: cached classifiers and
    learned methods are found again and the default leaderboard's numbers do not move."""
    from nicebench.models import cache_key, cache_path, stable_hash

    ident = {
        "name": "scenes",
        "size": 64,
        "seed": 0,
        "version": 2,
        "arch": "scenecnn",
        "recipe": {"epochs": 10},
        "code": 3,
    }
    assert stable_hash({"kind": "classifiers", **ident}) == "7b02c70c1e2c67df"
    assert cache_key("classifiers", ident) == "7b02c70c1e2c67df"
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    assert cache_path("nice", ident) == tmp_path / "nice" / f"{cache_key('nice', ident)}.pt"
    scenes64 = nb.load_dataset("scenes", size=64)
    assert load_model_path(scenes64).relative_to(tmp_path).as_posix() == (
        "classifiers/f607ae324d54cf28.pt"
    )
    for spec in ("default", "scenecnn", "scenecnn:seed=0", "default:seed=0"):
        assert load_model_path(scenes64, spec) == load_model_path(scenes64)
    assert load_model_path(scenes64, "scenecnn:seed=1") != load_model_path(scenes64)
    for not_cached in ("torchvision:resnet50:weights=r50.pth", "scenecnn:weights=w.pt"):
        with pytest.raises(ValueError, match="not cached"):
            load_model_path(scenes64, not_cached)
    tiny = nb.load_dataset("scenes", size=32, n=64, train_n=1500, train_epochs=3)
    assert load_model_path(tiny).name == "6bff420e4836aee8.pt"
    try:
        fashion = nb.load_dataset("fashion-mnist")
    except nb.DatasetMissingError:
        return
    assert load_model_path(fashion).name == "e1636745688be804.pt"


def test_register_arch_and_list_models():
    from torch import nn

    from nicebench.models import build_arch, is_pretrained, list_models, register_arch
    from nicebench.testing import restored

    assert {"scenecnn", "lenet5", "resnet50"} <= set(list_models())
    assert list_models("*net*") == ["lenet5", "resnet50"]
    assert is_pretrained("resnet50") and not is_pretrained("scenecnn")

    with restored("model", "test-tinynet"):

        @register_arch("test-tinynet")
        def tinynet(num_classes: int, channels: int, size: int):
            conv = nn.Conv2d(channels, 4, 3, padding=1)
            net = nn.Sequential(
                conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)
            )
            return net, conv

        assert "test-tinynet" in list_models("test-*")
        ds = nb.load_dataset("scenes", size=32, n=2)
        model = build_arch("test-tinynet", ds, seed=1)
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, ds.num_classes)
        with pytest.raises(ValueError, match="already registered"):
            register_arch("test-tinynet")(lambda n, c, s: None)
        with pytest.raises(KeyError, match="Did you mean"):
            nb.load_model(ds, model="scenecn")
    assert "test-tinynet" not in list_models()


def test_jpeg_augmentation_is_the_codec(monkeypatch):
    """The training round-trip decodes exactly what the compression codec decodes, and what
    Pillow itself writes (JPEG, optimize=True, per-image quality and subsampling code)."""
    import io

    import numpy as np
    from PIL import Image

    from nicebench import codec_base
    from nicebench.codec import JpegCodec, to_uint8
    from nicebench.models import jpeg_roundtrip

    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    out = jpeg_roundtrip(x, [20, 50, 95, 75], [0, 2, 2, 1])
    assert out.dtype == torch.float32 and out.shape == x.shape
    arr = to_uint8(x)
    for i, (q, code) in enumerate(((20, 0), (50, 2), (95, 2), (75, 1))):
        codec = JpegCodec(subsampling=code)
        dec = codec.decode(codec.encode(arr[i], q), 3)
        assert torch.equal(out[i], torch.from_numpy(dec.copy()).permute(2, 0, 1).float() / 255)
        buf = io.BytesIO()
        Image.fromarray(arr[i]).save(buf, format="JPEG", quality=q, optimize=True, subsampling=code)
        pil = np.asarray(Image.open(buf).convert("RGB"))
        assert np.array_equal(pil, dec)
    assert torch.equal(jpeg_roundtrip(x, 40), JpegCodec().roundtrip_tensor(x, 40))
    # on the codec threads or one after another: the same images, in order
    squares = [i * i for i in range(40)]
    assert codec_base.map_images(lambda i: i * i, range(40)) == squares
    assert codec_base.map_images(lambda i: i * i, range(40), parallel=False) == squares
    monkeypatch.setenv("NICEBENCH_CODEC_THREADS", "1")
    assert torch.equal(jpeg_roundtrip(x, [20, 50, 95, 75], [0, 2, 2, 1]), out)


def test_forward_model_folds_batchnorm_and_follows_the_weights():
    """The forward-only twin: BatchNorm folded (none left), the same logits to float rounding,
    one twin per state of the weights, and the model itself where there is nothing to fold."""
    from torch import nn

    from nicebench.models import forward_model
    from nicebench.models.architectures import Classifier, scenecnn

    torch.manual_seed(0)
    net, cam = scenecnn(4, 3, 32)
    model = Classifier(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 4, cam)
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.rand(5, 3, 32, 32)
    twin = forward_model(model)
    assert twin is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), atol=1e-5, rtol=1e-5)
    assert forward_model(model) is twin  # made once
    with torch.no_grad():
        next(model.parameters()).mul_(2.0)  # an in-place change of the weights
    again = forward_model(model)
    assert again is not twin
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=1e-5, rtol=1e-5)
    assert forward_model(model.train()) is model  # training: BatchNorm uses batch statistics
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert forward_model(plain) is plain  # nothing to fold
