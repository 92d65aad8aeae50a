"""Datasets read through torchvision: ``fashion-mnist``, ``mnist``, ``cifar10``, ``imagefolder``.

``fashion-mnist`` reads the original IDX files of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``) with torchvision's ``FashionMNIST`` class; every set can
download when ``download=True`` and the machine is online. A missing set raises
:class:`nicebench.DatasetMissingError` saying how to get it.

``imagenet_wnids.txt`` beside this module lists the 1000 ILSVRC2012 class wnids sorted, which is
the class order of torchvision's (and timm's) ImageNet models: class index i is the i-th wnid.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets as tvd
from torchvision import transforms

from nicebench import BenchDataset, DatasetMissingError, cache_dir, register_dataset

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@functools.cache
def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet (ILSVRC2012) wnids in the class-index order of ImageNet classifiers."""
    return (Path(__file__).with_name("imagenet_wnids.txt")).read_text().split()


def _root(name: str, root: str | None) -> Path:
    return Path(root) if root else cache_dir() / "data" / name


def _stage_idx(source: Path, raw: Path) -> bool:
    """Copy (gunzip) IDX files from ``source`` into torchvision's ``raw`` folder; True if all."""
    raw.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES:
        target = raw / stem
        if target.exists():
            continue
        plain, packed = source / stem, source / f"{stem}.gz"
        if not (plain.exists() or packed.exists()):
            return False
        # a file of this process's own, renamed into place: processes staging at once never
        # see (or rename) each other's half-written copy
        tmp = raw / f".{stem}.{os.getpid()}.part"
        with (
            open(plain, "rb") if plain.exists() else gzip.open(packed, "rb") as src,
            open(tmp, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        tmp.replace(target)
    return True


class _TorchvisionSet(BenchDataset):
    """A torchvision dataset held as one uint8 tensor, returned as floats in [0, 1]."""

    def _load(self, ds) -> None:
        data = ds.data if isinstance(ds.data, torch.Tensor) else torch.as_tensor(ds.data)
        if data.dim() == 3:
            data = data[:, None]
        elif data.shape[-1] == 3:
            data = data.permute(0, 3, 1, 2)
        targets = torch.as_tensor(ds.targets, dtype=torch.long)
        if self.n is not None:
            data, targets = data[: self.n], targets[: self.n]
        self.data, self.targets = data.contiguous(), targets
        self.size = data.shape[-1]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data[index].float().div(255), int(self.targets[index])

    def identity(self) -> dict[str, Any]:
        return {"name": self.registered_name, "split": self.split, "n": len(self), "version": 1}

    def train_split(self) -> BenchDataset:
        return type(self)(split="train", root=self.root, download=self.download)


@register_dataset("fashion-mnist")
class FashionMNIST(_TorchvisionSet):
    """Fashion-MNIST (28×28 grey): Debian's IDX files, or torchvision's download when online."""

    model_arch = "lenet5"
    model_recipe = {"epochs": 6, "lr": 1e-3, "batch_size": 100, "jpeg_p": 0.5, "flip": False}
    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    mean, std, channels = (0.286,), (0.353,), 1

    def __init__(
        self,
        split: str = "test",
        root: str | None = None,
        download: bool = False,
        n: int | None = None,
        source: str | None = None,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"fashion-mnist: split must be 'train' or 'test', got {split!r}")
        self.split, self.root, self.download, self.n = split, root, download, n
        base = _root("fashion-mnist", root)
        src = Path(source or os.environ.get("NICEBENCH_FASHION_MNIST", DEBIAN_FASHION))
        staged = _stage_idx(src, base / "FashionMNIST" / "raw") if src.exists() else False
        if not staged and not download:
            raise DatasetMissingError(
                f"fashion-mnist: no IDX files in {src} or {base}. Install them with "
                "`apt-get install dataset-fashion-mnist` (Debian), point NICEBENCH_FASHION_MNIST "
                "at a folder holding them, or pass download=True when online."
            )
        self._load(tvd.FashionMNIST(str(base), train=split == "train", download=download))


@register_dataset("mnist")
class MNIST(_TorchvisionSet):
    """MNIST digits (28×28 grey) through torchvision; ``download=True`` when online."""

    model_arch = "lenet5"
    model_recipe = {"epochs": 3, "lr": 1e-3, "batch_size": 100, "jpeg_p": 0.5, "flip": False}
    classes = [str(i) for i in range(10)]
    mean, std, channels = (0.1307,), (0.3081,), 1

    def __init__(
        self,
        split: str = "test",
        root: str | None = None,
        download: bool = False,
        n: int | None = None,
    ):
        self.split, self.root, self.download, self.n = split, root, download, n
        base = _root("mnist", root)
        try:
            ds = tvd.MNIST(str(base), train=split == "train", download=download)
        except RuntimeError as exc:
            raise DatasetMissingError(
                f"mnist: not found under {base} ({exc}); run with download=True when online "
                "(`--datasets mnist:download=true`) or put the IDX files in "
                f"{base / 'MNIST' / 'raw'}"
            ) from None
        self._load(ds)


@register_dataset("cifar10")
class CIFAR10(_TorchvisionSet):
    """CIFAR-10 (32×32 RGB) through torchvision; ``download=True`` when online."""

    model_arch = "scenecnn"
    model_recipe = {"epochs": 10, "lr": 3e-3, "batch_size": 128, "weight_decay": 5e-4}
    classes = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    mean, std, channels = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), 3

    def __init__(
        self,
        split: str = "test",
        root: str | None = None,
        download: bool = False,
        n: int | None = None,
    ):
        self.split, self.root, self.download, self.n = split, root, download, n
        base = _root("cifar10", root)
        try:
            ds = tvd.CIFAR10(str(base), train=split == "train", download=download)
        except RuntimeError as exc:
            raise DatasetMissingError(
                f"cifar10: not found under {base} ({exc}); run with download=True when online "
                f"(`--datasets cifar10:download=true`) or unpack cifar-10-batches-py into {base}"
            ) from None
        self._load(ds)


def _image_problem(path: str, decode: bool) -> str | None:
    """Why ``path`` is not a usable image (None when it is): its header, or with ``decode`` its
    whole data, fails to read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if decode:
                im.load()
    except Exception as exc:  # UnidentifiedImageError, truncated data, decompression bombs
        return f"{type(exc).__name__}: {exc}"
    return None


@register_dataset("imagefolder")
class ImageFolder(BenchDataset):
    """Any ImageFolder tree (class sub-folders of images), resized and centre-cropped to ``size``;
    explained with torchvision's ImageNet-pretrained ResNet-50 (weights fetched when online).

    ``labels``: ``auto`` (default) maps ImageNet class folders named by wnid (``n01440764``, as
    in ImageNet's validation set sorted into folders) to the 1000 ImageNet class indices, so the
    labels are the ImageNet model's; other folder names label by their sorted folder index.
    ``imagenet`` requires wnid folders, ``folder`` always uses the folder index.

    Every file the set uses is opened when it is built (its header only: cheap), so a file that is
    no image stops the run before anything is written, with its path; ``skip_bad=true`` decodes
    each file fully instead and leaves out those that fail, listed in :attr:`skipped` (a warning
    gives their number). A file that passes the header check but is truncated fails its cell
    with the file's path.
    """

    model_arch = "resnet50"
    mean, std, channels = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 3

    def __init__(
        self,
        split: str = "test",
        root: str | None = None,
        size: int = 224,
        n: int | None = None,
        labels: str = "auto",
        skip_bad: bool = False,
    ):
        if root is None:
            raise ValueError(
                "imagefolder: pass root=<folder with one sub-folder per class>, "
                "e.g. --datasets imagefolder:root=/data/imagenette2/val"
            )
        path = Path(root)
        if not path.is_dir():
            raise DatasetMissingError(f"imagefolder: folder {path} does not exist")
        self.split, self.root, self.size, self.n = split, str(path), int(size), n
        tf = transforms.Compose(
            [
                transforms.Resize(int(size * 256 / 224)),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
            ]
        )
        try:
            self.folder = tvd.ImageFolder(str(path), transform=tf)
        except FileNotFoundError as exc:
            raise DatasetMissingError(f"imagefolder: {exc}") from None
        self.label_space = self._map_labels(labels)
        self.classes = imagenet_wnids() if self.label_space == "imagenet" else self.folder.classes
        self.skip_bad = bool(skip_bad)
        self.skipped: list[tuple[str, str]] = []  # (file, why) left out with skip_bad
        self._check_files()

    def _check_files(self) -> None:
        """Check the files the set uses (the first ``n`` good ones); see the class docstring."""
        good: list[tuple[str, int]] = []
        limit = len(self.folder.samples) if self.n is None else int(self.n)
        for path, target in self.folder.samples:
            if len(good) >= limit:
                break
            problem = _image_problem(path, decode=self.skip_bad)
            if problem is None:
                good.append((path, target))
            elif self.skip_bad:
                self.skipped.append((path, problem))
            else:
                raise ValueError(
                    f"imagefolder: {path} is not a readable image ({problem}); remove or replace "
                    f"it, or pass skip_bad=true to leave such files out (e.g. --datasets "
                    f"imagefolder:root={self.root},skip_bad=true)"
                )
        if self.skip_bad:
            self.folder.samples = self.folder.imgs = good
            self.folder.targets = [t for _, t in good]
            if self.skipped:
                import warnings

                names = ", ".join(Path(p).name for p, _ in self.skipped[:3])
                more = "…" if len(self.skipped) > 3 else ""
                warnings.warn(
                    f"imagefolder: skipped {len(self.skipped)} unreadable file(s) "
                    f"under {self.root} ({names}{more})",
                    stacklevel=3,
                )

    def _map_labels(self, labels: str) -> str:
        """Relabel the samples of wnid-named folders with ImageNet class indices."""
        if labels not in ("auto", "imagenet", "folder"):
            raise ValueError(f"imagefolder: labels is auto, imagenet or folder, not {labels!r}")
        index = {w: i for i, w in enumerate(imagenet_wnids())}
        other = [c for c in self.folder.classes if c not in index]
        if labels == "folder" or (labels == "auto" and other):
            return "folder"
        if other:
            raise ValueError(
                f"imagefolder: labels=imagenet needs folders named by ImageNet wnid "
                f"(like n01440764); {self.root} has {other[:3]}"
            )
        to_imagenet = [index[c] for c in self.folder.classes]
        self.folder.samples = [(path, to_imagenet[t]) for path, t in self.folder.samples]
        self.folder.imgs = self.folder.samples
        self.folder.targets = [t for _, t in self.folder.samples]
        return "imagenet"

    @property
    def num_classes(self) -> int:
        return 1000  # the ImageNet classifier's outputs; folder labels index self.classes

    def __len__(self) -> int:
        return len(self.folder) if self.n is None else min(self.n, len(self.folder))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            return self.folder[index]
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for damaged files
            path = self.folder.samples[index][0]
            raise ValueError(
                f"imagefolder: {path} can't be decoded ({type(exc).__name__}: "
                f"{exc}); remove or replace it, or pass skip_bad=true (which "
                "decodes every file first and leaves out the bad ones)"
            ) from None

    def identity(self) -> dict[str, Any]:
        ident = {"name": "imagefolder", "root": self.root, "size": self.size, "n": len(self)}
        if self.skip_bad:
            ident["skipped"] = len(self.skipped)
        return {**ident, "labels": "imagenet"} if self.label_space == "imagenet" else ident

    def train_split(self) -> BenchDataset:
        return self
