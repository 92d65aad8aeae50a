"""The example plugins pass nicebench's plugin contracts and do what they say."""

from __future__ import annotations

import torch
from nicebench.testing import check_codec, check_dataset, check_method

from nicebench_example.codecs import Jpeg2000
from nicebench_example.datasets import Bars
from nicebench_example.methods import GradientTimesInput


def test_method_contract():
    assert check_method(GradientTimesInput)["ok"]
    assert check_method(GradientTimesInput, params={"absolute": True})["ok"]


def test_dataset_contract():
    assert check_dataset(Bars, {"n": 12})["ok"]
    assert check_dataset(Bars, {"n": 4, "size": 48})["ok"]


def test_masks_cover_the_bright_shape():
    ds = Bars(n=30)
    for i in range(len(ds)):
        image, label, mask = ds[i]
        assert image[mask > 0].mean() > image[mask == 0].mean() + 0.2
        rows, cols = mask[0].any(1).sum().item(), mask[0].any(0).sum().item()
        if label == 0:
            assert cols > rows
        elif label == 1:
            assert rows > cols
        else:
            assert rows == cols
    assert {ds[i][1] for i in range(len(ds))} == {0, 1, 2}


def test_gradient_times_input_is_the_first_order_term_of_a_linear_model():
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 6)).eval()
    images = torch.rand(2, 3, 32, 32)
    targets = torch.tensor([1, 4])
    with torch.no_grad():  # gradient methods still work in the caller's no_grad
        sal = GradientTimesInput(linear).explain(images, targets)
    weights = linear[1].weight.view(6, 3, 32, 32)[targets]
    torch.testing.assert_close(sal, (weights * images).sum(1, keepdim=True))


def test_codec_contract():
    report = check_codec(Jpeg2000)
    assert report["ok"] and report["bytes"][3][0] < report["bytes"][3][-1]


def test_codec_hits_its_psnr_target():
    from skimage.metrics import peak_signal_noise_ratio

    ds = Bars(n=4, size=64)
    arr = (ds[0][0].permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    codec = Jpeg2000()
    low, high = (codec.decode(codec.encode(arr, q), arr.shape[-1]) for q in (20, 80))
    assert peak_signal_noise_ratio(arr, high) > peak_signal_noise_ratio(arr, low)
    assert peak_signal_noise_ratio(arr, high) > 40
