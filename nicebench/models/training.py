"""Deterministic classifier training with random flips and JPEG round-trips as augmentation.

The JPEG round-trip is the compression track's codec (:class:`nicebench.codec.JpegCodec`, through
:meth:`~nicebench.Codec.roundtrip_tensor`), so a classifier is trained on the same Pillow encoder it
is later measured on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..codec import JpegCodec, roundtrip_tensor
from ..data import BenchDataset
from ..faults import checkpoint
from .architectures import Classifier

__all__ = ["jpeg_roundtrip", "materialise", "predict", "train_classifier"]


@cache
def _jpeg(subsampling: int) -> JpegCodec:
    return JpegCodec(subsampling=subsampling)


def jpeg_roundtrip(
    images: torch.Tensor, quality: int | np.ndarray, subsampling: int | np.ndarray = 2
) -> torch.Tensor:
    """Encode and decode each image of ``[B,C,H,W]`` in [0,1] as JPEG (per-image quality and
    Pillow subsampling code 0/1/2) with :func:`nicebench.codec.roundtrip_tensor` and the
    compression track's :class:`JpegCodec`, on the codec thread pool."""
    codes = np.broadcast_to(np.asarray(subsampling), (images.shape[0],))
    return roundtrip_tensor(images.float(), [_jpeg(int(s)) for s in codes], quality)


def materialise(dataset: BenchDataset, workers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (uint8 ``[N,C,H,W]``) and labels of a dataset, generated with worker processes."""
    # its own generator: the loader's base seed must not draw from the global RNG
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=256,
        num_workers=workers if len(dataset) > 2000 else 0,
        collate_fn=_collate_uint8,
        generator=torch.Generator().manual_seed(0),
    )
    xs, ys = [], []
    for x, y in tqdm(loader, desc=f"materialise {dataset.registered_name}", leave=False):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _collate_uint8(items):
    x = torch.stack([(it[0] * 255 + 0.5).to(torch.uint8) for it in items])
    return x, torch.as_tensor([it[1] for it in items], dtype=torch.long)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Arg-max class of ``images`` (float in [0,1] or uint8), in batches."""
    device = next(model.parameters()).device
    preds = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        preds.append(model(x).argmax(1).cpu())
    return torch.cat(preds)


def train_classifier(
    model: Classifier, train: BenchDataset, recipe: dict[str, Any], seed: int = 0
) -> None:
    """Deterministic training: AdamW, one-cycle lr, random flips and JPEG round-trips. The
    weights are bitwise reproducible for a torch version and thread count; the global RNG is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _train_classifier(model, train, recipe, seed)


def _train_classifier(model: Classifier, train: BenchDataset, recipe: dict[str, Any], seed: int):
    rng = np.random.default_rng(seed)
    x_all, y_all = materialise(train)
    epochs, bs = int(recipe.get("epochs", 8)), int(recipe.get("batch_size", 128))
    jpeg_p = float(recipe.get("jpeg_p", 0.5))
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.get("lr", 3e-3), weight_decay=recipe.get("weight_decay", 0)
    )
    steps = epochs * ((len(x_all) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.get("lr", 3e-3), total_steps=steps)
    flip = bool(recipe.get("flip", True))
    model.use_channels_last(True)  # ~1.5x faster convolutions on CPU
    model.train()
    gen = torch.Generator().manual_seed(seed)

    def augmented(idx: torch.Tensor, f: torch.Tensor | None, sel, q, ss) -> torch.Tensor:
        x = x_all[idx].float().div_(255)
        if f is not None:
            x[f] = x[f].flip(-1)
        if sel is not None:
            x[sel] = jpeg_roundtrip(x[sel], q, ss)
        return x

    def draws(order: torch.Tensor):
        """Each batch's indices and augmentation draws, in the order the generators give them."""
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            f = torch.rand(len(idx), generator=gen) < 0.5 if flip else None
            sel = q = ss = None
            if jpeg_p > 0:
                sel = np.nonzero(rng.random(len(idx)) < jpeg_p)[0]
                if len(sel):
                    q = rng.integers(20, 96, len(sel))
                    ss = rng.choice([0, 2], len(sel))
                else:
                    sel = None
            yield idx, f, sel, q, ss

    # the next batch is augmented (JPEG round-trips on the codec threads) while this one trains;
    # the draws stay in order, so the weights are those of the sequential loop
    with ThreadPoolExecutor(1, thread_name_prefix="nicebench-augment") as prefetch:
        for epoch in tqdm(range(epochs), desc=f"train {train.registered_name}", leave=False):
            order = torch.randperm(len(x_all), generator=gen)
            batches = draws(order)
            this = next(batches, None)
            pending = None if this is None else prefetch.submit(augmented, *this)
            while this is not None:
                x = pending.result()
                nxt = next(batches, None)
                pending = None if nxt is None else prefetch.submit(augmented, *nxt)
                loss = F.cross_entropy(model(x), y_all[this[0]], label_smoothing=0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                checkpoint("train")
                this = nxt
            del epoch
    model.use_channels_last(False)
    model.eval()
