"""The Ray executor: cells run as Ray tasks, the driver alone writes the store."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from nicebench.cli import main
from nicebench.config import RunConfig, parse_specs
from nicebench.executors import RayExecutor
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
    with sqlite3.connect(tmp_path / "ray" / "store.sqlite") as conn:
        nodes = {
            json.loads(spec).get("ray_node") for (spec,) in conn.execute("SELECT spec FROM cells")
        }
    assert len(nodes) == 1 and None not in nodes  # each cell records the Ray node that ran it


def test_ray_workers_get_the_drivers_settings(monkeypatch):
    """The nodes of a cluster started with `ray start` have their own environment: the driver's
    runtime env gives every worker nicebench's variables and the thread settings, MKL_DYNAMIC
    (cli.py sets it) included, else a worker's MKL may change the last bits of its results."""
    ray = pytest.importorskip("ray")
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setenv("MKL_DYNAMIC", "FALSE")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("NICEBENCH_CACHE", "/shared/cache")
    monkeypatch.setenv("XDG_CACHE_HOME", "driver-cache")
    RayExecutor(address="10.0.0.1:6379")
    env = seen["runtime_env"]["env_vars"]
    assert seen["address"] == "10.0.0.1:6379" and "XDG_CACHE_HOME" not in env
    assert {k: env.get(k) for k in ("MKL_DYNAMIC", "OMP_NUM_THREADS", "NICEBENCH_CACHE")} == {
        "MKL_DYNAMIC": "FALSE",
        "OMP_NUM_THREADS": "3",
        "NICEBENCH_CACHE": "/shared/cache",
    }


def test_cluster_that_cannot_be_joined_is_named_with_the_fix(monkeypatch, tmp_path, capsys):
    ray = pytest.importorskip("ray")

    def refuse(**kw):
        raise ConnectionError(f"Failed to connect to Ray cluster at {kw['address']}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    argv = ["run", "--datasets", TINY, "--methods", "random", "--metrics", "deletion"]
    argv += ["--n-images", "2", "--no-report", "-q", "--out", str(tmp_path)]
    assert main([*argv, "--executor", "ray", "--address", "10.0.0.1:6379"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not join the Ray cluster at 10.0.0.1:6379 (Failed to"), err
    assert "RAY_AUTH_MODE=token" in err
