"""The comparison methods (smoothgrad, gradshap, deeplift, gradcam++, scorecam, extremal) and
``precomputed``, each checked against an independent implementation or a hand-computed case
(their plugin contract runs in test_contract.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nicebench as nb
from nicebench import MethodError
from nicebench.config import PluginSpec
from nicebench.testing import TINY_SCENES, tiny_setup


def _batch(ds, n):
    return nb.collate([ds[i] for i in range(n)])[:2]


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1].item()


class _Linear(nn.Module):
    """f(x) = W · x (flattened) + c: attributions with a closed form."""

    def __init__(self, shape=(3, 8, 8), classes=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(classes, *shape, generator=g), requires_grad=False)
        self.register_buffer("mean", torch.full((1, shape[0], 1, 1), 0.4))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.w) + 1.0


def test_gradshap_and_deeplift_on_a_linear_model_are_w_times_x_minus_baseline():
    model = _Linear()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2, 0])
    w = model.w[t]
    for baseline, b in (("black", 0.0), ("mean", 0.4)):
        expected = (w * (x - b)).sum(1, keepdim=True)
        shap = nb.create_method("gradshap", model, baselines=baseline, n_samples=3)
        torch.testing.assert_close(shap.explain(x, t), expected, rtol=1e-5, atol=1e-5)
        dl = nb.create_method("deeplift", model, baseline=baseline)
        torch.testing.assert_close(dl.explain(x, t), expected, rtol=1e-5, atol=1e-5)


def test_deeplift_sums_to_the_score_difference():
    """DeepLIFT's summation-to-delta (exact without max-pooling) on a classifier with in-place
    ReLUs and a ``cam_layer`` alias, which captum's DeepLift cannot hook as they are."""
    from nicebench.models import Classifier

    torch.manual_seed(0)
    relu = nn.ReLU(inplace=True)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        relu,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    net[1].running_mean.normal_()
    model = Classifier(net, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 3, relu).eval()
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 1, 0])
    with warnings.catch_warnings(record=True) as caught:  # captum's hook notice is silenced
        warnings.simplefilter("always")
        sal = nb.create_method("deeplift", model, baseline="mean").explain(images, labels)
        warnings.warn("an unexpected warning", UserWarning, stacklevel=1)  # still shows
    assert [str(w.message) for w in caught] == ["an unexpected warning"]
    with torch.no_grad():
        base = model.mean.expand_as(images)
        delta = (model(images) - model(base)).gather(1, labels[:, None])[:, 0]
    torch.testing.assert_close(sal.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-5)
    assert relu.inplace and model.cam_layer is relu  # the classifier itself is left as it was


def test_smoothgrad_and_gradshap_agree_with_captum_in_expectation(tiny_scenes):
    """Our per-image counter-based sampling vs captum's NoiseTunnel / GradientShap (global RNG):
    the same estimators, so with many samples the maps agree."""
    from captum.attr import GradientShap, NoiseTunnel, Saliency

    ds, model = tiny_scenes
    images, labels = _batch(ds, 2)
    n = 128
    ours = nb.create_method("smoothgrad", model, n_samples=n, stdevs=0.2).explain(images, labels)
    torch.manual_seed(0)
    x = images.clone().requires_grad_()
    theirs = (
        NoiseTunnel(Saliency(model))
        .attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=n,
            nt_samples_batch_size=128,
            stdevs=0.2,
            target=labels,
            abs=True,
        )
        .amax(1, keepdim=True)
    )
    for a, b in zip(ours, theirs, strict=True):
        assert _pearson(a, b) > 0.95

    ours = nb.create_method(
        "gradshap", model, n_samples=n, baselines="black+white", stdevs=0.05
    ).explain(images, labels)
    bases = torch.stack([torch.zeros_like(images[0]), torch.ones_like(images[0])])
    theirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        np.random.seed(seed)
        theirs.append(
            GradientShap(model)
            .attribute(
                images.clone().requires_grad_(),
                baselines=bases,
                n_samples=n,
                stdevs=0.05,
                target=labels,
            )
            .sum(1)
        )
    for a, b, c in zip(ours, *theirs, strict=True):
        # as close to captum's estimate as captum's is to its own with other draws (the draws
        # differ, so up to Monte-Carlo error: ≈0.93 between captum's two at 128 samples)
        assert _pearson(a, b) > _pearson(c, b) - 0.1
    # the magnitude in expectation: at 128 samples one estimate's Monte-Carlo error alone is
    # ±10-20% (captum's own four seeds spread 0.00185-0.00226 on one tiny model), so compare at
    # 1024 samples, where it is a few percent
    ours = nb.create_method(
        "gradshap", model, n_samples=1024, baselines="black+white", stdevs=0.05
    ).explain(images, labels)
    torch.manual_seed(0)
    np.random.seed(0)
    theirs = (
        GradientShap(model)
        .attribute(
            images.clone().requires_grad_(),
            baselines=bases,
            n_samples=1024,
            stdevs=0.05,
            target=labels,
        )
        .sum(1)
    )
    assert ours.abs().mean().item() == pytest.approx(theirs.abs().mean().item(), rel=0.1)


def test_sampled_methods_are_seeded_per_image(tiny_scenes):
    ds, model = tiny_scenes
    images, labels = _batch(ds, 3)
    a = nb.create_method("smoothgrad", model, n_samples=4, seed=0)
    b = nb.create_method("smoothgrad", model, n_samples=4, seed=1)
    torch.manual_seed(123)
    first = a.explain(images, labels)
    torch.manual_seed(456)  # the global RNG plays no part
    torch.testing.assert_close(a.explain(images, labels), first, rtol=0, atol=0)
    assert not torch.allclose(b.explain(images, labels), first)


def test_gradcam_pp_matches_pytorch_grad_cam(tiny_scenes):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ds, model = tiny_scenes
    images, _ = _batch(ds, 8)
    with torch.no_grad():
        targets = model(images).argmax(1)
    ours = nb.create_method("gradcam++", model).explain(images, targets)[:, 0]
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with pgc.GradCAMPlusPlus(model=model, target_layers=[model.cam_layer]) as cam:
            theirs = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
    compared = 0
    for a, b in zip(ours, torch.as_tensor(theirs), strict=True):
        if a.std() < 1e-8 or b.std() < 1e-8:
            continue
        assert _pearson(a, b) >= 0.99
        compared += 1
    assert compared >= 4


def test_gradcam_pp_weights_hand_computed():
    from nicebench.methods.comparison import gradcam_pp_weights

    g = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # Σ A = 10
    # α = g²/(2g² + 10 g³): 1/(2+10) at g=1, 0.25/(0.5+1.25) at g=0.5; ReLU(g) drops g=-2; 0 at g=0
    expected = 1 / 12 * 1.0 + (0.25 / 1.75) * 0.5
    torch.testing.assert_close(gradcam_pp_weights(g, a), torch.tensor([[expected]]))


def _scorecam_reference(model, layer, image, target):
    """Score-CAM as the authors' code computes it, one image, one channel at a time (normalised
    input × mask, i.e. masked pixels at the classifier's mean)."""
    acts = {}
    h = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o.detach()))
    with torch.no_grad():
        model(image[None])
    h.remove()
    a = acts["a"][0]
    size = image.shape[-2:]
    cam = torch.zeros(size)
    mean = model.mean[0]
    for k in range(a.shape[0]):
        up = F.interpolate(a[k][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        if up.max() == up.min():
            continue
        norm = (up - up.min()) / (up.max() - up.min())
        x = norm * (image - mean) + mean  # normalise(x̃) = norm · normalise(x)
        with torch.no_grad():
            score = F.softmax(model(x[None]), dim=1)[0, target]
        cam += score * up
    return F.relu(cam)


def test_scorecam_matches_the_authors_loop(tiny_scenes):
    ds, model = tiny_scenes
    images, _ = _batch(ds, 2)
    with torch.no_grad():
        targets = model(images).argmax(1)
    ours = nb.create_method("scorecam", model, batch_size=50).explain(images, targets)[:, 0]
    for j in range(1):  # the reference loop is slow; the contract checks batch independence
        ref = _scorecam_reference(model, model.cam_layer, images[j], int(targets[j]))
        torch.testing.assert_close(ours[j], ref, rtol=1e-4, atol=1e-5)


# -- extremal perturbation ---------------------------------------------------------------------------
class _HighFrequency(nn.Module):
    """Class 0's logit is the image's high-frequency energy (blurring removes it); class 1 is 0."""

    def forward(self, x):
        lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], device=x.device).view(1, 1, 3, 3)
        e = F.conv2d(x.mean(1, keepdim=True), lap, padding=1).pow(2).mean((1, 2, 3))
        return torch.stack([100 * e, torch.zeros_like(e)], 1)


def test_extremal_finds_a_planted_object():
    size, side = 32, 10
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((yy + xx) % 2).float()
    images = torch.full((2, 3, size, size), 0.5)
    obj = torch.zeros(2, 1, size, size, dtype=torch.bool)
    for b, (y0, x0) in enumerate([(3, 19), (18, 4)]):
        obj[b, 0, y0 : y0 + side, x0 : x0 + side] = True
    images = torch.where(obj, checker.expand_as(images), images)
    # this model's reward is large (100 × the energy): the area weight of 224 px, not 32 px's
    m = nb.create_method(
        "extremal", _HighFrequency(), areas="0.1", steps=40, lr=0.1, regul=300.0, precision="fp32"
    )
    sal = m.explain(images, torch.zeros(2, dtype=torch.long))
    share = (sal * obj).flatten(1).sum(1) / sal.flatten(1).sum(1)
    assert (share > 0.6).all(), share  # the object is 10 % of the image
    assert (obj.flatten(1).float().mean(1) < 0.1).all()


def test_extremal_parts_hand_computed():
    from nicebench.methods.extremal import area_loss, blur_pyramid, perturb, smooth_mask

    mask = torch.tensor([[[[0.0, 1.0], [0.5, 1.0]]]])
    # area 0.5 → template [0, 0, 1, 1] against sorted [0, .5, 1, 1]
    torch.testing.assert_close(area_loss(mask, torch.tensor([0.5])), torch.tensor([0.0625]))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pyr = blur_pyramid(x, 4, 3.0)
    torch.testing.assert_close(perturb(pyr, torch.ones(2, 1, 16, 16)), x)
    torch.testing.assert_close(perturb(pyr, torch.zeros(2, 1, 16, 16)), pyr[:, 0])
    half = perturb(pyr, torch.full((2, 1, 16, 16), 0.5))  # level 1.5: between levels 1 and 2
    torch.testing.assert_close(half, (pyr[:, 1] + pyr[:, 2]) / 2)
    ones = smooth_mask(torch.ones(1, 1, 8, 8), (16, 16), 2, 3.0)
    assert ones.min() > 0.95  # an all-ones grid keeps everything (a soft maximum: not quite 1)
    one = torch.zeros(1, 1, 8, 8)
    one[0, 0, 4, 4] = 1
    m = smooth_mask(one, (16, 16), 2, 3.0)[0, 0]
    assert m[8, 8] > 0.99 and m[0, 0] < 1e-3 and m[8, 9] > m[8, 12]  # a bump around pixel (8, 8)


# -- precomputed -------------------------------------------------------------------------------------
def _maps(n, size, start=0):
    g = torch.Generator().manual_seed(7)
    return {i: torch.rand(size, size, generator=g) for i in range(start, start + n)}


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_precomputed_roundtrip(tmp_path, suffix):
    from nicebench.methods.precomputed import save_maps

    model, ds = tiny_setup(n=4)
    maps = _maps(4, ds.size)
    maps[2] = maps[2][None]  # 1×H×W is accepted too
    path = save_maps(tmp_path / f"maps{suffix}", maps)
    images, labels = _batch(ds, 4)
    m = nb.create_method("precomputed", model, path=str(path))
    out = m.explain(images[[3, 1]], labels[[3, 1]], indices=[3, 1])
    torch.testing.assert_close(out[:, 0], torch.stack([maps[3], maps[1]]))


def test_precomputed_reads_pt_with_string_keys_and_errors_clearly(tmp_path):
    model, ds = tiny_setup(n=4)
    images, labels = _batch(ds, 2)
    s = ds.size
    good = {"0": torch.rand(s, s), "1": torch.rand(1, s, s)}
    torch.save(good, tmp_path / "ok.pt")
    m = nb.create_method("precomputed", model, path=str(tmp_path / "ok.pt"))
    torch.testing.assert_close(m.explain(images, labels, indices=[0, 1])[1, 0], good["1"][0])

    with pytest.raises(MethodError, match=r"ok\.pt has no map for image 5"):
        m.explain(images[:1], labels[:1], indices=[5])
    with pytest.raises(MethodError, match="indices"):
        m.explain(images, labels)

    np.savez(tmp_path / "shape.npz", **{"0": np.zeros((s, s + 1)), "1": np.zeros((s, s))})
    m = nb.create_method("precomputed", model, path=str(tmp_path / "shape.npz"))
    with pytest.raises(
        MethodError,
        match=rf"shape\.npz: map for image 0 has shape \({s}, {s + 1}\)"
        rf".*expected \({s}, {s}\) or \(1, {s}, {s}\)",
    ):
        m.explain(images, labels, indices=[0, 1])

    nan = np.zeros((s, s))
    nan[3, 4] = np.nan
    np.savez(tmp_path / "nan.npz", **{"0": np.zeros((s, s)), "1": nan})
    m = nb.create_method("precomputed", model, path=str(tmp_path / "nan.npz"))
    with pytest.raises(MethodError, match=r"nan\.npz: map for image 1 has 1 NaN/inf"):
        m.explain(images, labels, indices=[0, 1])

    np.savez(tmp_path / "keys.npz", first=np.zeros((s, s)))
    with pytest.raises(MethodError, match=r"keys\.npz: key 'first' is not an image index"):
        nb.create_method("precomputed", model, path=str(tmp_path / "keys.npz"))
    np.savez(tmp_path / "obj.npz", **{"0": np.array([{"a": 1}], dtype=object)})
    m = nb.create_method("precomputed", model, path=str(tmp_path / "obj.npz"))
    with pytest.raises(MethodError, match=r"obj\.npz: map for image 0"):  # no pickle
        m.explain(images[:1], labels[:1], indices=[0])
    with pytest.raises(MethodError, match="does not exist"):
        nb.create_method("precomputed", model, path=str(tmp_path / "missing.npz"))
    with pytest.raises(MethodError, match="give the maps file"):
        nb.create_method("precomputed", model)


def test_runner_passes_each_batch_its_dataset_indices(tiny_scenes, tmp_path):
    """A cell of images 4..11 in batches of 3 finds each image's own map (and the sanity metric,
    which re-explains, too); a cell whose images have no maps fails naming the first missing."""
    from nicebench.methods.precomputed import save_maps
    from nicebench.runner import Cell, run_cell

    ds, _ = tiny_scenes
    # map i is 1 at one pixel that depends on i: its deletion curve drops where that pixel goes
    maps = {}
    for i in range(4, 12):
        m = torch.zeros(ds.size, ds.size)
        m[i, i] = 1.0
        maps[i] = m
    path = save_maps(tmp_path / "maps.npz", maps)
    spec = PluginSpec.make("precomputed", {"path": str(path)})
    dspec = PluginSpec.make("scenes", TINY_SCENES)
    cell = Cell(
        dataset=dspec,
        method=spec,
        start=4,
        stop=12,
        shard=0,
        metrics=(
            "deletion",
            "sanity_spearman",
            "random_logit",
            "cascade_spearman",
            "sensitivity_max",
        ),
        batch_size=3,
        settings=(("n_steps", 4), ("sample_images", 8)),
    )
    res = run_cell(cell)
    assert res.status == "ok", res.error
    kept = {i: a for i, name, a in res.artifacts if name == "map"}
    assert sorted(kept) == [4, 5, 6, 7]  # the figure sample: images below sample_images=8
    for i, a in kept.items():
        assert np.unravel_index(np.argmax(a), a.shape) == (i, i)
    sanity = [v for _, _, _, col, v in res.image_rows if col == "sanity_spearman"]
    assert len(sanity) == 8 and all(v == pytest.approx(1.0) for v in sanity)
    # every metric that explains again passes the indices (MetricContext.explain_kwargs): maps
    # that ignore the model and the class are their own under randomisation and another class,
    # and do not move under input noise
    by_col = {}
    for _, _, _, col, v in res.image_rows:
        by_col.setdefault(col, []).append(v)
    assert all(v == pytest.approx(1.0) for v in by_col["random_logit"])
    assert all(v == pytest.approx(1.0) for v in by_col["cascade_spearman"])
    assert all(v == pytest.approx(0.0) for v in by_col["sensitivity_max"])
    bad = run_cell(
        Cell(
            dataset=dspec,
            method=spec,
            start=0,
            stop=6,
            shard=0,
            metrics=("deletion",),
            batch_size=3,
        )
    )
    assert bad.status == "failed" and "has no map for image 0" in bad.error
