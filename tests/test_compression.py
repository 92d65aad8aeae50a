"""The compression track: byte counts, snapping, mixing, errors, BD and the headline ratio."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nicebench as nb
from nicebench.codec import CodecError, JpegCodec, available_codecs, to_uint8
from nicebench.compression import (
    MaskError,
    bd_rate,
    compress,
    headline_ratio,
    summarise,
)
from nicebench.compression.mixed import low_resolution, snap_mask, topk_mask
from nicebench.compression.rate import pareto_front
from nicebench.metrics.compression_track import compression_rows, quality_sweep_rows
from nicebench.testing import ContractError, check_codec, tiny_setup

CODECS = available_codecs()
PIL_KW = {
    "jpeg": {"format": "JPEG", "quality": 75, "optimize": True, "subsampling": 2},
    "webp": {"format": "WEBP", "quality": 75},
    "avif": {"format": "AVIF", "quality": 75, "subsampling": "4:2:0"},
}


@pytest.fixture(scope="module")
def scenes():
    ds = nb.load_dataset("scenes", size=64, n=6)
    x, y, m = nb.collate([ds[i] for i in range(len(ds))])
    return x, y, m


def _pillow_len(arr: np.ndarray, codec: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, **PIL_KW[codec])
    return buf.getvalue()


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_equal_what_pillow_writes(scenes, codec):
    x, _, _ = scenes
    sal = torch.rand(x.shape[0], 1, 64, 64, generator=torch.Generator().manual_seed(0))
    res = compress(x, sal, keep=0.3, codec=codec, quality=75, factor=4)
    mixed, orig = _u8(res.mixed), _u8(x)
    for i in range(len(x)):
        data = _pillow_len(mixed[i], codec)
        assert res.nbytes[i] == len(data)
        assert res.streams[i] == data
        assert res.ref_nbytes[i] == len(_pillow_len(orig[i], codec))
    dec = np.asarray(Image.open(io.BytesIO(res.streams[0])).convert("RGB"))
    assert np.array_equal(_u8(res.decoded)[0], dec)
    assert np.allclose(res.bpp, 8 * res.nbytes / 64**2)
    assert np.all(res.header < res.nbytes) and np.all(res.header > 0)


@pytest.mark.parametrize("codec", CODECS)
def test_all_ones_mask_gives_ratio_one(scenes, codec):
    x, _, _ = scenes
    res = compress(x, torch.ones(len(x), 1, 64, 64, dtype=torch.bool), codec=codec)
    assert np.allclose(res.ratio, 1.0)
    assert torch.equal(res.decoded, res.reference)
    full = compress(x, torch.rand(len(x), 1, 64, 64), keep=1.0, codec=codec)
    assert full.total_ratio == pytest.approx(1.0)


def test_mask_cheaper_than_reference_and_quality_inside_mask(scenes):
    x, _, m = scenes
    res = compress(x, m > 0.5, codec="jpeg", factor=8, dilate=1)
    assert res.total_ratio < 0.95
    assert np.all(res.psnr_mask > res.psnr)  # the kept region is coded at full resolution


def test_jpeg_header_is_every_marker_segment(scenes):
    data = _pillow_len(_u8(scenes[0])[0], "jpeg")
    head = JpegCodec().header_size(data)
    sos = data.find(b"\xff\xda")
    sos_len = int.from_bytes(data[sos + 2 : sos + 4], "big")
    assert data[-2:] == b"\xff\xd9"
    assert head == sos + 2 + sos_len + 2  # everything before the scan, plus EOI


@pytest.mark.skipif("webp" not in CODECS, reason="Pillow without WebP")
def test_webp_header_is_container_and_frame_header(scenes):
    data = _pillow_len(_u8(scenes[0])[0], "webp")
    assert data[12:16] == b"VP8 "
    assert nb.create_codec("webp").header_size(data) == 12 + 8 + 10


# Bytes and header bytes of the six 64-px scenes images per format, subsampling, channels and
# quality: the numbers the committed reference run was coded with (Pillow 13's libjpeg-turbo,
# libwebp and libavif). A change here moves every rate of results/.
PINNED = {
    ("jpeg", "4:2:0", 3, 75): ([1358, 1366, 830, 1133, 1390, 1400], [336, 338, 335, 334, 335, 346]),
    ("jpeg", "4:4:4", 3, 30): ([838, 888, 622, 810, 878, 867], [321, 322, 318, 321, 320, 328]),
    ("jpeg", "4:2:0", 1, 50): ([855, 834, 491, 674, 891, 825], [190, 193, 187, 190, 193, 191]),
    ("webp", "4:2:0", 3, 75): ([1042, 1064, 504, 706, 1222, 1220], [30] * 6),
    ("avif", "4:2:0", 3, 75): ([1573, 1538, 1031, 1268, 1713, 1707], [275] * 6),
    ("avif", "4:4:4", 1, 50): ([812, 751, 543, 609, 859, 824], [269] * 6),
}


@pytest.mark.parametrize("key", PINNED, ids=lambda k: "-".join(map(str, k)))
def test_bytes_and_headers_are_pinned_per_format(scenes, key):
    name, subsampling, channels, quality = key
    if name not in CODECS:
        pytest.skip(f"Pillow without {name}")
    coded = nb.create_codec(name, subsampling=subsampling).roundtrip(
        _u8(scenes[0][:, :channels]), quality
    )
    assert (coded.nbytes.tolist(), coded.header.tolist()) == PINNED[key]


def test_block_snapping():
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[0, 0, 10, 13] = True
    snapped = snap_mask(mask, 8)
    expect = torch.zeros_like(mask)
    expect[..., 8:16, 8:16] = True
    assert torch.equal(snapped, expect)
    dil = snap_mask(mask, 8, dilate=1)
    expect[..., 0:24, 0:24] = True
    assert torch.equal(dil, expect)
    odd = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    odd[0, 0, 19, 19] = True  # the last, partial block
    assert snap_mask(odd, 8)[0, 0].nonzero().min(0).values.tolist() == [16, 16]


@pytest.mark.parametrize("keep", [0.05, 0.2, 0.5, 1.0])
def test_topk_keeps_that_share_of_whole_blocks(keep):
    sal = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = topk_mask(sal, keep, 8)
    blocks = mask.float().reshape(3, 8, 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(3, 64, 64)
    assert torch.all(blocks.amin(-1) == blocks.amax(-1))  # whole blocks only
    assert torch.all(blocks[..., 0].sum(1) == max(1, round(keep * 64)))
    ranked = F.avg_pool2d(sal, 8).flatten(1)
    kept = F.max_pool2d(mask.float(), 8).flatten(1) > 0
    if keep < 1:
        lowest_kept = ranked[kept].reshape(3, -1).amin(1)
        assert torch.all(lowest_kept >= ranked[~kept].reshape(3, -1).amax(1))
    const = topk_mask(torch.ones(2, 1, 64, 64), 0.25, 8)
    assert torch.all(const.flatten(1).float().mean(1) == 0.25)  # ties broken, share exact


def test_factor_8_uses_nearest_and_below_bilinear():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    low8 = low_resolution(x, 8)
    blocks = low8.reshape(2, 3, 4, 8, 4, 8)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    assert torch.allclose(blocks[:, :, :, 0, :, 0], F.avg_pool2d(x, 8), atol=1e-6)
    low4 = low_resolution(x, 4)
    bilinear = F.interpolate(F.avg_pool2d(x, 4), size=(32, 32), mode="bilinear")
    assert torch.allclose(low4, bilinear, atol=1e-6)
    assert not torch.allclose(low4, F.interpolate(F.avg_pool2d(x, 4), size=(32, 32)))
    assert torch.equal(low_resolution(x, 1), x)
    forced = low_resolution(x, 8, upsample="bilinear")
    assert torch.allclose(forced, F.interpolate(F.avg_pool2d(x, 8), size=(32, 32), mode="bilinear"))
    with pytest.raises(MaskError, match="upsample"):
        low_resolution(x, 4, upsample="bicubic")


def test_bad_input_errors_name_the_parameter(scenes):
    x, _, m = scenes
    mask = m > 0.5
    with pytest.raises(MaskError, match="saliency_or_mask is empty.*keep="):
        compress(x, torch.zeros_like(mask))
    empty = compress(x, torch.zeros_like(mask), allow_empty=True, factor=8)
    assert np.all(empty.area == 0) and empty.total_ratio < 0.5
    with pytest.raises(MaskError, match="saliency_or_mask has shape"):
        compress(x, mask[..., :32])
    with pytest.raises(MaskError, match="saliency_or_mask has shape"):
        compress(x, mask[:2])
    with pytest.raises(MaskError, match="saliency_or_mask contains NaN"):
        compress(x, torch.full(mask.shape, float("nan")))
    for q in (0, 101, 75.5, "75"):
        with pytest.raises(CodecError, match="quality"):
            compress(x, mask, quality=q)
    with pytest.raises(CodecError, match="codec must be one of"):
        compress(x, mask, codec="jpegxl")
    with pytest.raises(CodecError, match="images: the codecs take 1 .* or 3"):
        compress(torch.rand(1, 4, 16, 16), torch.ones(1, 1, 16, 16, dtype=torch.bool))
    with pytest.raises(CodecError, match=r"images must be in \[0, 1\]"):
        compress(x * 2, mask)
    with pytest.raises(CodecError, match="images contain NaN"):
        compress(x * float("nan"), mask)
    with pytest.raises(CodecError, match="images: jpeg codes sides"):
        big = torch.zeros(1, 1, 1, 70_000)
        compress(big, torch.ones(1, 1, 1, 70_000, dtype=torch.bool), factor=1)
    with pytest.raises(MaskError, match="keep"):
        compress(x, m, keep=0.0)
    with pytest.raises(ValueError, match="factor"):
        compress(x, mask, factor=0)
    with pytest.raises(ValueError, match="dilate"):
        compress(x, mask, dilate=-1)
    if "webp" in CODECS:
        with pytest.raises(CodecError, match="subsampling"):
            compress(x, mask, codec="webp", subsampling="4:4:4")


def test_grey_images(scenes):
    x = scenes[0][:, :1]
    res = compress(x, torch.rand(len(x), 1, 64, 64), keep=0.2, codec="jpeg")
    assert res.decoded.shape == x.shape
    buf = io.BytesIO()
    Image.fromarray(_u8(res.mixed)[0, ..., 0]).save(buf, format="JPEG", quality=75, optimize=True)
    assert res.nbytes[0] == len(buf.getvalue())
    assert Image.open(io.BytesIO(res.streams[0])).mode == "L"


def test_bd_rate_of_a_curve_shifted_by_a_constant_factor():
    acc = np.array([0.3, 0.5, 0.7, 0.8, 0.85, 0.9])
    nbytes = np.array([300, 450, 700, 900, 1100, 1400.0])
    assert bd_rate(0.8 * nbytes, acc, nbytes, acc) == pytest.approx(-0.2, abs=1e-12)
    assert bd_rate(1.5 * nbytes, acc, nbytes, acc) == pytest.approx(0.5, abs=1e-12)
    # a method curve on part of the range, at other accuracies on the same PCHIP curve
    sub = np.array([0.55, 0.65, 0.75])
    from scipy.interpolate import PchipInterpolator

    on_curve = np.exp(PchipInterpolator(acc, np.log(nbytes))(sub))
    assert bd_rate(0.5 * on_curve, sub, nbytes, acc) == pytest.approx(-0.5, rel=0.02)
    # a dominated point (more bytes, less accuracy) is dropped before interpolating
    noisy_b, noisy_a = np.append(0.8 * nbytes, 2000.0), np.append(acc, 0.6)
    assert bd_rate(noisy_b, noisy_a, nbytes, acc) == pytest.approx(-0.2, abs=1e-12)
    assert math.isnan(bd_rate(nbytes[:1], acc[:1], nbytes, acc))
    assert math.isnan(bd_rate(nbytes[:2], np.array([0.95, 0.97]), nbytes, acc))


def test_pareto_front():
    b, a = pareto_front(np.array([5, 1, 3, 2, 4.0]), np.array([0.9, 0.2, 0.5, 0.6, 0.6]))
    assert b.tolist() == [1, 2, 5] and a.tolist() == [0.2, 0.6, 0.9]


def test_headline_ratio():
    ratio = np.array([0.3, 0.5, 0.7, 0.9])
    acc = np.array([0.70, 0.885, 0.891, 0.92])
    assert headline_ratio(ratio, acc, 0.90) == (0.7, 2)
    assert headline_ratio(ratio, acc, 0.895, tolerance=0.01) == (0.5, 1)
    r, i = headline_ratio(ratio, acc, 0.95)
    assert math.isnan(r) and i is None


def _rows(point, ratio, correct, n=100, quality=75, keep=1.0, factor=1, mask="uniform"):
    k = int(round(correct * n))
    return pd.DataFrame(
        {
            "image": np.arange(n),
            "point": point,
            "mask": mask,
            "keep": keep,
            "quality": quality,
            "factor": factor,
            "codec": "jpeg",
            "bytes": 1000.0 * ratio,
            "ref_bytes": 1000.0,
            "payload_bytes": 700.0 * ratio,
            "ref_payload_bytes": 700.0,
            "bpp": 2.0 * ratio,
            "bpp_payload": 1.4 * ratio,
            "correct_compressed": np.arange(n) < k,
            "correct_reference": np.arange(n) < 90,
            "correct_original": np.arange(n) < 95,
            "agree_original": True,
            "psnr": 30.0,
            "ssim": 0.9,
        }
    )


def test_summarise_headline_and_bd():
    curve = [(10, 0.4, 0.5), (30, 0.6, 0.75), (50, 0.75, 0.82), (75, 1.0, 0.9)]
    sweep = pd.concat([_rows(f"q={q}", r, a, quality=q) for q, r, a in curve])
    ops = [(0.1, 0.3, 0.6), (0.2, 0.45, 0.8), (0.3, 0.55, 0.89)]
    pts = pd.concat(
        [
            _rows(f"keep={k} q=40 x8", r, a, quality=40, keep=k, factor=8, mask=f"keep={k}")
            for k, r, a in ops
        ]
    )
    s = summarise(pts, sweep)
    assert s["compression_ratio"] == pytest.approx(0.55)
    assert s["operating_point"] == "keep=0.3 q=40 x8" and s["within_tolerance"]
    assert (s["front_mask"], s["front_share"], s["front_quality"], s["front_factor"]) == (
        "keep=0.3",
        0.3,
        40,
        8,
    )
    assert s["accuracy_compressed"] == pytest.approx(0.89)
    assert s["accuracy_reference"] == pytest.approx(0.90)
    assert s["accuracy_original"] == pytest.approx(0.95)
    assert s["bpp"] == pytest.approx(1.1)
    assert s["payload_ratio"] == pytest.approx(0.55)
    assert s["bd_rate"] < 0 and s["bd_codec"] == "jpeg"
    # uniform quality reaches the 1-point rule only at q75 (0.9): 0.55 / 1.0
    assert s["vs_uniform"] == pytest.approx(0.55)
    worse = summarise(pts.assign(bytes=pts["bytes"] * 3), sweep)
    assert worse["bd_rate"] > 0  # the sign says when uniform quality wins
    none = summarise(pts[pts["mask"] != "keep=0.3"], sweep)
    assert math.isnan(none["compression_ratio"]) and not none["within_tolerance"]
    assert none["operating_point"] == "keep=0.2 q=40 x8"


def _hand_rows(nbytes, correct, ref_bytes, ref_correct, points, header=100):
    """Per-image rows from [P,N] bytes/correct and [N] reference bytes/correct."""
    out = []
    for p, (name, q, keep, f) in enumerate(points):
        for i in range(len(ref_bytes)):
            out.append(
                {
                    "image": i,
                    "point": name,
                    "mask": "gate" if keep is None else f"keep={keep}",
                    "keep": np.nan if keep is None else keep,
                    "quality": q,
                    "factor": f,
                    "area": 0.25,
                    "codec": "jpeg",
                    "bytes": nbytes[p][i],
                    "payload_bytes": nbytes[p][i] - header,
                    "ref_bytes": ref_bytes[i],
                    "ref_payload_bytes": ref_bytes[i] - header,
                    "bpp": 8.0 * nbytes[p][i] / 64,
                    "correct_compressed": bool(correct[p][i]),
                    "correct_reference": bool(ref_correct[i]),
                    "correct_original": True,
                    "psnr": 30.0,
                    "ssim": np.nan,
                }
            )
    return pd.DataFrame(out)


def test_front_headline_and_payload_by_hand():
    """4 images, 4 points: the front, headline, payload ratio and front point worked by hand."""
    from nicebench.compression.summary import analyse

    points = [("a", 20, 0.1, 8), ("b", 40, 0.2, 4), ("c", 30, None, 8), ("d", 75, 0.5, 4)]
    nbytes = [
        [200, 300, 200, 300],  # Σ 1000, ratio 0.25, acc 0.50
        [400, 400, 400, 400],  # Σ 1600, ratio 0.40, acc 0.75
        [450, 450, 450, 450],  # Σ 1800: dominated by b (more bytes, same accuracy)
        [900, 900, 900, 900],
    ]  # Σ 3600, ratio 0.90, acc 1.00
    correct = [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 1]]
    ref = [1000, 1000, 1000, 1000]
    rows = _hand_rows(nbytes, correct, ref, [1, 1, 1, 0], points)
    s, table = analyse(rows, None, n_boot=50)
    assert table["on_front"].tolist() == [True, True, False, True]
    assert table["ratio"].tolist() == pytest.approx([0.25, 0.4, 0.45, 0.9])
    assert table["accuracy"].tolist() == pytest.approx([0.5, 0.75, 0.75, 1.0])
    # reference accuracy 0.75: b is the cheapest point within one point of it
    assert s["compression_ratio"] == pytest.approx(0.4) and table["headline"].tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert s["payload_ratio"] == pytest.approx(1200 / 3600)  # (Σ400−100) / (Σ1000−100)
    assert (s["front_mask"], s["front_share"], s["front_quality"], s["front_factor"]) == (
        "keep=0.2",
        0.2,
        40,
        4,
    )
    assert (s["n_points"], s["n_front"], s["n_images"]) == (4, 3, 4)
    # a gate point's share is its mean kept area
    gate_first = _hand_rows(
        [nbytes[2], nbytes[3]], [correct[1], correct[3]], ref, [1, 1, 1, 0], [points[2], points[3]]
    )
    g = analyse(gate_first, None, n_boot=10)[0]
    assert g["front_mask"] == "gate" and g["front_share"] == pytest.approx(0.25)
    assert g["compression_ratio"] == pytest.approx(0.45)


def test_bootstrap_recomputes_the_front_per_resample():
    from nicebench.compression.rate import bootstrap_weights, headline_draws

    w = bootstrap_weights(5, 200, seed=3)
    assert w.shape == (200, 5) and (w.sum(1) == 5).all()
    assert np.array_equal(w, bootstrap_weights(5, 200, seed=3))
    nbytes = np.array([[100, 100, 300, 300.0], [200, 200, 200, 200]])
    correct = np.array([[1, 0, 1, 0], [1, 1, 1, 0]])
    ref_b, ref_c = np.full(4, 400.0), np.array([1, 1, 1, 0])
    # the full sample (each image once) gives the headline itself: point 1 (ratio 0.5)
    assert headline_draws(np.ones((1, 4)), nbytes, correct, ref_b, ref_c).tolist() == [0.5]
    # resample {0, 0, 1, 1}: point 0 (ratio 400/1600) is right on 0.5, the reference on 1.0
    # -> only point 1 qualifies: 800/1600;
    # resample {0, 0, 0, 3}: point 0 is right on 0.75 = the reference's -> 600/1600 (cheapest);
    # resample {3, 3, 3, 3}: no point and not the reference is right -> both qualify: 800/1600
    w = np.array([[2, 2, 0, 0], [3, 0, 0, 1], [0, 0, 0, 4.0]])
    assert headline_draws(w, nbytes, correct, ref_b, ref_c).tolist() == pytest.approx(
        [0.5, 0.375, 0.5]
    )
    # nothing qualifies -> NaN
    hard = headline_draws(np.ones((1, 4)), nbytes, np.zeros((2, 4)), ref_b, np.ones(4))
    assert math.isnan(hard[0])


def test_interval_and_paired_vs_uniform_from_the_same_resamples():
    """A method whose every point is the uniform curve's at 0.8× the bytes: its ratio is 0.8× of
    uniform's in every resample, so the paired interval of vs_uniform is exactly [0.8, 0.8]."""
    from nicebench.compression.summary import analyse

    rng = np.random.default_rng(0)
    n = 60
    qs = [20, 40, 60, 75]
    ref = rng.integers(800, 1200, n).astype(float)
    acc = [0.5, 0.7, 0.85, 0.9]
    correct = [(rng.random(n) < a) for a in acc]
    ref_c = correct[-1]
    sweep_b = [ref * r for r in (0.4, 0.6, 0.8, 1.0)]
    sweep = _hand_rows(sweep_b, correct, ref, ref_c, [(f"q={q}", q, 1.0, 1) for q in qs])
    method = _hand_rows(
        [0.8 * b for b in sweep_b],
        correct,
        ref,
        ref_c,
        [(f"keep=0.2 q={q} x4", q, 0.2, 4) for q in qs],
    )
    s, _ = analyse(method, sweep, n_boot=300)
    assert s["vs_uniform"] == pytest.approx(0.8)
    assert s["vs_uniform_lo"] == pytest.approx(0.8) and s["vs_uniform_hi"] == pytest.approx(0.8)
    assert s["bd_rate"] == pytest.approx(-0.2)
    u, _ = analyse(sweep, sweep, n_boot=300)
    assert u["bd_rate"] == 0.0 and u["vs_uniform"] == 1.0
    assert u["compression_ratio_lo"] <= u["compression_ratio"] <= u["compression_ratio_hi"]
    assert s["compression_ratio_lo"] == pytest.approx(0.8 * u["compression_ratio_lo"])
    assert s["compression_ratio_hi"] == pytest.approx(0.8 * u["compression_ratio_hi"])
    assert u["compression_ratio_hi"] > u["compression_ratio_lo"]  # the draws do vary
    # the same comparison between any two rows: paired_ratio (vs_uniform is it against the sweep)
    from nicebench.compression.summary import paired_ratio

    pr = paired_ratio(method, sweep, n_boot=300)
    assert (pr["ratio"], pr["lo"], pr["hi"]) == pytest.approx((0.8, 0.8, 0.8))
    assert pr["p_below"] == 1.0 and pr["n_images"] == n
    back = paired_ratio(sweep, method, n_boot=300)
    assert back["ratio"] == pytest.approx(1.25) and back["p_below"] == 0.0
    # a row with more bytes on some resamples only: the interval straddles 1, p_below in between
    noisy = _hand_rows(
        [b * rng.uniform(0.6, 1.4, n) for b in sweep_b],
        correct,
        ref,
        ref_c,
        [(f"keep=0.3 q={q} x4", q, 0.3, 4) for q in qs],
    )
    pn = paired_ratio(noisy, sweep, n_boot=300)
    assert pn["lo"] < 1 < pn["hi"] and 0 < pn["p_below"] < 1
    # a base row that never qualifies needs unbounded bytes: the ratio is 0, as every resample's
    never = _hand_rows(
        sweep_b,
        [np.zeros(n, bool)] * 4,
        ref,
        ref_c,
        [(f"keep=0.1 q={q} x4", q, 0.1, 4) for q in qs],
    )
    pv = paired_ratio(method, never, n_boot=300)
    assert (pv["ratio"], pv["lo"], pv["hi"], pv["p_below"]) == (0.0, 0.0, 0.0, 1.0)
    assert paired_ratio(never, method, n_boot=300)["ratio"] == math.inf
    assert math.isnan(paired_ratio(never, never, n_boot=300)["ratio"])
    from nicebench.compression.summary import sanity_verdict

    assert sanity_verdict(0.0, 0.0) == ""  # against a sweep that never qualifies: not measurable
    assert sanity_verdict(0.9, 0.99) == "FAILED" and sanity_verdict(1.0, 1.3) == "ok"


def test_each_codec_against_its_own_curve():
    """Rows of two codecs: a method's WebP rows are measured against WebP's sweep, not JPEG's."""
    from nicebench.compression.summary import random_sanity, summarise_table

    n, qs = 40, [20, 50, 75]
    rng = np.random.default_rng(1)
    ref_c = rng.random(n) < 0.9
    correct = [rng.random(n) < 0.6, rng.random(n) < 0.8, ref_c]
    parts = []
    for codec, scale in (("jpeg", 1000.0), ("webp", 600.0)):
        ref = np.full(n, scale)
        sweep_b = [ref * r for r in (0.3, 0.6, 1.0)]
        sw = _hand_rows(sweep_b, correct, ref, ref_c, [(f"q={q}", q, 1.0, 1) for q in qs])
        parts.append(sw.assign(method=codec, kind="codec", track_codec=codec))
        for method, k in (("random", 1.0), ("good", 0.5)):
            m = _hand_rows(
                [k * b for b in sweep_b],
                correct,
                ref,
                ref_c,
                [(f"keep=0.2 q={q} x4", q, 0.2, 4) for q in qs],
            )
            parts.append(m.assign(method=method, kind="method", track_codec=codec))
    rows = pd.concat(parts).assign(dataset="d", model="default", bd_codec="jpeg")
    comp = summarise_table(rows, n_boot=100).set_index(["method", "track_codec"])
    assert comp.loc[("webp", "webp"), "bd_codec"] == "webp"
    assert comp.loc[("webp", "webp"), "bd_rate"] == 0.0
    assert comp.loc[("good", "webp"), "bd_codec"] == "webp"
    assert comp.loc[("good", "webp"), "bd_rate"] == pytest.approx(-0.5)
    assert comp.loc[("good", "jpeg"), "bd_rate"] == pytest.approx(-0.5)
    assert comp.loc[("random", "webp"), "vs_uniform"] == pytest.approx(1.0)
    lines = random_sanity(comp.reset_index())
    assert len(lines) == 2 and all("sanity ok" in line for line in lines)
    assert all("within uniform's interval" in line for line in lines)
    cheat = rows.copy()
    cheat.loc[cheat["method"] == "random", "bytes"] *= 0.5
    lines = random_sanity(summarise_table(cheat, n_boot=100))
    assert all("FAILED" in line for line in lines)
    # every row against one method, per codec: "good" needs half of random's bytes with either
    from nicebench.compression.summary import versus_table

    vs = versus_table(rows, "random", n_boot=100).set_index(["method", "track_codec"])
    assert vs.loc[("good", "jpeg"), "ratio"] == pytest.approx(0.5)
    assert vs.loc[("good", "webp"), "hi"] == pytest.approx(0.5)
    assert vs.loc[("webp", "webp"), "ratio"] == pytest.approx(1.0)  # the sweep: random's own bytes
    assert ("random", "jpeg") not in vs.index and set(vs["versus"]) == {"random"}


def test_psnr_and_ssim_batches_equal_scikit_image():
    from nicebench.compression.rate import image_quality, psnr_batch, ssim_batch

    rng = np.random.default_rng(0)
    for shape in ((3, 32, 32, 3), (2, 28, 28, 1), (2, 20, 33, 3)):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-30, 30, shape), 0, 255).astype(np.uint8)
        b[0] = a[0] if shape[0] == 2 else b[0]  # identical: PSNR inf
        m = rng.random(shape[:3]) < 0.3
        m[-1] = False  # an empty mask: NaN
        q = image_quality(a, b, m)
        s = ssim_batch(a, b, {"ssim_mask": m})
        np.testing.assert_allclose(s["ssim"], q["ssim"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(s["ssim_mask"], q["ssim_mask"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(psnr_batch(a, b), q["psnr"], rtol=1e-6)
        np.testing.assert_allclose(psnr_batch(a, b, m), q["psnr_mask"], rtol=1e-6)


def test_track_rows_with_a_tiny_model():
    model, ds = tiny_setup(size=32, n=6)
    x, y, m = nb.collate([ds[i] for i in range(len(ds))])
    sal = torch.rand(len(x), 1, 32, 32, generator=torch.Generator().manual_seed(3))
    gate = m.clone()
    gate[0] = 0  # all gates closed: coded wholly at low resolution, not an error
    rows = compression_rows(
        model,
        x,
        y,
        sal,
        gt_masks=m,
        keeps=(0.2, 1.0),
        binary_mask=gate,
        factors=(4, 8),
        qualities=(30, 75),
        dilate=1,
        ssim="all",
    )
    df = pd.DataFrame(rows)
    assert len(df) == 3 * 2 * 2 * len(x)  # masks × qualities × factors per image
    assert set(df["mask"]) == {"keep=0.2", "keep=1", "gate"}
    assert "keep=0.2 q=30 x8" in set(df["point"])
    gate_rows = df[df["mask"] == "gate"].groupby("image")["area"].first()
    assert gate_rows.iloc[0] == 0 and (gate_rows.iloc[1:] > 0).all()
    full = df[df["point"] == "keep=1 q=75 x4"]
    assert np.allclose(full["ratio"], 1.0)
    assert (full["correct_compressed"] == full["correct_reference"]).all()
    for col in ("psnr_object", "ssim_object", "agree_original", "payload_ratio", "ssim"):
        assert df[col].notna().all()
    # the same with a single compress() per point
    one = compress(x, sal, keep=0.2, quality=30, factor=8, dilate=1)
    sel = df[df["point"] == "keep=0.2 q=30 x8"]
    assert np.array_equal(sel["bytes"].to_numpy(), one.nbytes)
    assert np.allclose(sel["ssim"], one.ssim) and np.allclose(sel["psnr"], one.psnr)
    # SSIM only on the batch's front (cheap points elsewhere stay NaN)
    front = pd.DataFrame(
        compression_rows(model, x, y, sal, keeps=(0.2, 1.0), factors=(4, 8), qualities=(30, 75))
    )
    has = front.groupby("point")["ssim"].apply(lambda s: s.notna().all())
    assert has.any() and not has.all()
    assert (front.groupby("point")["ssim"].apply(lambda s: s.isna().all()) | has).all()
    sweep = pd.DataFrame(quality_sweep_rows(model, x, y, "jpeg", qualities=(10, 50, 75)))
    assert len(sweep) == 3 * len(x) and set(sweep["mask"]) == {"uniform"}
    q75 = sweep[sweep["quality"] == 75]
    assert np.allclose(q75["ratio"], 1.0)
    assert np.array_equal(q75["bytes"].to_numpy(), full["ref_bytes"].to_numpy())
    s = summarise(df, sweep)
    assert s["compression_ratio"] <= 1.0 and s["n_images"] == len(x)


def test_threaded_coding_gives_the_same_bytes(scenes, monkeypatch):
    from nicebench import codec_base

    x, _, _ = scenes
    arr = _u8(x)
    coder = nb.create_codec("jpeg")
    threaded = coder.roundtrip(arr, 40)
    monkeypatch.setenv("NICEBENCH_CODEC_THREADS", "1")
    assert codec_base.codec_threads() == 1
    serial = coder.roundtrip(arr, 40)
    assert threaded.streams == serial.streams
    assert np.array_equal(threaded.decoded, serial.decoded)


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif"])
def test_codecs_are_their_own_plugin_kind(name):
    assert name in nb.list_codecs() and name not in nb.list_methods()
    cls = nb.registry.get_codec_class(name)
    assert issubclass(cls, nb.Codec) and not issubclass(cls, nb.Method)
    if name not in CODECS:
        with pytest.raises(CodecError, match="not available"):
            nb.create_codec(name)
        return
    codec = nb.create_codec(name, qualities=(5, 50, 95))
    assert codec.qualities == (5, 50, 95) and codec.name == name and codec.subsampling == "4:2:0"
    assert codec.block == {"jpeg": 8, "webp": 16, "avif": 8}[name]
    with pytest.raises(CodecError, match="quality"):
        nb.create_codec(name, qualities=(0, 50))
    with pytest.raises(CodecError, match="at least one quality"):
        nb.create_codec(name, qualities=())
    if name == "webp":
        assert cls.subsamplings == ("4:2:0",)
        with pytest.raises(CodecError, match="subsampling"):
            nb.create_codec(name, subsampling="4:4:4")


def test_compression_is_a_registered_table_metric():
    from nicebench.compression.summary import summarise_table
    from nicebench.metrics import get_metric_spec

    spec = get_metric_spec("compression")
    assert "compression" in nb.list_metrics() and spec.kind == "table"
    assert spec.summary is summarise_table and spec.column == "compression_ratio"
    assert get_metric_spec("deletion").kind == "per_image"


@pytest.mark.parametrize("name", CODECS)
def test_roundtrip_tensor_is_roundtrip_on_tensors(scenes, name):
    from nicebench.codec import roundtrip_tensor

    x = scenes[0][:3]
    codec = nb.create_codec(name)
    coded = codec.roundtrip(to_uint8(x), 40).decoded
    out = codec.roundtrip_tensor(x, 40)
    assert out.dtype == x.dtype and out.device == x.device
    assert torch.equal(out, torch.from_numpy(coded).permute(0, 3, 1, 2).float() / 255)
    assert codec.roundtrip_tensor(x.half(), 40).dtype == torch.float16
    per_image = codec.roundtrip_tensor(x, [40, 90, 40])
    assert torch.equal(per_image[[0, 2]], out[[0, 2]]) and not torch.equal(per_image[1], out[1])
    with pytest.raises(CodecError, match="codecs: one codec per image"):
        roundtrip_tensor(x, [codec], 40)
    with pytest.raises(CodecError, match="quality"):
        codec.roundtrip_tensor(x, 0)


def test_create_codec_errors_and_aliases():
    assert nb.create_codec("JPG").name == "jpeg"
    with pytest.raises(CodecError, match="codec must be one of.*jpeg"):
        nb.create_codec("jpegxl")
    with pytest.raises(CodecError, match="unexpected keyword"):
        nb.create_codec("jpeg", quality=5)


def test_compress_with_a_codec_instance_equals_by_name(scenes):
    x, _, m = scenes
    by_name = compress(x, m > 0.5, codec="jpeg", subsampling="4:4:4")
    codec = nb.create_codec("jpeg", subsampling="4:4:4")
    by_instance = compress(x, m > 0.5, codec=codec)
    assert by_instance.streams == by_name.streams
    assert by_instance.settings == by_name.settings and by_name.settings["subsampling"] == "4:4:4"


class _Grey(nb.Codec):
    """A test codec: JPEG through the built-in :class:`JpegCodec`'s coders (not registered)."""

    def __init__(self, **params):
        super().__init__(**params)
        self.jpeg = JpegCodec(subsampling=self.subsampling)

    def encode(self, arr, quality):
        return self.jpeg.encode(arr, quality)

    def decode(self, data, channels):
        return self.jpeg.decode(data, channels)

    def header_size(self, data):
        return self.jpeg.header_size(data)


class _HeaderTooBig(_Grey):
    def header_size(self, data):
        return len(data)


class _FloatDecode(_Grey):
    def decode(self, data, channels):
        return super().decode(data, channels).astype(np.float32)


class _Inverted(_Grey):
    def encode(self, arr, quality):
        return super().encode(arr, 101 - quality)


class _NoQualityCheck(_Grey):
    def roundtrip(self, arr, quality):
        return super().roundtrip(arr, min(max(int(quality), 1), 100))


def test_check_codec_passes_a_good_codec_and_names_what_broke():
    assert check_codec(_Grey)["ok"]
    for cls, rule in [
        (_HeaderTooBig, "header_size"),
        (_FloatDecode, "decode must give back"),
        (_Inverted, "higher quality"),
        (_NoQualityCheck, "in roundtrip"),
    ]:
        with pytest.raises(ContractError, match=f"codec {cls.__name__}: .*{rule}"):
            check_codec(cls)
    with pytest.raises(ContractError, match="must subclass"):
        check_codec(int)
    assert issubclass(ContractError, AssertionError)


def test_nice_for_the_track_and_lam_auto(tmp_path, monkeypatch):
    """nice:codec=jpeg gates the codec's 8-px blocks against the track's own background;
    lam="auto" bisects the ladder for the largest λ within a point on held-out images."""
    from nicebench.methods.nice import LAM_LADDER, largest_passing

    calls = []

    def passes(lam):
        calls.append(lam)
        return lam <= 0.55

    assert largest_passing(LAM_LADDER, passes) == 0.55 and len(calls) <= 4
    assert largest_passing(LAM_LADDER, lambda lam: False) == LAM_LADDER[0]
    assert largest_passing(LAM_LADDER, lambda lam: True) == LAM_LADDER[-1]

    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    model, ds = tiny_setup(size=32, n=6)
    quick = {"epochs": 1, "n_train": 48, "batch_size": 24}
    nice = nb.create_method("nice", model, codec="jpeg", factor=8, **quick)
    assert nice.cell == 8
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(nice.reference_image(x), low_resolution(x, 8))
    with pytest.raises(nb.MethodError, match="reference must be 'lowres'"):
        nb.create_method("nice", model, codec="jpeg", reference="zero")
    plain = nb.create_method("nice", model, **quick)
    assert "codec" not in plain.training_params() and "n_holdout" not in plain.training_params()
    auto = nb.create_method("nice", model, lam="auto", codec="jpeg", n_holdout=12, **quick)
    auto.fit(ds.train_split())
    info = auto.train_info["lam_auto"]
    assert auto.lam == info["chosen"] and auto.lam in LAM_LADDER and auto.cell_px == 8
    assert info["n_holdout"] == 12 and 1 <= len(info["tried"]) <= 4
    # scenes has a validation split: λ is chosen on test-like images, not on training images
    assert info["held_out"] == "validation split" and auto.n_train == 48
    val = ds.train_split().validation_split()
    assert val.split == "val" and val.size == ds.size
    assert len(ds.validation_split()) == 1000
    fixed = nb.create_method("nice", model, lam=auto.lam, codec="jpeg", **quick)
    fixed.fit(ds.train_split())  # the same generator, from the cache
    xs = torch.stack([ds[i][0] for i in range(4)])
    assert torch.equal(auto.binary_mask(xs), fixed.binary_mask(xs))
    # without a validation split the split's last images are held out and not trained on
    train = ds.train_split()
    monkeypatch.setattr(type(train), "validation_split", lambda self: None)
    held = nb.create_method(
        "nice", model, lam="auto", codec="jpeg", n_holdout=12, **{**quick, "n_train": 60}
    )
    held.fit(train)
    assert held.train_info["lam_auto"]["held_out"] == "training split"
    assert held.n_train == len(train) - 12 == 52


def test_nice_trains_through_the_codec(tmp_path, monkeypatch):
    """train_quality codes each training composite at that quality (straight through in the
    backward pass): the loss sees the coded image, the gates still get gradients, and it is a
    different generator in the cache."""
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    model, ds = tiny_setup(size=32, n=6)
    quick = {"epochs": 1, "n_train": 48, "batch_size": 24}
    with pytest.raises(nb.MethodError, match="name one with codec="):
        nb.create_method("nice", model, train_quality=30)
    with pytest.raises(nb.MethodError, match=r"train_quality must be an integer in \[1, 100\]"):
        nb.create_method("nice", model, codec="jpeg", train_quality=0)
    looped = nb.create_method("nice", model, codec="jpeg", factor=8, train_quality=10, **quick)
    plain = nb.create_method("nice", model, codec="jpeg", factor=8, **quick)
    assert "train_quality" not in plain.training_params()
    assert looped.training_params()["train_quality"] == 10
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    coded = looped.coded(x)
    expected = nb.create_codec("jpeg").roundtrip(to_uint8(x), 10).decoded
    assert torch.equal(coded, torch.from_numpy(expected).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(plain.coded(x), x)

    looped.fit(ds.train_split())
    assert looped.train_info["identity"]["params"]["train_quality"] == 10
    module = looped.build_module(ds.train_split()).train()
    seen = []
    real = model.forward

    def spy(inp):
        seen.append(inp.detach().clone())
        return real(inp)

    monkeypatch.setattr(model, "forward", spy)
    y = torch.zeros(4, dtype=torch.long)
    loss, _ = looped.training_loss(module, x, y, torch.Generator().manual_seed(0))
    loss.backward()
    # the classifier saw JPEG-decoded images (multiples of 1/255), and the gates got gradients
    assert torch.allclose(seen[-1] * 255, (seen[-1] * 255).round(), atol=1e-4)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
