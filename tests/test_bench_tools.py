"""bench/run_all.py's table and README block, and the deletion engine's chunking (no timing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from nicebench.metrics import deletion, insertion
from nicebench.metrics.reference import deletion_loop, insertion_loop

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_run_all_table_and_readme_block(tmp_path):
    ra = _load("run_all")
    machine = {
        "processor": "x86_64",
        "cores": 2,
        "threads": 2,
        "torch": "2.x",
        "cuda": None,
        "date": "2026-11-26",
        "commit": "abc1234",
    }
    results = {
        "deletion_engine": {"models": {"scenecnn-64": [{"batch": 16, "ratio": 0.91}]}},
        "gate_optimizer": {"cpu": {"speedup": 3.2}, "gpu": {"skipped": "no CUDA device"}},
        "metrics": {"error": "boom"},
    }
    md = ra._markdown(machine, results)
    assert (
        "| deletion_engine | deletion vs forward limit, scenecnn-64, batch 16 | 0.91 | ≥ 0.85 |"
        in md
    )
    assert (
        "| gate_optimizer | GPU figures (fused gate step, nice-opt ResNet-50) | — | no CUDA device |"
        in md
    )
    assert "| metrics | failed: boom | | |" in md
    assert "2 cores, 2 torch threads" in md
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\noutro\n")
    ra._update_readme(readme, md)
    text = readme.read_text()
    assert "old table" not in text and md in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="bench:start"):
        ra._update_readme(readme, md)


@pytest.mark.parametrize("batch_size", [None, 3, 7, 40])
def test_deletion_engine_chunks_match_the_per_image_loop(batch_size):
    """Whatever the chunking (several images × all steps, or one image × a run of steps), the
    curves equal the straightforward loop's, for deletion and insertion, with targets given or
    resolved from the prediction (whose forward pass supplies the original's point)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 5)).eval()
    with torch.no_grad():
        model[1].weight.mul_(20)  # probabilities that move with the pixels
    x = torch.rand(5, 3, 12, 12)
    sal = torch.rand(5, 1, 12, 12)
    ref_del = deletion_loop(model, x, sal, n_steps=6)
    ref_ins = insertion_loop(model, x, sal, n_steps=6)
    targets = model(x).argmax(1)
    for target in ("pred", targets):
        d = deletion(model, x, sal, n_steps=6, target=target, batch_size=batch_size)
        i = insertion(model, x, sal, n_steps=6, target=target, batch_size=batch_size)
        torch.testing.assert_close(d, ref_del, atol=1e-5, rtol=0)
        torch.testing.assert_close(i, ref_ins, atol=1e-5, rtol=0)
