"""examples/plugin-package as a third-party package: found through its entry points (a dist-info
folder on sys.path stands in for `pip install`), listed, run, and a broken sibling reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin-package"

# What the example package declares, and a broken sibling distribution's two entry points. Under
# tox the example package is pip-installed, so only the broken sibling is faked then.
GOOD = """\
[nicebench.methods]
grad-x-input = nicebench_example.methods:GradientTimesInput

[nicebench.datasets]
bars = nicebench_example.datasets:Bars

[nicebench.codecs]
jpeg2000 = nicebench_example.codecs:Jpeg2000
"""
BROKEN = """\
[nicebench.methods]
broken-method = nicebench_example.no_such_module:Missing
not-a-class = nicebench_example.datasets:render
"""
INSTALLED = "NICEBENCH_EXAMPLE_INSTALLED" in os.environ


def _fake_dist(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def installed(tmp_path):
    """Environment of a subprocess that sees the example package as if pip had installed it."""
    site = tmp_path / "site"
    if not INSTALLED:
        _fake_dist(site, "nicebench-example-plugins", GOOD)
    _fake_dist(site, "nicebench-example-broken", BROKEN)
    path = os.pathsep.join([str(EXAMPLE / "src"), str(site)])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "NICEBENCH_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def _nicebench(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nicebench.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_example_package_is_listed_with_its_broken_sibling(installed, tmp_path):
    proc = _nicebench(["list"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    methods = out[out.index("methods:") : out.index("datasets:")]
    assert "grad-x-input" in methods and "Gradient × input" in methods and "gradcam" in methods
    assert "bars" in out[out.index("datasets:") : out.index("models:")]
    assert "jpeg2000" in out[out.index("codecs:") : out.index("datasets:")]
    failed = out[out.index("failed to load:") :]
    assert "broken-method" in failed and "ModuleNotFoundError" in failed
    assert "nicebench_example.no_such_module:Missing" in failed
    line = next(x for x in failed.splitlines() if "not-a-class" in x)
    assert "function" in line and "render" in line and "subclass of nicebench.Method" in line


def _example_leaderboard(nicebench, out: Path) -> pd.DataFrame:
    """A tiny run of the example's method, dataset and codec (the codec is the reference)."""
    proc = nicebench(
        [
            "run",
            "--datasets",
            "bars:n=8",
            "--methods",
            "grad-x-input,center",
            "--codecs",
            "jpeg2000,jpeg",
            "--metrics",
            "deletion,pointing_game,compression",
            "--n-images",
            "8",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = pd.read_csv(out / "leaderboard.csv").set_index("method")
    assert set(board.index) == {"grad-x-input", "center", "jpeg2000", "jpeg"}
    assert (board.status == "ok").all() and (board.n_images == 8).all()
    methods = board[board.kind == "method"]
    assert methods.deletion_auc.notna().all() and methods.pointing_game.notna().all()
    assert board.loc["jpeg2000", "kind"] == "codec" and board.bpp.notna().all()
    return board


@pytest.mark.skipif(
    "NICEBENCH_EXAMPLE_INSTALLED" not in os.environ,
    reason="tox pip-installs examples/plugin-package and sets this",
)
def test_the_pip_installed_example_package_is_listed_and_runs(tmp_path):
    env = {**os.environ, "NICEBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = _nicebench(["list"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for kind, name in (("methods", "grad-x-input"), ("datasets", "bars"), ("codecs", "jpeg2000")):
        section = proc.stdout.split(f"{kind}:\n", 1)[1].split(":\n", 1)[0]
        assert name in section, (kind, name)
    assert "failed to load" not in proc.stdout
    _example_leaderboard(lambda args: _nicebench(args, env, tmp_path), tmp_path / "run")


def test_tiny_leaderboard_with_the_example_plugins(installed, tmp_path):
    out = tmp_path / "run"
    board = _example_leaderboard(lambda args: _nicebench(args, installed, tmp_path), out)
    assert board.loc["jpeg2000", "bd_codec"] == "jpeg2000"
    proc = _nicebench(
        [
            "run",
            "--datasets",
            "bars:n=8",
            "--methods",
            "broken-method",
            "--n-images",
            "8",
            "--out",
            str(tmp_path / "bad"),
            "-q",
        ],
        installed,
        tmp_path,
    )
    assert proc.returncode == 2
    assert "'broken-method' failed to load" in proc.stderr and "no_such_module" in proc.stderr
