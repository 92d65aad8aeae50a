"""The reference weights shipped in the package: the cache takes them when the identity matches
(nothing trains), a tampered file is an error naming it, other identities still train, `verify`
checks their hashes and `nicebench train` retrains one and compares it with the shipped file."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

import nicebench as nb
from nicebench.cli import main
from nicebench.models import cache_key, cache_path, classifier_identity, has_module
from nicebench.models import loading as model_loading
from nicebench.models.cache import CorruptCacheWarning
from nicebench.models.shipped import (
    PACKAGE_WEIGHTS,
    ShippedWeightsError,
    check_shipped,
    shipped_models,
    shipped_weights_off,
)
from nicebench.retrain import (
    Retrained,
    agreement,
    load_recipe,
    machine,
    select_shipped,
)
from nicebench.testing import TINY_SCENES

SMALLEST = "nice-refit-scenes-64"  # 65 kB, about 5 s to retrain on 2 cores


@pytest.fixture(autouse=True)
def _package_weights_on(monkeypatch):
    monkeypatch.delenv("NICEBENCH_SHIPPED_WEIGHTS", raising=False)


def _no_training(*args, **kwargs):
    raise AssertionError("trained although the package ships these weights")


def test_the_manifest_lists_every_shipped_file_with_its_hash():
    models = shipped_models()
    names = {m.name for m in models}
    for dataset in ("scenes-64", "fashion-mnist"):  # both classifiers, nice, rtsal and re-fits
        for kind in ("classifier", "nice", "rtsal", "nice-refit", "rtsal-refit"):
            assert f"{kind}-{dataset}" in names
    files = {p.relative_to(PACKAGE_WEIGHTS).as_posix() for p in PACKAGE_WEIGHTS.rglob("*.pt")}
    assert files == {f"{m.kind}/{m.key}.pt" for m in models}
    for m in models:
        data = m.path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (m.bytes, m.sha256), m.name
        assert m.key == cache_key(m.kind, m.identity)
        meta = json.loads(m.path.with_suffix(".json").read_text())
        assert (meta["sha256"], meta["torch"], meta["threads"]) == (m.sha256, m.torch, m.threads)
    assert sum(m.bytes for m in models) < 4_000_000  # a few MB at most
    assert all(problem == "" for _, problem in check_shipped())


def test_an_empty_cache_takes_the_shipped_classifier_and_trains_nothing(
    tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(model_loading, "train_classifier", _no_training)
    ds = nb.load_dataset("scenes", size=64, n=16)
    ident = classifier_identity(ds)
    assert has_module("classifiers", ident) and not cache_path("classifiers", ident).exists()
    model = nb.load_model(ds)
    path = cache_path("classifiers", ident)
    assert path.read_bytes() == (PACKAGE_WEIGHTS / "classifiers" / path.name).read_bytes()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["source"] == f"package nicebench/weights/classifiers/{path.name}"
    assert "weights: scenes-64 classifier from the package (nicebench/weights/classifiers/" in (
        capfd.readouterr().err
    )
    nb.load_model(ds)  # now from the cache: said once
    assert "from the package" not in capfd.readouterr().err
    assert not model.training


def test_a_corrupt_cached_copy_is_copied_from_the_package_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(model_loading, "train_classifier", _no_training)
    ds = nb.load_dataset("scenes", size=64, n=16)
    nb.load_model(ds)
    path = cache_path("classifiers", classifier_identity(ds))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(CorruptCacheWarning, match="corrupt cache entry .*copying the package"):
        nb.load_model(ds)
    assert path.read_bytes() == (PACKAGE_WEIGHTS / "classifiers" / path.name).read_bytes()


def test_other_identities_and_the_switch_still_train(tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    ds = nb.load_dataset("scenes", size=64, n=16)
    assert not has_module("classifiers", classifier_identity(ds, "scenecnn:epochs=1"))
    with shipped_weights_off():
        assert not has_module("classifiers", classifier_identity(ds))
    with shipped_weights_off(["some-other-key"]):
        assert has_module("classifiers", classifier_identity(ds))
    monkeypatch.setenv("NICEBENCH_SHIPPED_WEIGHTS", "0")
    assert not has_module("classifiers", classifier_identity(ds))
    calls = []
    monkeypatch.setattr(model_loading, "train_classifier", lambda *a, **k: calls.append(1))
    nb.load_model(ds)  # trains (a stub here): the package's weights are off
    assert calls == [1]
    assert "source" not in json.loads(
        cache_path("classifiers", classifier_identity(ds), ".json").read_text()
    )


def test_a_tampered_shipped_file_is_an_error_naming_it(tmp_path, monkeypatch):
    copy = tmp_path / "weights"
    shutil.copytree(PACKAGE_WEIGHTS, copy)
    entry = select_shipped(["classifier-scenes-64"])[0]
    target = copy / entry.kind / f"{entry.key}.pt"
    data = bytearray(target.read_bytes())
    data[-100] ^= 1
    target.write_bytes(bytes(data))
    monkeypatch.setenv("NICEBENCH_SHIPPED_WEIGHTS", str(copy))
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_loading, "train_classifier", _no_training)
    with pytest.raises(ShippedWeightsError, match=rf"{target}.*do not match their SHA-256"):
        nb.load_model(nb.load_dataset("scenes", size=64, n=16))
    assert not cache_path("classifiers", entry.identity).exists()
    bad = [(m.name, problem) for m, problem in check_shipped(copy) if problem]
    assert len(bad) == 1 and bad[0][0] == entry.name and "NICEBENCH_SHIPPED_WEIGHTS=0" in bad[0][1]


def test_train_lists_the_shipped_models_and_refuses_unknown_names(capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    for m in shipped_models():
        assert f"{m.bytes:,} B  sha256 {m.sha256[:16]}" in out and m.title in out
    assert main(["train", "nice-refit-scenes64"]) == 2
    assert "did you mean nice-refit-scenes-64" in capsys.readouterr().err
    assert main(["train"]) == 2


def test_train_retrains_the_smallest_shipped_model_and_compares(tmp_path, monkeypatch, capsys):
    """Bitwise equal where this machine trains as the manifest's did (torch version, thread
    count, CPU capability); elsewhere the retrained generator's maps must agree closely."""
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / "cache"))
    entry = select_shipped([SMALLEST])[0]
    assert entry.kind == "nice" and entry.bytes < 70_000  # its dataset is embedded: no install
    t0 = time.perf_counter()
    code = main(["train", SMALLEST, "--keep", str(tmp_path / "kept")])
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    kept = tmp_path / "kept" / entry.kind / f"{entry.key}.pt"
    assert kept.is_file()
    # `train` retrains with the manifest's thread count; the rest must be this machine's
    same_machine = (machine()["torch"], machine()["cpu_capability"]) == (
        entry.torch,
        entry.cpu_capability,
    )
    if same_machine:
        print(f"bitwise branch: retrained in {seconds:.1f} s")
        assert code == 0, out
        assert "bitwise equal to the shipped file" in out
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == entry.sha256
    else:
        print(f"agreement branch (this machine: {machine()}): {seconds:.1f} s")
        found = re.search(r"mean Spearman ([0-9.]+); gate-mask IoU ([0-9.]+)", out)
        assert found, out
        assert float(found[1]) > 0.8 and float(found[2]) > 0.6, out


def test_the_agreement_of_a_shipped_model_with_itself_is_perfect(tmp_path, monkeypatch):
    """The comparison `train` prints when the bits differ, on the shipped modules themselves;
    and a result whose hash differs says so with how close it is."""
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    entry = select_shipped([SMALLEST])[0]
    ds, method = load_recipe(entry)
    same = agreement(entry, ds, method, method, n_test=0, n_maps=16)
    assert same == {"n_images": 16, "spearman": pytest.approx(1.0), "mask_iou": 1.0}
    classifier = select_shipped(["classifier-scenes-64"])[0]
    ds, model = load_recipe(classifier)
    with torch.no_grad():
        acc = agreement(classifier, ds, model, model, n_test=300, n_maps=0)
    assert acc["same_predictions"] == 1.0 and acc["accuracy_shipped"] > 0.85
    other = Retrained(replace(entry, name="x"), 1.0, "0" * 64, False, machine(), same)
    assert not other.bitwise and "NOT bitwise equal" in other.lines()[0]
    assert "mean Spearman 1.000; gate-mask IoU 1.000" in other.lines()[1]


def test_verify_checks_the_shipped_files(tiny_scenes, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    tiny = ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
    args = ["--methods", "center", "--metrics", "deletion", "--n-images", "4", "--no-report"]
    assert main(["run", "--datasets", f"scenes:{tiny}", *args, "-q", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--sample", "0"]) == 0
    n = len(shipped_models())
    text = capsys.readouterr().out
    assert f"shipped weights: {n} of {n} files match their SHA-256" in text, text
    copy = tmp_path / "weights"
    shutil.copytree(PACKAGE_WEIGHTS, copy)
    entry = select_shipped([SMALLEST])[0]
    (copy / entry.kind / f"{entry.key}.pt").write_bytes(b"not the weights")
    monkeypatch.setenv("NICEBENCH_SHIPPED_WEIGHTS", str(copy))
    assert main(["verify", str(out), "--sample", "0"]) == 1
    text = capsys.readouterr().out
    assert f"shipped weights: {n - 1} of {n} files match" in text
    assert f"  DAMAGED shipped weights {copy / entry.kind / entry.key}.pt" in text
    assert text.strip().endswith("verify: FAILED")


def test_every_recipe_asks_for_its_shipped_identity_and_the_default_run_for_the_recipes(
    tmp_path, monkeypatch
):
    """The shipped files are what the default leaderboard loads: each recipe, through the run's
    code, finds its file in the package without training (a code change that moves an identity
    makes the shipped file stale and fails here), and the recipes cover every learned method of
    the default config on each of its datasets, with the sanity metrics' re-fit."""
    from nicebench.learned import LearnedMethod
    from nicebench.metric_spec import SEED
    from nicebench.metrics import settings as S
    from nicebench.metrics.sanity import DEFAULT_TOP_K
    from nicebench.registry import METHODS
    from nicebench.runner import default_config

    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(model_loading, "train_classifier", _no_training)
    monkeypatch.setattr(LearnedMethod, "train_module", _no_training)
    cfg = default_config()
    refit = {
        "top_k": DEFAULT_TOP_K,
        "seed": SEED.get(cfg.settings),
        "epochs": S.REFIT_EPOCHS.get(cfg.settings),
        "n_train": S.REFIT_IMAGES.get(cfg.settings),
    }
    recipes = [m.recipe for m in shipped_models()]
    borrowed = []  # learned methods whose modules are another recipe's (nice-refined: nice's)
    for dataset in cfg.datasets:
        assert {"dataset": str(dataset), "model": "default"} in recipes
        for method in cfg.methods:
            if METHODS.get(method.name).learns:
                mine = {"dataset": str(dataset), "model": "default", "method": str(method)}
                if mine in recipes:
                    assert {**mine, "refit": refit} in recipes, mine
                else:
                    borrowed += [mine, {**mine, "refit": refit}]
    assert borrowed, "nice-refined borrows nice's generator: the check below must run"
    for recipe in borrowed:  # fitted and re-fitted from the package, training nothing
        try:
            load_recipe(SimpleNamespace(recipe=recipe))
        except nb.DatasetMissingError:
            continue
    for entry in shipped_models():
        try:
            load_recipe(entry)
        except nb.DatasetMissingError:
            continue
        assert cache_path(entry.kind, entry.identity).is_file(), entry.name
