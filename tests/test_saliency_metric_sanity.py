"""The Dabkowski & Gal saliency metric and the Adebayo et al. model-randomisation check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from nicebench.metrics.saliency_metric import crop_resize, saliency_metric, tightest_boxes
from nicebench.metrics.sanity import (
    parametrised_layers,
    randomised_model,
    rankdata,
    sanity_spearman,
    spearman,
)
from nicebench.registry import get_method_class
from nicebench.testing import tiny_setup

pytestmark = pytest.mark.usefixtures("test_cache_one_thread")


@pytest.fixture
def tiny():
    model, ds = tiny_setup(n=8)
    images = torch.stack([ds[i][0] for i in range(8)])
    return model, images


def _probs(model, x):
    with torch.no_grad():
        return F.softmax(model(x), 1)


def test_tightest_boxes():
    keep = torch.zeros(3, 10, 12, dtype=torch.bool)
    keep[0, 2:5, 3:9] = True
    keep[1, 7, 11] = True
    boxes = tightest_boxes(keep)
    assert boxes[0].tolist() == [3, 2, 9, 5]
    assert boxes[1].tolist() == [11, 7, 12, 8]
    assert boxes[2].tolist() == [0, 0, 12, 10]  # nothing kept: the whole image


def test_crop_resize_full_box_is_identity_and_crop_is_bilinear(tiny):
    _, x = tiny
    full = torch.tensor([[0.0, 0, 32, 32]]).repeat(8, 1)
    torch.testing.assert_close(crop_resize(x, full, torch.arange(8)), x)
    crop = crop_resize(x[:1], torch.tensor([[8.0, 4, 24, 20]]), torch.tensor([0]))
    ref = F.interpolate(x[:1, :, 4:20, 8:24], size=(32, 32), mode="bilinear", align_corners=False)
    # identical away from the border, where roi_align reads the pixels just outside the box
    torch.testing.assert_close(crop[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_full_image_box_scores_minus_log_p(tiny):
    model, x = tiny
    flat = torch.ones(8, 1, 32, 32)  # every threshold keeps every pixel: the whole image
    p = _probs(model, x)
    target = p.argmax(1)
    got = saliency_metric(model, x, flat)
    expected = -torch.log(p.gather(1, target[:, None]).squeeze(1))
    torch.testing.assert_close(got, expected)


def test_tiny_box_clamps_area_to_five_percent(tiny):
    model, x = tiny
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    peak = -((yy - 10) ** 2 + (xx - 20) ** 2)  # strictly falls away from (10, 20)
    sal = peak.expand(8, 1, 32, 32)
    score, info = saliency_metric(model, x, sal, shares=(0.01,), return_details=True)
    assert (info["area"] < 0.05).all()
    box = info["box"][0]
    crops = crop_resize(x, box.expand(8, 4), torch.arange(8))
    target = _probs(model, x).argmax(1)
    p = _probs(model, crops).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(score, math.log(0.05) - torch.log(p))


def test_best_box_over_the_sweep_and_label_target(tiny):
    model, x = tiny
    sal = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    best, info = saliency_metric(model, x, sal, return_details=True)
    torch.testing.assert_close(best, info["scores"].min(1).values)
    mean = saliency_metric(model, x, sal, reduce="mean")
    assert (mean >= best - 1e-6).all()
    labels = torch.zeros(8, dtype=torch.long)
    by_label = saliency_metric(model, x, sal, target="label", labels=labels)
    by_tensor = saliency_metric(model, x, sal, target=labels)
    torch.testing.assert_close(by_label, by_tensor)
    with pytest.raises(ValueError):
        saliency_metric(model, x, sal[:, :, :16])


def test_rankdata_and_spearman_match_scipy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (4, 300), generator=gen).float()  # many ties
    b = torch.randn(4, 300, generator=gen) + a
    # without ties, the ranks are the 1-based positions in the sorted order
    order = np.stack([np.argsort(np.argsort(r)) + 1 for r in b.numpy()])
    np.testing.assert_array_equal(rankdata(b).numpy(), order)
    from scipy.stats import rankdata as sp_rankdata

    np.testing.assert_allclose(rankdata(a).numpy(), np.stack([sp_rankdata(r) for r in a.numpy()]))
    rho = spearman(a.view(4, 1, 15, 20), b.view(4, 1, 15, 20))
    ref = [spearmanr(x, y).statistic for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(rho.numpy(), ref, atol=1e-6)
    assert torch.isnan(spearman(torch.ones(1, 10), torch.randn(1, 10, generator=gen))).all()


def test_randomised_model_cascades_from_the_top(tiny):
    model, x = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    rand = randomised_model(model, top_k=2, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    names = [n for n, _ in parametrised_layers(model)]
    assert rand.randomised_layers == names[-2:]
    for name, mod in parametrised_layers(rand):
        same = torch.equal(mod.weight, before[f"{name}.weight"])
        assert same == (name not in names[-2:]), name
    for k, v in model.state_dict().items():  # the original is unchanged
        assert torch.equal(v, before[k])
    again = randomised_model(model, top_k=2, seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(rand.parameters(), again.parameters(), strict=True)
    )
    assert not rand.training and not any(p.requires_grad for p in rand.parameters())
    assert not torch.allclose(model(x), rand(x))
    every = randomised_model(model, top_k=None)
    assert every.randomised_layers == names
    with pytest.raises(ValueError):
        randomised_model(model, top_k=len(names) + 1)


def test_sanity_separates_edges_from_gradients(tiny):
    model, x = tiny
    targets = model(x).argmax(1)
    edges = get_method_class("edges")
    grads = get_method_class("saliency")
    rho_edges = sanity_spearman(lambda m: edges(m), model, x, targets, top_k=2)
    rho_grads = sanity_spearman(grads(model), model, x, targets, top_k=2)
    torch.testing.assert_close(rho_edges, torch.ones(8))
    assert rho_grads.mean() < 0.9
    # precomputed maps give the same answer
    maps = grads(model).explain(x, targets)
    torch.testing.assert_close(
        sanity_spearman(grads(model), model, x, targets, maps=maps, top_k=2), rho_grads
    )


def test_sanity_for_a_learned_method_reuses_its_weights(tiny):
    """sanity_spearman rebuilds a fitted learned method on the randomised classifier with its
    learned decoder as it is (swapping only the classifier), and trains nothing."""
    model, x = tiny
    _, ds = tiny_setup(n=8)
    rtsal = get_method_class("rtsal")(model, n_train=16, epochs=1, batch_size=16)
    rtsal.fit(ds.train_split())
    learned = {k: v.clone() for k, v in rtsal.decoder.state_dict().items()}
    targets = model(x).argmax(1)
    rand = randomised_model(model, top_k=2)
    rebuilt = rtsal.with_model(rand)  # what sanity_spearman does with a fitted method
    assert rebuilt.model is rand and rebuilt.fitted and rtsal.model is model
    reused = rebuilt.decoder.state_dict()
    assert reused.keys() == learned.keys()
    assert all(torch.equal(reused[k], v) for k, v in learned.items()), "decoder not reused"
    maps, rmaps = rtsal.explain(x, targets), rebuilt.explain(x, targets)
    assert not torch.equal(maps, rmaps)  # the classifier did change under the decoder
    rho = sanity_spearman(rtsal, model, x, targets, maps=maps, random_model=rand)
    torch.testing.assert_close(rho, spearman(maps, rmaps))
    assert all(torch.equal(rtsal.decoder.state_dict()[k], v) for k, v in learned.items())


def test_sanity_check_runs_for_learned_methods_without_with_model():
    """A fitted learned method is reused on the randomised classifier (no refit)."""
    import nicebench as nb
    from nicebench.metrics import randomised_model, sanity_spearman
    from nicebench.testing import tiny_setup

    model, ds = tiny_setup(n=4)
    m = nb.create_method("nice", model, **nb.registry.get_method_class("nice").quick_params)
    m.fit(ds.train_split())
    images = torch.stack([ds[i][0] for i in range(4)])
    rho = sanity_spearman(
        m, model, images, torch.zeros(4, dtype=torch.long), random_model=randomised_model(model)
    )
    # the amortized mask looks only at the image: identical maps on the randomised model (NaN
    # only for a constant map, whose ranks are all tied)
    defined = ~rho.isnan()
    assert defined.any(), rho
    torch.testing.assert_close(rho[defined], torch.ones_like(rho[defined]))
    maps = m.explain(images, torch.zeros(4, dtype=torch.long)).flatten(1)
    assert torch.equal(~defined, maps.amin(1) == maps.amax(1))
