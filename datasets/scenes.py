"""``scenes``: procedural RGB scenes, one class object on a natural photo, with its pixel mask.

Every image is generated on the fly and deterministically from ``(seed, split, index)``: a random
crop of one of the photos bundled with scikit-image, a few distractor strokes (elongated ellipses,
never a class shape), and one object of a class that stays distinct under rotation, drawn with a
random colour, scale, rotation and position. The object's pixel mask is the ground truth for the
localisation metrics and the ``oracle`` method. Needs nothing installed beyond scikit-image.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from PIL import Image

from nicebench import BenchDataset, register_dataset

CLASSES = ["disk", "crescent", "triangle", "star", "cross", "ring"]
PHOTOS = [
    "astronaut",
    "coffee",
    "rocket",
    "chelsea",
    "immunohistochemistry",
    "hubble_deep_field",
    "grass",
    "gravel",
    "brick",
    "camera",
    "moon",
    "coins",
    "clock",
    "text",
    "page",
]
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTHS = {"train": 12000, "val": 1000, "test": 2000}


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    import skimage.data

    out = []
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        out.append(Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8)))
    return tuple(out)


def _inside(cls: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean inside-test of class shape ``cls`` at local coordinates (unit circumradius)."""
    rho = np.hypot(u, v)
    if cls == 0:  # disk
        return rho <= 0.85
    if cls == 1:  # crescent: a disk with an off-centre bite
        return (rho <= 0.9) & (np.hypot(u - 0.45, v) > 0.62)
    if cls == 2:  # equilateral triangle, circumradius 1 (inradius 0.5)
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            phi = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(phi) + v * np.sin(phi) >= -0.5
        return inside
    if cls == 3:  # five-pointed star
        t = (np.arctan2(v, u) * 5 / (2 * np.pi)) % 1.0
        return rho <= 0.38 + 0.62 * np.abs(1 - 2 * t)
    if cls == 4:  # plus-shaped cross
        a, b = np.abs(u), np.abs(v)
        return ((a <= 0.3) & (b <= 0.9)) | ((b <= 0.3) & (a <= 0.9))
    if cls == 5:  # ring
        return (rho >= 0.5) & (rho <= 0.9)
    raise ValueError(f"unknown scenes class {cls}")


def _coverage(size: int, cx: float, cy: float, r: float, theta: float, test) -> np.ndarray:
    """Anti-aliased coverage in [0,1] of a shape (2×2 supersampling), shape ``[size,size]``.

    Only the shape's bounding box is evaluated; everything else is 0.
    """
    ss = 2
    out = np.zeros((size, size), dtype=np.float32)
    x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
    y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
    if x1 <= x0 or y1 <= y0:
        return out
    gx = x0 + (np.arange((x1 - x0) * ss, dtype=np.float32) + 0.5) / ss
    gy = y0 + (np.arange((y1 - y0) * ss, dtype=np.float32) + 0.5) / ss
    dx, dy = gx[None, :] - cx, gy[:, None] - cy
    c, s = np.cos(theta), np.sin(theta)
    u = (c * dx + s * dy) / r
    v = (-s * dx + c * dy) / r
    cov = test(u, v).astype(np.float32)
    out[y0:y1, x0:x1] = cov.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return out


def render_scene(
    seed: int, split_code: int, index: int, size: int, n_classes: int = len(CLASSES)
) -> tuple[np.ndarray, int, np.ndarray]:
    """Render scene ``index``: (uint8 image [H,W,3], label, bool mask [H,W])."""
    rng = np.random.default_rng([seed, split_code, index])
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    side = int(rng.uniform(0.25, 1.0) * min(w, h))
    x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
    bg = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
    img = np.asarray(bg, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.ascontiguousarray(
        np.clip((img - 0.5) * rng.uniform(0.6, 1.1) + 0.5 + rng.uniform(-0.1, 0.1), 0, 1)
    )

    def paint(cov: np.ndarray, colour: np.ndarray) -> None:
        ys, xs = np.nonzero(cov.any(1))[0], np.nonzero(cov.any(0))[0]
        if len(ys) == 0:
            return
        box = np.s_[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        c = cov[box][..., None]
        shade = 1.0 + 0.04 * rng.standard_normal(c.shape).astype(np.float32)
        fill = np.clip(colour[None, None, :] * shade, 0, 1)
        img[box] = c * fill + (1 - c) * img[box]

    for _ in range(rng.integers(1, 4)):  # distractor strokes: elongated ellipses
        ar = rng.uniform(0.15, 0.35)
        dr = rng.uniform(0.12, 0.3) * size
        dcx, dcy = rng.uniform(0, size, 2)

        def stroke(u, v, ar=ar):
            return u**2 + (v / ar) ** 2 <= 1.0

        paint(_coverage(size, dcx, dcy, dr, rng.uniform(0, np.pi), stroke), rng.uniform(0, 1, 3))

    label = int(rng.integers(n_classes))
    r = rng.uniform(0.2, 0.3) * size
    cx, cy = rng.uniform(r, size - r, 2)
    local_mean = img[::4, ::4].reshape(-1, 3).mean(0)
    colour = rng.uniform(0, 1, 3)
    for _ in range(8):  # keep the object visible against its background
        if np.abs(colour - local_mean).sum() > 0.6:
            break
        colour = rng.uniform(0, 1, 3)
    cov = _coverage(size, cx, cy, r, rng.uniform(0, 2 * np.pi), lambda u, v: _inside(label, u, v))
    paint(cov, colour)
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return image, label, cov >= 0.5


@register_dataset("scenes")
class Scenes(BenchDataset):
    """Procedural scenes; parameters ``size`` (64, 128 or 224), ``n`` (length), ``seed``."""

    has_masks = True
    model_arch = "scenecnn"
    model_recipe = {
        "epochs": 10,
        "lr": 4e-3,
        "batch_size": 128,
        "weight_decay": 5e-4,
        "n_train": 12000,
    }
    classes = CLASSES
    mean = (0.46, 0.44, 0.41)
    std = (0.27, 0.26, 0.27)
    channels = 3

    def __init__(
        self,
        split: str = "test",
        size: int = 64,
        n: int | None = None,
        seed: int = 0,
        train_n: int | None = None,
        train_epochs: int | None = None,
    ):
        if split not in SPLIT_CODES:
            raise ValueError(f"scenes: split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        if size not in (32, 64, 128, 224):
            raise ValueError(f"scenes: size must be 64, 128 or 224 (32 for tests), got {size}")
        self.split, self.size, self.seed = split, int(size), int(seed)
        self.n = int(n) if n is not None else DEFAULT_LENGTHS[split]
        # train_n / train_epochs shrink the classifier's recipe (tiny configs for tests)
        self.train_n, self.train_epochs = train_n, train_epochs
        recipe = dict(type(self).model_recipe)
        if train_n is not None:
            recipe["n_train"] = int(train_n)
        if train_epochs is not None:
            recipe["epochs"] = int(train_epochs)
        self.model_recipe = recipe

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        image, label, mask = render_scene(self.seed, SPLIT_CODES[self.split], index, self.size)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
        return x, label, torch.from_numpy(mask)[None].float()

    def identity(self) -> dict[str, Any]:
        return {
            "name": "scenes",
            "size": self.size,
            "seed": self.seed,
            "split": self.split,
            "n": self.n,
            "version": 2,
        }

    def train_split(self) -> Scenes:
        return Scenes(
            "train",
            size=self.size,
            n=self.model_recipe["n_train"],
            seed=self.seed,
            train_n=self.train_n,
            train_epochs=self.train_epochs,
        )

    def validation_split(self) -> Scenes:
        """The ``val`` split (1000 scenes of their own seed stream, as the test split's)."""
        return Scenes(
            "val",
            size=self.size,
            seed=self.seed,
            train_n=self.train_n,
            train_epochs=self.train_epochs,
        )
