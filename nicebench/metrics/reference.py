"""A straightforward per-image, per-step implementation of deletion/insertion.

The definition written out plainly, one forward pass per step: used by the tests to check the
vectorised metric and by ``bench/metrics.py`` as the baseline it must beat.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .faithfulness import blurred, pixel_ranks, substrate_image

__all__ = ["deletion_loop", "insertion_loop"]


@torch.no_grad()
def _curve_loop(model, image, start, finish, order, target, n_steps):
    c, h, w = image.shape
    per_step = math.ceil(h * w / n_steps)
    current = start.clone().reshape(c, -1)
    finish = finish.reshape(c, -1)
    probs = []
    for k in range(n_steps + 1):
        if k > 0:
            idx = order[(k - 1) * per_step : k * per_step]
            current[:, idx] = finish[:, idx]
        p = torch.softmax(model(current.reshape(1, c, h, w)), dim=1)[0, target]
        probs.append(p.item())
    probs = torch.tensor(probs)
    return ((probs.sum() - probs[0] / 2 - probs[-1] / 2) / n_steps).item()


def _loop(model, images, saliency, start, finish, n_steps, seed):
    n_steps = n_steps or images.shape[-2]
    ranks = pixel_ranks(saliency, seed)
    out = []
    for i in range(len(images)):
        with torch.no_grad():
            target = model(images[i : i + 1]).argmax(1).item()
        order = torch.argsort(ranks[i])
        out.append(_curve_loop(model, images[i], start[i], finish[i], order, target, n_steps))
    return torch.tensor(out)


def deletion_loop(model: nn.Module, images, saliency, n_steps=None, substrate="mean", seed=0):
    """Deletion AUCs (target: the predicted class), one image and one step at a time."""
    fill = substrate_image(model, images, substrate)
    return _loop(model, images, saliency, images, fill, n_steps, seed)


def insertion_loop(model: nn.Module, images, saliency, n_steps=None, seed=0):
    """Insertion AUCs from the blurred image, one image and one step at a time."""
    return _loop(model, images, saliency, blurred(images), images, n_steps, seed)
