"""Every built-in method, codec and dataset passes its plugin contract, each once; the rules read
as a list; ``registered`` changes a registry for a block only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import nicebench as nb
from nicebench import GateMaskMethod, Method
from nicebench.codec import available_codecs
from nicebench.data import DatasetMissingError
from nicebench.registry import CODECS, DATASETS, METHODS
from nicebench.testing import (
    ContractError,
    check_codec,
    check_dataset,
    check_gate_method,
    check_method,
    registered,
    restored,
    rules,
)


def _builtin(registry) -> list[str]:
    """The names a registry's built-in modules register (entry-point plugins test themselves)."""
    return [n for n in registry.names() if registry.get(n).__module__.startswith("nicebench.")]


# parameters beyond quick_params that keep a contract run small (the sizes the method tests use)
SMALL_METHOD_PARAMS = {"rise": {"n_masks": 64, "batch_size": 50}, "lime": {"n_samples": 32}}


@pytest.mark.parametrize("name", _builtin(METHODS))
def test_method_contract(name, tmp_path):
    params = dict(SMALL_METHOD_PARAMS.get(name, {}))
    if name == "precomputed":  # maps looked up by image index: the first four test images'
        from nicebench.methods.precomputed import save_maps

        g = torch.Generator().manual_seed(7)
        maps = {i: torch.rand(32, 32, generator=g) for i in range(4)}
        params["path"] = str(save_maps(tmp_path / "maps.npz", maps))
    gate = issubclass(METHODS.get(name), GateMaskMethod)
    report = (check_gate_method if gate else check_method)(name, params=params)
    assert report["ok"] and report["method"] == name


@pytest.mark.parametrize("name", _builtin(CODECS))
def test_codec_contract(name):
    if name not in available_codecs():
        pytest.skip(f"this Pillow build can't write {name}")
    report = check_codec(name)
    assert report["ok"] and report["codec"] == name


def _image_tree(root, classes=("cat", "dog", "owl"), per_class=2):
    rng = np.random.default_rng(3)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("name", _builtin(DATASETS))
def test_dataset_contract(name, tmp_path):
    params = {}
    if name == "scenes":
        params = {"size": 32, "n": 6}
    elif name == "imagefolder":  # a folder of class folders: three classes, two images each
        params = {"root": str(_image_tree(tmp_path / "tree")), "size": 32}
    try:
        report = check_dataset(name, params)
    except DatasetMissingError as exc:
        pytest.skip(str(exc))
    assert report["ok"] and report["dataset"] == name


def test_the_rules_are_listed_in_the_module_docstring():
    import nicebench.testing

    kinds = ("method", "learned method", "gate method", "dataset", "codec")
    names = [rule.name for kind in kinds for rule in rules(kind)]
    assert len(set(names)) == len(names) - len(rules("learned method"))  # a subset of "method"
    missing = [n for n in names if f"``{n}``" not in nicebench.testing.__doc__]
    assert not missing, f"add these rules to nicebench.testing's docstring: {missing}"
    assert str(rules("codec")[0]) == "is-codec: subclass nicebench.Codec"
    assert str(rules("learned method")[0]).endswith("[learns=True]")
    with pytest.raises(ValueError, match="kind is one of method, learned method"):
        rules("methods")


def test_a_broken_rule_is_named_first_with_what_to_do():
    class BatchDependent(Method):
        uses_model = False

        def attribute(self, images, targets, **kw):
            return images.mean(1, keepdim=True) - images.mean()

    with pytest.raises(ContractError) as err:
        check_method(BatchDependent)
    message = str(err.value)
    assert message.startswith("batch-independent: BatchDependent: not batch-independent")
    rule = next(r for r in rules("method") if r.name == "batch-independent")
    assert message.endswith(f"(rule: {rule.text})") and "alone" in rule.text
    assert nb.ContractError is ContractError


class _Flat(Method):
    uses_model = False

    def attribute(self, images, targets, **kw):
        return torch.ones_like(images[:, :1])


def test_registered_restores_the_registry_even_on_error():
    gradcam = METHODS.get("gradcam")
    with registered("method", "zz-flat", _Flat) as cls:
        assert cls is _Flat and METHODS.get("zz-flat") is _Flat
        assert _Flat.registered_name == "zz-flat"
    assert "zz-flat" not in METHODS and "registered_name" not in vars(_Flat)
    with pytest.raises(RuntimeError, match="boom"), registered(METHODS, "gradcam", _Flat):
        assert METHODS.get("gradcam") is _Flat
        raise RuntimeError("boom")
    assert METHODS.get("gradcam") is gradcam and gradcam.registered_name == "gradcam"
    with restored(METHODS, "zz-a", "gradcam"):
        nb.register_method("zz-a")(_Flat)
        nb.register_method("gradcam", overwrite=True)(_Flat)
    assert "zz-a" not in METHODS and METHODS.get("gradcam") is gradcam
    with pytest.raises(ValueError, match="registry='methods'.*one of codec, dataset, method"):
        with registered("methods", "zz-flat", _Flat):
            pass
