"""Registry (wildcards, close matches, entry points) and the dataset plugins."""

from __future__ import annotations

import gzip
import json
import struct
import sys
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image

import nicebench as nb
from nicebench.registry import DATASETS, METHODS, REGISTRIES, Registry


def test_lists_and_wildcards():
    assert {"scenes", "fashion-mnist", "mnist", "cifar10", "imagefolder"} <= set(nb.list_datasets())
    assert nb.list_methods("gradc*") == ["gradcam", "gradcam++"]
    assert nb.list_methods("gradcam") == ["gradcam"]
    assert set(nb.list_methods("*")) >= {"random", "center", "edges", "oracle", "saliency"}
    # load errors are recorded, not raised: a broken built-in must still fail the tests
    for kind, reg in REGISTRIES.items():
        assert reg.names() and not reg.load_errors, (kind, reg.load_errors)


def test_unknown_names_list_close_matches():
    with pytest.raises(KeyError, match="Did you mean: scenes"):
        nb.load_dataset("scenez")
    with pytest.raises(KeyError, match="Known methods"):
        nb.create_method("no-such-method-at-all")


def _entry_points(monkeypatch, group: str, **values: str) -> None:
    eps = [metadata.EntryPoint(name, value, group) for name, value in values.items()]

    def fake_entry_points(group: str):
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)


def test_entry_points_are_loaded_and_failures_recorded(monkeypatch):
    _entry_points(
        monkeypatch,
        "nicebench.test",
        **{"third-party": "json:dumps", "broken": "no_such_module_for_nicebench:thing"},
    )
    reg = Registry("thing", None, "nicebench.test")
    assert reg.names() == ["third-party"]
    assert reg.get("third-party") is json.dumps
    err = reg.load_errors["broken"]
    assert "ModuleNotFoundError" in err and "no_such_module_for_nicebench:thing" in err
    with pytest.raises(KeyError, match="'broken' failed to load: .*ModuleNotFoundError"):
        reg.get("broken")


PLUGIN_MODULE = """
from nicebench import BenchDataset, Method

def helper():
    pass

class Good(Method):
    uses_model = False

class NoDoc(BenchDataset):
    pass
"""


def test_method_and_dataset_entry_points_must_be_plugin_classes(tmp_path, monkeypatch):
    (tmp_path / "zz_nicebench_ep_plugins.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    group, mod = "nicebench.test-plugins", "zz_nicebench_ep_plugins"
    _entry_points(
        monkeypatch,
        group,
        **{
            "not-a-class": f"{mod}:helper",
            "wrong-class": f"{mod}:NoDoc",
            "good": f"{mod}:Good",
            "random": f"{mod}:Good",
        },
    )
    reg = Registry("method", None, group, METHODS.coerce)
    builtin = METHODS.get("random")
    reg.register("random", builtin)
    assert reg.names() == ["good", "random"] and reg.get("good").__name__ == "Good"
    err = reg.load_errors["not-a-class"]
    assert f"'not-a-class' ({mod}:helper)" in err and "group 'nicebench.test-plugins'" in err
    assert f"function {mod}.helper" in err and "subclass of nicebench.Method" in err
    assert f"class {mod}.NoDoc" in reg.load_errors["wrong-class"]
    assert "already taken" in reg.load_errors["random"]  # a built-in name is not replaced
    assert reg.get("random") is builtin and builtin.registered_name == "random"
    datasets = Registry("dataset", None, group, DATASETS.coerce)
    assert datasets.names() == ["wrong-class"]
    assert "subclass of nicebench.BenchDataset" in datasets.load_errors["good"]


def test_a_builtin_module_that_fails_to_import_is_recorded(tmp_path, monkeypatch):
    pkg = tmp_path / "zz_nicebench_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("from nicebench.registry import METHODS\nOK = True\n")
    (pkg / "bad.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing", "zz_nicebench_plugins", None)
    reg.register("x", "value")
    assert reg.names() == ["x"]
    assert reg.load_errors == {
        "zz_nicebench_plugins.bad": "built-in module zz_nicebench_plugins.bad: "
        "RuntimeError: boom at import"
    }
    assert sys.modules["zz_nicebench_plugins.good"].OK


def test_scenes_deterministic_with_masks():
    a = nb.load_dataset("scenes", size=64, n=20)
    b = nb.load_dataset("scenes", size=64, n=20)
    x1, y1, m1 = a[7]
    x2, y2, m2 = b[7]
    assert torch.equal(x1, x2) and y1 == y2 and torch.equal(m1, m2)
    assert x1.shape == (3, 64, 64) and m1.shape == (1, 64, 64) and x1.dtype == torch.float32
    assert 0 <= x1.min() and x1.max() <= 1
    assert 0.01 < m1.mean() < 0.5
    other = nb.load_dataset("scenes", size=64, n=20, seed=1)[7][0]
    assert not torch.equal(x1, other)
    assert not torch.equal(a[7][0], nb.load_dataset("scenes", "train", size=64, n=20)[7][0])
    for size in (128, 224):
        x, _, m = nb.load_dataset("scenes", size=size, n=2)[0]
        assert x.shape == (3, size, size) and m.shape == (1, size, size)
    labels = [a[i][1] for i in range(20)] + [
        nb.load_dataset("scenes", size=32, n=300)[i][1] for i in range(300)
    ]
    assert set(labels) == set(range(6))
    with pytest.raises(ValueError, match="size"):
        nb.load_dataset("scenes", size=100)


def test_scene_shapes_are_distinct_under_rotation():
    """Every class's area differs from the others' rotated copies (no square/diamond pairs)."""
    from nicebench.datasets.scenes import CLASSES, _coverage, _inside

    covs = {}
    for c in range(len(CLASSES)):
        covs[c] = [
            _coverage(64, 32, 32, 24, th, lambda u, v, c=c: _inside(c, u, v))
            for th in np.linspace(0, 2 * np.pi, 12, endpoint=False)
        ]
    for c in covs:
        for d in covs:
            if c >= d:
                continue
            best = min(np.abs(p - q).mean() for p in covs[c] for q in covs[d])
            assert best > 0.02, (CLASSES[c], CLASSES[d], best)


def _write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_real_idx_format(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    src = tmp_path / "debian"
    train_x, test_x = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    _write_idx(src, "train", train_x, rng.integers(0, 10, 12))
    _write_idx(src, "t10k", test_x, np.arange(5))
    monkeypatch.setenv("NICEBENCH_FASHION_MNIST", str(src))
    ds = nb.load_dataset("fashion-mnist", root=str(tmp_path / "root"))
    assert len(ds) == 5 and ds.num_classes == 10
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and y == 3
    assert torch.allclose(x[0], torch.from_numpy(test_x[3]).float() / 255)
    assert len(ds.train_split()) == 12


def test_missing_datasets_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(nb.DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        nb.load_dataset("fashion-mnist", root=str(tmp_path / "empty"))
    with pytest.raises(nb.DatasetMissingError, match="download=true"):
        nb.load_dataset("mnist", root=str(tmp_path / "m"))
    with pytest.raises(nb.DatasetMissingError, match="cifar10"):
        nb.load_dataset("cifar10", root=str(tmp_path / "c"))
    with pytest.raises(nb.DatasetMissingError, match="does not exist"):
        nb.load_dataset("imagefolder", root=str(tmp_path / "no-folder"))


def test_mnist_reads_real_idx_format(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw, prefix, rng.integers(0, 256, (n, 28, 28)), np.arange(n))
        for suffix in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            gz = raw / f"{prefix}-{suffix}.gz"
            (raw / f"{prefix}-{suffix}").write_bytes(gzip.decompress(gz.read_bytes()))
    ds = nb.load_dataset("mnist", root=str(tmp_path))
    assert len(ds) == 4 and ds[2][1] == 2 and ds[2][0].shape == (1, 28, 28)


def test_imagefolder_reads_a_tree(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.jpg")
    ds = nb.load_dataset("imagefolder", root=str(tmp_path), size=32)
    assert len(ds) == 4 and ds.classes == ["cat", "dog"]
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and y == 1


def _write_tree(root, classes, per_class=2, side=(40, 50)):
    rng = np.random.default_rng(3)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (*side, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.JPEG")


def test_imagefolder_maps_wnid_folders_to_imagenet_classes(tmp_path):
    from nicebench.datasets.torchvision_sets import imagenet_wnids

    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"  # tench ... toilet tissue
    # goldfish (1), great white shark (2), tiger cat (282), zebra (340)
    assert [wnids.index(w) for w in ("n01443537", "n01484850", "n02123159", "n02391049")] == [
        1,
        2,
        282,
        340,
    ]
    _write_tree(tmp_path / "val", ["n02391049", "n01443537", "n02123159"])
    ds = nb.load_dataset("imagefolder", root=str(tmp_path / "val"), size=32)
    assert ds.label_space == "imagenet" and ds.num_classes == 1000 and ds.classes == wnids
    assert [ds[i][1] for i in range(len(ds))] == [1, 1, 282, 282, 340, 340]
    assert ds.identity()["labels"] == "imagenet"
    folder = nb.load_dataset("imagefolder", root=str(tmp_path / "val"), size=32, labels="folder")
    assert [folder[i][1] for i in range(len(folder))] == [0, 0, 1, 1, 2, 2]
    _write_tree(tmp_path / "mixed", ["n01443537", "cat"])
    mixed = nb.load_dataset("imagefolder", root=str(tmp_path / "mixed"), size=32)
    assert mixed.label_space == "folder" and mixed.classes == ["cat", "n01443537"]
    with pytest.raises(ValueError, match="wnid"):
        nb.load_dataset("imagefolder", root=str(tmp_path / "mixed"), labels="imagenet")


def test_check_dataset_names_the_broken_rule():
    from nicebench.testing import ContractError, check_dataset

    scenes = nb.registry.get_dataset_class("scenes")

    class Unbounded(scenes):
        def __getitem__(self, index):
            x, y, m = super().__getitem__(index % self.n)
            return x, y, m

    class NoMasks(scenes):
        def __getitem__(self, index):
            return super().__getitem__(index)[:2]

    class Bright(scenes):
        def __getitem__(self, index):
            x, y, m = super().__getitem__(index)
            return x * 255, y, m

    class Noisy(scenes):
        def __getitem__(self, index):
            x, y, m = super().__getitem__(index)
            return x.mul(0.5).add_(0.5 * torch.rand_like(x)), y, m

    cases = [
        (Unbounded, "IndexError"),
        (NoMasks, r"\(image, label, mask\)"),
        (Bright, r"values must lie in \[0, 1\]"),
        (Noisy, "deterministic"),
    ]
    for cls, rule in cases:
        with pytest.raises(ContractError, match=f"dataset {cls.__name__}: .*{rule}"):
            check_dataset(cls, {"size": 32, "n": 6})
    with pytest.raises(ContractError, match="must subclass nicebench.BenchDataset"):
        check_dataset(dict)
