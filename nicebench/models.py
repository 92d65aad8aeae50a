"""Classifiers: architectures, deterministic train-on-first-use with JPEG augmentation, and a cache.

:func:`load_model` returns a frozen :class:`Classifier` in eval mode that takes images in [0, 1]
and normalises them itself. Weights live under :func:`nicebench.cache_dir` and are loaded with
``torch.load(weights_only=True)``. :func:`cached_module` is the same cache for learned methods.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from .data import BenchDataset, cache_dir, load_dataset

__all__ = [
    "Classifier",
    "load_model",
    "build_arch",
    "cached_module",
    "stable_hash",
    "model_fingerprint",
    "jpeg_roundtrip",
    "materialise",
    "last_conv_layer",
    "predict",
]

MODEL_CODE_VERSION = 3  # 3: initial weights seeded (they drew from the global RNG before)


def native_cpu_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX), so bf16 autocast
    speeds up oneDNN convolutions instead of emulating them."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - private helpers of this torch version
        return False


def model_fingerprint(model: nn.Module) -> str:
    """A stable hash of a model's state (names, shapes, dtypes and bytes of every tensor): the
    classifier's part of the cache key of anything trained against it."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


class Classifier(nn.Module):
    """``net(normalise(x))`` for ``x`` in [0, 1]; exposes ``cam_layer`` (the Grad-CAM layer)."""

    def __init__(self, net: nn.Module, mean, std, num_classes: int, cam_layer: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.num_classes = num_classes
        self.cam_layer = cam_layer
        self.channels_last = False

    def use_channels_last(self, on: bool = True) -> Classifier:
        """Run convolutions in channels-last layout (about 1.5× faster on CPUs)."""
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


def _scenecnn(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
    """Four conv blocks of 16-32-64-128 channels (the first strided), global average pooling,
    a linear head. The Grad-CAM layer sees an 8×8 grid at 64 px (size/8 in general)."""
    stride = 2 * max(1, size // 64)
    layers: list[nn.Module] = []
    cin = channels
    for i, cout in enumerate((16, 32, 64, 128)):
        layers += [
            nn.Conv2d(cin, cout, 3, stride=stride if i == 0 else 1, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        if i in (1, 2):
            layers.append(nn.MaxPool2d(2))
        cin = cout
    features = nn.Sequential(*layers)
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin, num_classes)]
    net = nn.Sequential(features, *head)
    return net, features[-1]


def _lenet5(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
    """The NICE code's LeNet-5: conv 5×5×20, pool, conv 5×5×50, pool, fc 800→500→classes."""
    relu2 = nn.ReLU()
    features = nn.Sequential(
        nn.Conv2d(channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), relu2, nn.MaxPool2d(2),
    )  # fmt: skip
    side = ((size - 4) // 2 - 4) // 2
    net = nn.Sequential(
        features, nn.Flatten(), nn.Linear(50 * side * side, 500), nn.ReLU(),
        nn.Linear(500, num_classes),
    )  # fmt: skip
    return net, relu2


def _resnet50(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
    import torchvision

    try:
        net = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
    except Exception as exc:  # offline and not in torch's hub cache
        raise FileNotFoundError(
            "torchvision's pretrained ResNet-50 weights are not cached and could not be "
            f"downloaded ({type(exc).__name__}); run once online or copy them into "
            f"{torch.hub.get_dir()}/checkpoints"
        ) from exc
    return net, net.layer4


ARCHS: dict[str, Callable[[int, int, int], tuple[nn.Module, nn.Module]]] = {
    "scenecnn": _scenecnn,
    "lenet5": _lenet5,
    "resnet50": _resnet50,
}
PRETRAINED = {"resnet50"}


def build_arch(arch: str, dataset: BenchDataset, seed: int = 0) -> Classifier:
    """An untrained (or ImageNet-pretrained) classifier for ``dataset``, its initial weights drawn
    from ``seed`` (the global RNG is left as it was)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, cam = ARCHS[arch](dataset.num_classes, dataset.channels, dataset.size)
    return Classifier(net, dataset.mean, dataset.std, dataset.num_classes, cam)


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The model's Grad-CAM layer: ``model.cam_layer`` if set, else its last ``Conv2d``."""
    layer = getattr(model, "cam_layer", None)
    if layer is not None:
        return layer
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer; set model.cam_layer")
    return convs[-1]


def jpeg_roundtrip(
    images: torch.Tensor, quality: int | np.ndarray, subsampling: int | np.ndarray = 2
) -> torch.Tensor:
    """Encode and decode each image of ``[B,C,H,W]`` in [0,1] as JPEG with Pillow (in memory)."""
    b = images.shape[0]
    q = np.broadcast_to(np.asarray(quality), (b,))
    ss = np.broadcast_to(np.asarray(subsampling), (b,))
    arr = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i in range(b):
        img = Image.fromarray(arr[i, ..., 0] if arr.shape[-1] == 1 else arr[i])
        buf = io.BytesIO()
        kw = {"subsampling": int(ss[i])} if img.mode == "RGB" else {}
        img.save(buf, format="JPEG", quality=int(q[i]), **kw)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = dec.reshape(arr.shape[1:])
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255).to(images.device)


def materialise(dataset: BenchDataset, workers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (uint8 ``[N,C,H,W]``) and labels of a dataset, generated with worker processes."""
    # its own generator: the loader's base seed must not draw from the global RNG
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=256, num_workers=workers if len(dataset) > 2000 else 0,
        collate_fn=_collate_uint8, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
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
    for epoch in tqdm(range(epochs), desc=f"train {train.registered_name}", leave=False):
        order = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            x = x_all[idx].float().div_(255)
            if flip:
                f = torch.rand(len(idx), generator=gen) < 0.5
                x[f] = x[f].flip(-1)
            if jpeg_p > 0:
                sel = np.nonzero(rng.random(len(idx)) < jpeg_p)[0]
                if len(sel):
                    q = rng.integers(20, 96, len(sel))
                    ss = rng.choice([0, 2], len(sel))
                    x[sel] = jpeg_roundtrip(x[sel], q, ss)
            loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        del epoch
    model.use_channels_last(False)
    model.eval()


def cached_module(
    kind: str,
    identity: dict[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict[str, Any] | None],
) -> nn.Module:
    """Build a module and load its cached weights, or train it once and cache them.

    ``identity`` must name everything that changes the trained weights; ``train`` may return
    metadata (accuracy, seconds) stored beside the weights as JSON.
    """
    key = stable_hash({"kind": kind, **identity})
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pt"
    module = build()
    if path.exists():
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        t0 = time.perf_counter()
        meta = train(module) or {}
        meta = {
            "identity": identity,
            "train_seconds": time.perf_counter() - t0,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),  # float summation order, so the exact weights
            **meta,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(module.state_dict(), tmp)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    module.eval()
    return module


def model_metadata(kind: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The JSON written beside a cached module (empty if none)."""
    path = cache_dir() / kind / f"{stable_hash({'kind': kind, **identity})}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _freeze(model: Classifier, device: str | torch.device | None) -> Classifier:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(device or "cpu")
    return model.use_channels_last(torch.device(device or "cpu").type == "cpu")


def load_model(
    dataset: str | BenchDataset, device: str | torch.device | None = None, **dataset_params: Any
) -> Classifier:
    """The frozen, trained classifier of a dataset (trained on first use, then cached)."""
    ds = load_dataset(dataset, **dataset_params) if isinstance(dataset, str) else dataset
    ident = {**ds.model_identity(), "code": MODEL_CODE_VERSION}
    if ds.model_arch in PRETRAINED:
        return _freeze(build_arch(ds.model_arch, ds), device)

    def train(model: nn.Module) -> dict[str, Any]:
        train_classifier(model, ds.train_split(), ds.model_recipe)
        x, y = materialise(ds)
        acc = (predict(model, x) == y).float().mean().item()
        return {"test_accuracy": acc, "n_test": len(y)}

    model = cached_module("classifiers", ident, lambda: build_arch(ds.model_arch, ds), train)
    return _freeze(model, device)


def load_model_path(dataset: BenchDataset) -> Path:
    """Where :func:`load_model` caches the classifier of ``dataset``."""
    ident = {**dataset.model_identity(), "code": MODEL_CODE_VERSION}
    return cache_dir() / "classifiers" / f"{stable_hash({'kind': 'classifiers', **ident})}.pt"
