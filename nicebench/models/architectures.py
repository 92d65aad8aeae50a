"""Classifier architectures: the :class:`Classifier` wrapper and the architecture registry.

A registered architecture is a function ``(num_classes, channels, size) -> (net, cam_layer)``:
``net`` maps a normalised ``[B, channels, size, size]`` batch to ``[B, num_classes]`` logits and
``cam_layer`` is the module Grad-CAM hooks (its last spatial feature map). Register one with::

    from nicebench.registry import register_arch

    @register_arch("mynet")
    def mynet(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
        ...

or from another package through the entry-point group ``nicebench.models``; then run it with
``--models mynet`` (trained on the dataset on first use) or ``--models mynet:weights=FILE``.
An architecture that comes with its own weights (never trained here) sets ``fn.pretrained = True``.
:func:`nicebench.registry.list_models` lists them with a wildcard, like timm's ``list_models``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data import BenchDataset
from ..registry import MODELS, register_arch

__all__ = [
    "Arch",
    "Classifier",
    "build_arch",
    "get_arch",
    "is_pretrained",
    "last_conv_layer",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

Arch = Callable[[int, int, int], tuple[nn.Module, nn.Module]]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


@register_arch("scenecnn")
def scenecnn(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
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


@register_arch("lenet5")
def lenet5(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
    """The NICE code's LeNet-5: conv 5×5×20, pool, conv 5×5×50, pool, fc 800→500→classes."""
    relu2 = nn.ReLU()
    features = nn.Sequential(
        nn.Conv2d(channels, 20, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        relu2,
        nn.MaxPool2d(2),
    )
    side = ((size - 4) // 2 - 4) // 2
    net = nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(50 * side * side, 500),
        nn.ReLU(),
        nn.Linear(500, num_classes),
    )
    return net, relu2


@register_arch("resnet50")
def resnet50(num_classes: int, channels: int, size: int) -> tuple[nn.Module, nn.Module]:
    """torchvision's ImageNet-pretrained ResNet-50 (IMAGENET1K_V2, from torch's hub cache or
    downloaded when online); 1000 classes whatever ``num_classes`` says."""
    import torchvision

    try:
        net = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
    except Exception as exc:  # offline and not in torch's hub cache
        raise FileNotFoundError(
            "torchvision's pretrained ResNet-50 weights are not cached and could not be "
            f"downloaded ({type(exc).__name__}); run once online, copy them into "
            f"{torch.hub.get_dir()}/checkpoints, or pass a local state dict with "
            "--models torchvision:resnet50:weights=FILE"
        ) from exc
    return net, net.layer4


resnet50.pretrained = True  # type: ignore[attr-defined]


def get_arch(name: str) -> Arch:
    """The registered architecture ``name`` (raises with close matches if unknown)."""
    return MODELS.get(name)


def is_pretrained(name: str) -> bool:
    """Whether architecture ``name`` brings its own weights (never trained by nicebench)."""
    return bool(getattr(get_arch(name), "pretrained", False))


def build_arch(arch: str, dataset: BenchDataset, seed: int = 0) -> Classifier:
    """An untrained (or ImageNet-pretrained) classifier for ``dataset``, its initial weights drawn
    from ``seed`` (the global RNG is left as it was)."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; known: {MODELS.names()}")
    fn = get_arch(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, cam = fn(dataset.num_classes, dataset.channels, dataset.size)
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
