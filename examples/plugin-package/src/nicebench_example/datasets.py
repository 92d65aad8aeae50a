"""``bars``: grey images of one shape on a noisy background, with its pixel mask.

Three classes: a horizontal bar, a vertical bar and a square, at a random position, size and
brightness. Every item is generated from ``(seed, split, index)``, so the set needs no files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from nicebench import BenchDataset

CLASSES = ["horizontal", "vertical", "square"]
SPLITS = {"train": 0, "val": 1, "test": 2}


def render(seed: int, split: int, index: int, size: int) -> tuple[np.ndarray, int, np.ndarray]:
    """One item: (float32 image [size, size] in [0, 1], label, bool mask [size, size])."""
    rng = np.random.default_rng([seed, split, index])
    label = int(rng.integers(len(CLASSES)))
    long, short = rng.integers(size // 2, size - 4), rng.integers(3, max(4, size // 6))
    h, w = {0: (short, long), 1: (long, short)}.get(label, (long // 2 + 2, long // 2 + 2))
    y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    background = rng.uniform(0.1, 0.4)
    image = background + 0.08 * rng.standard_normal((size, size))
    image[mask] = rng.uniform(0.65, 0.95) + 0.03 * rng.standard_normal(int(mask.sum()))
    return np.clip(image, 0, 1).astype(np.float32), label, mask


class Bars(BenchDataset):
    """Bars and squares on noise (grey, ``size`` px, default 32); parameters ``n``, ``seed``."""

    has_masks = True
    model_arch = "scenecnn"
    model_recipe = {"epochs": 3, "lr": 4e-3, "batch_size": 64, "n_train": 1000, "jpeg_p": 0.0}
    classes = CLASSES
    mean = (0.3,)
    std = (0.25,)
    channels = 1

    def __init__(self, split: str = "test", size: int = 32, n: int = 200, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"bars: split must be one of {sorted(SPLITS)}, got {split!r}")
        if size < 16:
            raise ValueError(f"bars: size must be at least 16, got {size}")
        self.split, self.size, self.n, self.seed = split, int(size), int(n), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        image, label, mask = render(self.seed, SPLITS[self.split], index, self.size)
        return torch.from_numpy(image)[None], label, torch.from_numpy(mask)[None].float()

    def identity(self) -> dict[str, Any]:
        return {
            "name": "bars",
            "size": self.size,
            "seed": self.seed,
            "split": self.split,
            "n": self.n,
            "version": 1,
        }

    def train_split(self) -> Bars:
        return Bars("train", size=self.size, n=self.model_recipe["n_train"], seed=self.seed)
