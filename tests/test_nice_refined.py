"""``nice-refined``: NICE's generator as the start of the batch gate optimizer."""

from __future__ import annotations

import pytest
import torch

import nicebench as nb
from nicebench.models import build_arch, predict, train_classifier
from nicebench.registry import METHODS

QUICK = {"epochs": 1, "n_train": 256, "batch_size": 64, "cell": 4}


@pytest.fixture(scope="module")
def fitted():
    """A scenes-32 classifier trained in seconds, NICE fitted on it (one quick epoch, in the
    tests' private cache), and a batch of test images with the classifier's predictions."""
    torch.manual_seed(0)
    train = nb.load_dataset("scenes", split="train", size=32, n=1000)
    model = build_arch("scenecnn", train)
    train_classifier(model, train, {"epochs": 4, "lr": 5e-3, "batch_size": 64, "jpeg_p": 0.0})
    model.eval().requires_grad_(False)
    test = nb.load_dataset("scenes", split="test", size=32, n=12)
    images, _, _ = nb.collate([test[i] for i in range(len(test))])
    nice = METHODS.get("nice")(model, **QUICK).fit(train)
    return model, train, images, predict(model, images), nice


def _refined(model, train, **kw):
    return METHODS.get("nice-refined")(model, **{**QUICK, **kw}).fit(train)


def test_zero_steps_is_nice_and_the_generator_is_nices(fitted):
    model, train, x, y, nice = fitted
    refined = _refined(model, train, steps=0)
    assert refined.train_info == nice.train_info  # the same cached generator, not a new one
    assert torch.equal(refined.explain(x, y), nice.explain(x, y))


def test_refinement_moves_the_gates_towards_nice_loss(fitted):
    """More steps change the logits from the generator's, and lower NICE's loss on the batch
    (cross-entropy of the masked images + λ·L0 + μ·TV at the test-time mask)."""
    model, train, x, y, nice = fitted
    start = nice.log_alpha(x)
    refined = _refined(model, train, steps=15, refine_lr=0.3)
    after = refined.log_alpha(x)
    assert (after - start).abs().max() > 0.5
    assert refined.last_stats["steps_mean"] == 15

    def loss(method, la):
        keep = nb.gates.test_mask(la)
        keep = nb.gates.upsample_cells(keep, method.cell_size(32, 32), (32, 32))
        mixed = keep * x + (1 - keep) * method.reference_image(x)
        ce = torch.nn.functional.cross_entropy(model(mixed), y)
        return ce + method.lam * nb.gates.expected_l0(la).mean()

    assert loss(refined, after) < loss(nice, start)


def test_bad_refinement_parameters(fitted):
    model = fitted[0]
    for bad in ({"steps": -1}, {"precision": "fp16"}, {"check_every": 0}):
        with pytest.raises(nb.MethodError, match=next(iter(bad))):
            METHODS.get("nice-refined")(model, **bad)
