"""The Ray executor: cells run as Ray tasks, the driver alone writes the store."""

from __future__ import annotations

import pandas as pd
import pytest

from nicebench.config import RunConfig, parse_specs
from nicebench.runner import run
from nicebench.testing import TINY_SCENES

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())


def test_ray_executor_matches_local(tiny_scenes, tmp_path):
    pytest.importorskip("ray")

    def cfg(out, executor):
        return RunConfig(
            datasets=parse_specs(TINY),
            methods=parse_specs("center,gradcam"),
            metrics=["deletion", "pointing_game"],
            n_images=8,
            shard_size=4,
            out=str(out),
            executor=executor,
            settings={"n_steps": 8},
        )

    local = run(cfg(tmp_path / "local", "local"), progress=False)
    remote = run(cfg(tmp_path / "ray", "ray"), progress=False)  # starts and stops local Ray
    assert local.ok == remote.ok == 4 and not remote.failed
    a = pd.read_csv(tmp_path / "local" / "per_image.csv")
    b = pd.read_csv(tmp_path / "ray" / "per_image.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
