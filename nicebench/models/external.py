"""Classifiers from weight files: ``torchvision:NAME`` specs and ``ARCH:weights=FILE``.

Nothing here downloads: a state dict is read from a local file with
``torch.load(weights_only=True)`` and loaded strictly into the architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .architectures import IMAGENET_MEAN, IMAGENET_STD, Classifier

__all__ = ["load_state_dict_file", "load_weights", "torchvision_classifier", "default_cam_layer"]

_WRAPPERS = ("state_dict", "model_state_dict", "model")  # common checkpoint layouts


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict saved in ``path`` (also inside a checkpoint's ``state_dict``/``model`` entry;
    a ``module.`` prefix of DataParallel is dropped). Raises ``FileNotFoundError`` or a
    ``ValueError`` naming the file when it is not a state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled modules, arbitrary objects, not a torch file at all
        raise ValueError(
            f"model weights file {path} is not a state dict that torch.load(weights_only=True) "
            f"can read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = [obj[k] for k in _WRAPPERS if k in obj and _is_state_dict(obj[k])]
        obj = inner[0] if inner else obj
    if not _is_state_dict(obj):
        raise ValueError(
            f"model weights file {path} holds a {type(obj).__name__}, not a state dict (a mapping "
            "of parameter names to tensors); save it with torch.save(model.state_dict(), path)"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the state dict in ``path`` strictly into ``module`` (a :class:`Classifier` accepts
    the classifier's own state dict or its bare network's)."""
    state = load_state_dict_file(path)
    if isinstance(module, Classifier) and not any(k.startswith("net.") for k in state):
        module = module.net
    _load_strict(module, state, path)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``module.load_state_dict(state)`` with an error that names the file."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(
            f"model weights file {path} does not fit {type(module).__name__}: "
            f"{str(exc).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"model weights file {path} does not fit {type(module).__name__}: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )


def default_cam_layer(net: nn.Module) -> nn.Module:
    """Grad-CAM's usual layer: ``layer4`` (ResNets), ``features`` (VGG, DenseNet, EfficientNet,
    MobileNet, ConvNeXt), else the last ``Conv2d``."""
    for name in ("layer4", "features"):
        if isinstance(getattr(net, name, None), nn.Module):
            return getattr(net, name)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer; pass cam_layer=NAME")
    return convs[-1]


def torchvision_classifier(
    name: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    cam_layer: str | None = None,
) -> Classifier:
    """torchvision's architecture ``name`` with the state dict in ``weights`` (never downloaded),
    normalising with the ImageNet mean/std inside. ``num_classes`` defaults to the output size of
    the file's last 2-D weight; ``cam_layer`` is a dotted submodule name (default:
    :func:`default_cam_layer`)."""
    import torchvision

    if not weights:
        raise ValueError(
            f"model torchvision:{name} needs weights=FILE (a local state dict; nothing is "
            f"downloaded), e.g. --models torchvision:{name}:weights=/models/{name}.pth"
        )
    if name not in torchvision.models.list_models():
        known = ", ".join(torchvision.models.list_models())
        raise ValueError(f"torchvision has no model {name!r}; known: {known}")
    state = load_state_dict_file(weights)
    if num_classes is None:
        mats = [v for v in state.values() if v.dim() == 2]
        num_classes = int(mats[-1].shape[0]) if mats else 1000
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten; keep the RNG
        net = torchvision.models.get_model(name, weights=None, num_classes=int(num_classes))
    _load_strict(net, state, weights)
    cam = net.get_submodule(cam_layer) if cam_layer else default_cam_layer(net)
    return Classifier(net, IMAGENET_MEAN, IMAGENET_STD, int(num_classes), cam)
