"""Classifier training is reproducible: the same identity gives the same weights in any process."""

from __future__ import annotations

import json

import torch

import nicebench as nb
from nicebench.models import load_model_path, model_fingerprint


def test_trained_classifier_does_not_depend_on_the_global_rng(tmp_path, monkeypatch):
    ds = nb.load_dataset("scenes", size=32, n=8, train_n=256, train_epochs=1)
    prints = []
    for i, draw in enumerate((0, 1000)):  # other code drew from the global RNG before loading
        monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / str(i)))
        torch.manual_seed(123)
        torch.rand(draw)
        prints.append(model_fingerprint(nb.load_model(ds)))
        after = torch.rand(1)
        torch.manual_seed(123)
        torch.rand(draw)
        assert torch.equal(after, torch.rand(1))  # loading left the global RNG where it was
    assert prints[0] == prints[1]
    meta = json.loads(load_model_path(ds).with_suffix(".json").read_text())
    assert meta["threads"] == torch.get_num_threads() and meta["torch"] == torch.__version__
