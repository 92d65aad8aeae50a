"""Models as an axis of a run: model specs, weight files, torchvision classifiers, the RISE
ImageNet config end to end on a generated class-folder tree."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

import nicebench as nb
from nicebench.config import PluginSpec, RunConfig, load_config, parse_specs
from nicebench.models import build_arch, model_fingerprint, parse_model_spec
from nicebench.runner import plan_cells, run
from nicebench.testing import TINY_SCENES

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_model_specs_parse():
    assert parse_model_spec(None) == parse_model_spec("default") == PluginSpec("default")
    assert parse_model_spec("scenecnn:seed=1") == PluginSpec.make("scenecnn", {"seed": 1})
    spec = parse_model_spec("torchvision:resnet50:weights=/m/r50.pth")
    assert spec.name == "torchvision:resnet50" and spec.kwargs == {"weights": "/m/r50.pth"}
    assert [str(s) for s in parse_specs("default,scenecnn:seed=1,torchvision:vgg11:weights=a")] == [
        "default",
        "scenecnn:seed=1",
        "torchvision:vgg11:weights=a",
    ]
    ds = nb.load_dataset("scenes", size=32, n=2)
    with pytest.raises(ValueError, match="unknown parameter"):
        nb.load_model(ds, model="scenecnn:sede=1")
    with pytest.raises(ValueError, match="needs weights=FILE"):
        nb.load_model(ds, model="torchvision:resnet18")
    with pytest.raises(ValueError, match="no model 'resnet5000'"):
        nb.load_model(ds, model="torchvision:resnet5000:weights=x.pth")


def test_torchvision_weights_file(tmp_path):
    ds = nb.load_dataset("scenes", size=32, n=2)
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=7)
    good = tmp_path / "mnv3.pth"
    torch.save(net.state_dict(), good)
    model = nb.load_model(ds, model=f"torchvision:mobilenet_v3_small:weights={good}")
    assert model.num_classes == 7 and model.cam_layer is model.net.features
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expect = net.eval()((x - model.mean) / model.std)
        assert torch.allclose(model(x), expect, atol=1e-5)
    wrapped = tmp_path / "checkpoint.pth"  # a training checkpoint holding the state dict
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, wrapped)
    spec = f"torchvision:mobilenet_v3_small:weights={wrapped},cam_layer=features.12"
    again = nb.load_model(ds, model=spec)
    assert model_fingerprint(again.net) == model_fingerprint(model.net)
    assert again.cam_layer is again.net.features[12]

    pickled = tmp_path / "whole-module.pth"  # a pickled module, not a state dict
    torch.save(net, pickled)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], listed)
    text = tmp_path / "notes.txt"
    text.write_text("not a torch file")
    for bad in (pickled, listed, text):
        with pytest.raises(ValueError, match=f"{bad.name}.*not a state dict"):
            nb.load_model(ds, model=f"torchvision:mobilenet_v3_small:weights={bad}")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        nb.load_model(ds, model=f"torchvision:resnet18:weights={tmp_path / 'missing.pth'}")
    with pytest.raises(ValueError, match="does not fit"):
        nb.load_model(ds, model=f"torchvision:resnet18:weights={good}")


def test_registered_arch_with_weights_file(tmp_path):
    ds = nb.load_dataset("scenes", size=32, n=2)
    net = build_arch("scenecnn", ds, seed=3)
    for name, state in (("classifier.pt", net.state_dict()), ("bare.pt", net.net.state_dict())):
        torch.save(state, tmp_path / name)
        loaded = nb.load_model(ds, model=f"scenecnn:weights={tmp_path / name}")
        assert model_fingerprint(loaded) == model_fingerprint(net)
    with pytest.raises(ValueError, match="does not fit"):
        nb.load_model(ds, model=f"lenet5:weights={tmp_path / 'bare.pt'}")


def test_run_with_two_models(tiny_scenes, tmp_path):
    cfg = RunConfig(
        datasets=parse_specs(TINY),
        models=parse_specs("default,scenecnn:seed=1"),
        methods=parse_specs("random,gradcam"),
        metrics=["deletion", "insertion"],
        n_images=8,
        shard_size=8,
        batch_size=8,
        out=str(tmp_path / "run"),
        settings={"n_steps": 8},
    )
    cells = plan_cells(cfg)
    assert len(cells) == 4 and len({c.key for c in cells}) == 4
    summary = run(cfg, progress=False)
    assert summary.exit_code == 0 and summary.ok == 4
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert list(board.columns[:3]) == ["dataset", "model", "method"]
    rows = set(zip(board.model, board.method, strict=True))
    assert rows == {(m, k) for m in ("default", "scenecnn(seed=1)") for k in ("random", "gradcam")}
    assert len(board) == 4 and board.deletion_auc.notna().all()
    per_image = pd.read_csv(tmp_path / "run" / "per_image.csv")
    assert set(per_image.model) == {"default", "scenecnn(seed=1)"} and len(per_image) == 32
    grad = board[board.method == "gradcam"].set_index("model")
    assert grad.deletion_auc["default"] != grad.deletion_auc["scenecnn(seed=1)"]  # two classifiers
    assert "| model |" in (tmp_path / "run" / "leaderboard.md").read_text()
    assert run(cfg, progress=False).skipped == 4  # resumes per (dataset, model, method, shard)


def _wnid_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for wnid in ("n01443537", "n02123159", "n02391049"):  # goldfish, tiger cat, zebra
        (root / wnid).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


@pytest.mark.slow
def test_imagenet_rise_config_end_to_end(tmp_path):
    """configs/imagenet-rise.toml with its paths pointed at a generated wnid tree and a saved,
    randomly initialised torchvision ResNet-50 (fewer images, steps and RISE masks)."""
    cfg = load_config(CONFIGS / "imagenet-rise.toml")
    assert [str(s) for s in cfg.datasets] == ["imagefolder:root=/path/to/imagenet/val,size=224"]
    assert cfg.models[0].name == "torchvision:resnet50" and cfg.metrics == ["deletion", "insertion"]
    assert cfg.settings == {
        "n_steps": 224,
        "substrate": "mean",
        "target": "pred",
        "insertion_start": "rise",
    }
    assert [m.name for m in cfg.methods] == ["rise", "gradcam", "saliency", "random", "center"]
    _wnid_tree(tmp_path / "val")
    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    cfg.datasets = [
        PluginSpec.make("imagefolder", {**cfg.datasets[0].kwargs, "root": str(tmp_path / "val")})
    ]
    cfg.models = [PluginSpec.make("torchvision:resnet50", {"weights": str(weights)})]
    cfg.methods = [
        PluginSpec.make("rise", {**cfg.methods[0].kwargs, "n_masks": 8, "batch_size": 8}),
        *cfg.methods[1:],
    ]
    cfg.n_images, cfg.out, cfg.settings["n_steps"] = 3, str(tmp_path / "run"), 8
    cfg.settings["audit_images"] = 0  # the audit's passes at 224 px on a CPU: tested elsewhere
    summary = run(cfg, progress=False)
    assert summary.exit_code == 0, summary.failed
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert list(board.method) == [
        "rise(batch_size=8,grid=7,n_masks=8,p=0.5)",
        "gradcam",
        "saliency",
        "random",
        "center",
    ]
    assert (board.model == f"torchvision:resnet50(weights={weights})").all()
    assert (board.n_images == 3).all()
    for col in ("deletion_auc", "insertion_auc"):
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in board[col])
    labels = pd.read_csv(tmp_path / "run" / "per_image.csv").label
    assert set(labels) <= {1, 282, 340}  # ImageNet class indices of the wnid folders


def test_store_written_before_models_were_an_axis(tmp_path):
    """An older store (cells without a model column) opens, and its cells read as ``default``."""
    import sqlite3

    from nicebench.store import CellResult, RunStore

    old = sqlite3.connect(tmp_path / "store.sqlite")
    old.execute(
        "CREATE TABLE cells (key TEXT PRIMARY KEY, dataset TEXT, method TEXT, method_name TEXT, "
        "track TEXT, shard INTEGER, status TEXT, error TEXT, n_images INTEGER, "
        "explain_ms_per_image REAL, peak_mem_mb REAL, seconds REAL, finished_at TEXT, "
        "code_version TEXT, spec TEXT)"
    )
    old.execute(
        "INSERT INTO cells VALUES ('k0','scenes','random','random','explain',0,'ok','',"
        "2,0.1,1,1,'t','c','{}')"
    )
    old.commit()
    old.close()
    store = RunStore(tmp_path)
    store.write(
        CellResult(
            key="k1",
            dataset="scenes",
            model="lenet5",
            method="random",
            method_name="random",
            shard=0,
            image_rows=[(0, 1, 1, "x", 0.5)],
        )
    )
    cells = store.cells().set_index("key")
    assert cells.model.to_dict() == {"k0": "default", "k1": "lenet5"}
    assert list(store.image_values().model) == ["lenet5"]
    store.close()


def test_model_registry_uses_its_entry_point_group():
    from nicebench.registry import MODELS

    assert MODELS.entry_point_group == "nicebench.models" and MODELS.kind == "model"


def test_unknown_model_names_fail_before_the_run(tmp_path):
    cfg = RunConfig(
        datasets=parse_specs(TINY),
        models=parse_specs("scenecn"),
        methods=parse_specs("random"),
        out=str(tmp_path / "run"),
    )
    with pytest.raises(KeyError, match="Did you mean: scenecnn"):
        plan_cells(cfg)
    cfg.models = parse_specs("torchvision:resnet5000:weights=x.pth")
    with pytest.raises(ValueError, match="no model 'resnet5000'"):
        plan_cells(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_models_option(monkeypatch, tmp_path, capsys):
    import nicebench.runner as runner
    from nicebench.cli import main

    seen = {}

    def fake_run(cfg, progress=True):
        seen["models"] = [str(m) for m in cfg.models]
        (tmp_path / "leaderboard.csv").write_text("dataset,model,method,kind\n")
        return runner.RunSummary(tmp_path, 0, 0, 0)

    monkeypatch.setattr(runner, "run", fake_run)
    argv = [
        "run",
        "--datasets",
        TINY,
        "--methods",
        "random",
        "--out",
        str(tmp_path),
        "-q",
        "--no-report",
    ]
    assert main([*argv, "--models", "default,torchvision:resnet50:weights=/m/r50.pth"]) == 0
    assert seen["models"] == ["default", "torchvision:resnet50:weights=/m/r50.pth"]
    assert main(argv) == 0 and seen["models"] == ["default"]
    assert main(["list", "models", "*net*"]) == 0
    assert "lenet5" in capsys.readouterr().out
