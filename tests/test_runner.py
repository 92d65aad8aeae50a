"""Runner, store, resume after kill -9, failing cells, tables and the CLI on tiny configs."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from nicebench import Method
from nicebench.cli import main
from nicebench.config import PluginSpec, RunConfig, load_config, parse_specs
from nicebench.registry import METHODS
from nicebench.report.tables import LEADERBOARD_COLUMNS, compression_summary
from nicebench.runner import default_config, plan_cells, run
from nicebench.store import RunStore
from nicebench.testing import TINY_SCENES, registered, restored

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())


def test_parse_specs():
    specs = parse_specs(["nice:lam=5,mu=0.1,gradcam", "occlusion:window=8"])
    assert specs == [
        PluginSpec.make("nice", {"lam": 5, "mu": 0.1}),
        PluginSpec.make("gradcam"),
        PluginSpec.make("occlusion", {"window": 8}),
    ]
    assert specs[0].label == "nice(lam=5,mu=0.1)" and str(specs[0]) == "nice:lam=5,mu=0.1"
    assert parse_specs("scenes:size=128")[0].kwargs == {"size": 128}
    with pytest.raises(ValueError, match="before any plugin"):
        parse_specs("size=3")


def test_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'datasets = ["scenes:size=32,n=8"]\nn_images = 8\n'
        '[[methods]]\nname = "occlusion"\nwindow = 4\n[settings]\nn_steps = 8\n'
    )
    cfg = load_config(path)
    assert cfg.datasets[0].kwargs == {"size": 32, "n": 8}
    assert cfg.methods == [PluginSpec.make("occlusion", {"window": 4})]
    assert cfg.n_images == 8 and cfg.settings == {"n_steps": 8}
    path.write_text('datasets = ["scenes"]\ncodecs = ["webp", "jpeg:subsampling=4:4:4"]\n')
    assert load_config(path).codecs == parse_specs(["webp", "jpeg:subsampling=4:4:4"])
    path.write_text("bogus = 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_config(path)


def _cfg(out, methods=("random", "center", "gradcam", "oracle"), n=16, shard=8):
    return RunConfig(
        datasets=parse_specs(TINY),
        methods=parse_specs(list(methods)),
        n_images=n,
        shard_size=shard,
        batch_size=8,
        out=str(out),
        settings={"n_steps": 8},
        metrics=["deletion", "insertion", "pointing_game", "energy_pointing_game", "mask_auroc"],
    )


def test_tiny_run_tables_and_resume(tiny_scenes, tmp_path):
    cfg = _cfg(tmp_path)
    s1 = run(cfg, progress=False)
    assert s1.total == 8 and s1.ok == 8 and not s1.failed
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(board.columns[:17]) == LEADERBOARD_COLUMNS[:17]
    assert (board.kind == "method").all()
    assert set(board.method) == {"random", "center", "gradcam", "oracle"}
    assert (board.n_images == 16).all() and (board.status == "ok").all()
    assert board.deletion_auc.notna().all() and board.deletion_auc_lo.notna().all()
    assert board.compression_ratio.isna().all()  # not computed by this run: left empty
    oracle = board.set_index("method").loc["oracle"]
    assert oracle.pointing_game == 1.0 and oracle.mask_auroc == 1.0
    per_image = pd.read_csv(tmp_path / "per_image.csv")
    assert len(per_image) == 4 * 16 and (per_image.kind == "method").all()
    assert "| gradcam |" in (tmp_path / "leaderboard.md").read_text()
    s2 = run(cfg, progress=False)
    assert s2.skipped == 8 and s2.ok == 0
    assert board.equals(pd.read_csv(tmp_path / "leaderboard.csv"))


def test_a_run_scores_another_split_when_the_dataset_names_one(tiny_scenes, tmp_path):
    """``split=val`` in a dataset's spec scores the validation split (to choose settings without
    touching the test split); the classifier is the same, trained on the training split."""
    from nicebench.data import load_dataset, load_run_dataset
    from nicebench.runner import _model

    spec = parse_specs(TINY + ",split=val")
    cfg = RunConfig(
        datasets=spec,
        methods=parse_specs("center"),
        n_images=8,
        shard_size=8,
        batch_size=8,
        out=str(tmp_path),
        metrics=["mask_auroc"],
    )
    assert run(cfg, progress=False).ok == 1
    per_image = pd.read_csv(tmp_path / "per_image.csv")
    val = load_dataset("scenes", split="val", **TINY_SCENES)
    test = load_dataset("scenes", split="test", **TINY_SCENES)
    assert per_image.sort_values("image_index").label.tolist() == [int(val[i][1]) for i in range(8)]
    assert [int(val[i][1]) for i in range(8)] != [int(test[i][1]) for i in range(8)]
    assert per_image.dataset.str.contains("split=val").all()
    assert load_run_dataset("scenes", **TINY_SCENES).split == "test"  # the default
    from nicebench.models import model_fingerprint

    default = PluginSpec.make("default", {})
    on_test = parse_specs(TINY)[0]
    assert model_fingerprint(_model(spec[0], default, "cpu")) == model_fingerprint(
        _model(on_test, default, "cpu")
    )
    with pytest.raises(ValueError, match="split must be one of"):
        load_run_dataset("scenes", split="bogus", **TINY_SCENES)


def test_failing_cell_is_recorded_and_run_goes_on(tiny_scenes, tmp_path):
    class NaNMap(Method):
        uses_model = False

        def attribute(self, images, targets, **kw):
            return torch.full_like(images[:, :1], float("nan"))

    with registered(METHODS, "zz-nan", NaNMap):
        summary = run(_cfg(tmp_path, methods=("zz-nan", "center"), n=8), progress=False)
    assert summary.ok == 1 and len(summary.failed) == 1 and summary.exit_code == 1
    assert "NaN" in summary.failed[0][2]
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    assert (
        board.loc["zz-nan", "status"].startswith("failed") and board.loc["center", "status"] == "ok"
    )


def test_killed_run_resumes_without_recomputing(tiny_scenes, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(
        f'datasets = ["{TINY}"]\nmethods = ["occlusion:window=4,stride=1", "gradcam"]\n'
        f'n_images = 64\nshard_size = 4\nbatch_size = 4\nout = "{out}"\n'
        "[settings]\nn_steps = 32\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nicebench.cli", "run", str(config), "-q"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = out / "store.sqlite"
    deadline = time.time() + 240
    done_before: dict[str, str] = {}
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    rows = conn.execute(
                        "SELECT key, finished_at FROM cells WHERE status='ok'"
                    ).fetchall()
            except sqlite3.OperationalError:
                continue
            if len(rows) >= 2:
                break
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        done_before = dict(conn.execute("SELECT key, finished_at FROM cells WHERE status='ok'"))
    total = len(plan_cells(load_config(config)))
    assert 2 <= len(done_before) < total
    summary = run(load_config(config), progress=False)
    assert summary.skipped == len(done_before)
    assert summary.ok == total - len(done_before)
    with sqlite3.connect(db) as conn:
        after = dict(conn.execute("SELECT key, finished_at FROM cells WHERE status='ok'"))
    assert len(after) == total
    assert all(after[k] == v for k, v in done_before.items())  # not recomputed


def test_cli_list_and_errors(capsys, tmp_path):
    assert main(["list", "methods", "grad*"]) == 0
    out = capsys.readouterr().out
    assert "gradcam" in out and "random" not in out
    assert main(["list", "codecs"]) == 0
    out = capsys.readouterr().out
    assert "jpeg" in out and "webp" in out and "avif" in out
    assert main(["list", "metrics", "comp*"]) == 0
    assert "compression" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0
    assert "scenes" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["run", "--datasets", "scenez", "--n-images", "2", "-q", "--out", str(out)]) == 2
    assert "Did you mean: scenes" in capsys.readouterr().err
    assert not out.exists()


def test_cli_run_tiny(tiny_scenes, tmp_path, capsys):
    code = main(
        [
            "run",
            "--datasets",
            TINY,
            "--methods",
            "edges,center",
            "--n-images",
            "4",
            "--out",
            str(tmp_path),
            "--metrics",
            "deletion,pointing_game",
            "--no-report",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board.insertion_auc.isna().all() and board.deletion_auc.notna().all()
    # a compact summary, not the Markdown table: key columns that have values, the best method
    # per metric, where the files are
    lines = out.splitlines()
    assert "2 cells computed" in out and "| edges |" not in out
    assert max(len(line) for line in lines if str(tmp_path) not in line) <= 100
    header = next(line for line in lines if line.strip().startswith("method"))
    assert header.split() == ["method", "deletion", "pointing", "ms/image"]
    # edges and center are model-blind maps and the run has neither oracle nor random: no
    # reactivity test can run (and the tiny classifier's p(pred) is low: deletion has no range),
    # so no metric is valid here and no best method is named
    validity = pd.read_csv(tmp_path / "validity.csv").set_index("metric")
    assert validity.loc["pointing_game", "verdict"] == "untested"
    assert "valid" not in set(validity.verdict)
    assert "none named: no key metric is valid here" in out
    assert "† not valid here" in out and "pointing_game untested" in out
    assert f"run directory: {tmp_path}" in out and "leaderboard.md" in out
    assert not (tmp_path / "report").exists()


def test_run_directories_never_default_to_the_committed_results(tmp_path):
    assert default_config().out == "runs/default"
    path = tmp_path / "my-sweep.toml"
    path.write_text('datasets = ["scenes:size=32"]\n')
    assert load_config(path).out == "runs/my-sweep"
    path.write_text('datasets = ["scenes:size=32"]\nout = "elsewhere"\n')
    assert load_config(path).out == "elsewhere"
    from pathlib import Path

    for config in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml"):
        assert not load_config(config).out.startswith("results"), config


def test_cli_codecs_the_first_is_the_reference(tiny_scenes, tmp_path, capsys):
    code = main(
        [
            "run",
            "--datasets",
            TINY,
            "--methods",
            "center",
            "--codecs",
            "webp,jpeg",
            "--metrics",
            "compression",
            "--n-images",
            "4",
            "--out",
            str(tmp_path),
            "-q",
        ]
    )
    assert code == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    assert board.kind.to_dict() == {"center": "method", "webp": "codec", "jpeg": "codec"}
    # a method's headline columns are the reference codec's; each codec row its own curve's
    assert board.bd_codec.to_dict() == {"center": "webp", "webp": "webp", "jpeg": "jpeg"}
    # the default leaderboard's settings code methods with the reference codec only
    assert "compression_ratio_jpeg" not in board
    assert "| webp | codec |" in (tmp_path / "leaderboard.md").read_text()


def test_default_config_lists_jpeg_and_webp_as_codecs():
    cfg = default_config()
    assert [str(c) for c in cfg.codecs] == ["jpeg", "webp"]
    assert not {"jpeg", "webp"} & {m.name for m in cfg.methods}
    assert "compression" in cfg.metrics
    old = RunConfig(
        datasets=parse_specs(TINY),
        methods=parse_specs("center"),
        n_images=4,
        metrics=["compression"],
        settings={"codec": "webp"},
    )
    cells = plan_cells(old)
    assert [(c.method.name, c.kind) for c in cells] == [("center", "method"), ("webp", "codec")]
    assert all(str(c.reference) == "webp" for c in cells)
    with pytest.raises(ValueError, match="'jpeg' is a codec, not a method"):
        plan_cells(RunConfig(datasets=parse_specs(TINY), methods=parse_specs("jpeg")))


def _compression_cfg(out, shard):
    return RunConfig(
        datasets=parse_specs(TINY),
        methods=parse_specs("center,random"),
        codecs=[
            PluginSpec.make("jpeg", {"qualities": [10, 30, 50, 75, 90]}),
            PluginSpec.make("webp"),
        ],
        n_images=12,
        shard_size=shard,
        batch_size=6,
        out=str(out),
        metrics=["compression"],
    )


_TORCH_FREE_SUMMARY = """
import importlib.abc, importlib.util, pathlib, sys, types

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"the compression summary imported {name}")

sys.meta_path.insert(0, NoTorch())  # any torch import now fails
root = pathlib.Path(importlib.util.find_spec("nicebench").origin).parent
for name, sub in [("nicebench", ""), ("nicebench.compression", "compression"),
                  ("nicebench.report", "report")]:
    pkg = types.ModuleType(name)  # the packages without their __init__ (which import torch)
    pkg.__path__ = [str(root / sub)]
    sys.modules[name] = pkg
from nicebench.report.tables import compression_summary
from nicebench.store import RunStore
summary = compression_summary(RunStore(sys.argv[1]))
assert "torch" not in sys.modules
print(summary.to_json(orient="split", double_precision=15))
"""


def test_compression_metric_codec_cells_and_shards(tiny_scenes, tmp_path):
    """Codec cells code the quality sweep; rows carry their kind and global image index; the
    summary is the same with 1, 2 or 3 shards and needs no torch."""
    summaries = {}
    for shard in (12, 6, 4):
        out = tmp_path / f"shard{shard}"
        summary = run(_compression_cfg(out, shard), progress=False)
        assert not summary.failed and summary.total == 4 * 12 // shard
        store = RunStore(out)
        rows = store.tables("compression")
        for key, part in rows.groupby(["method", "track_codec", "point"], dropna=False):
            assert sorted(part["image"]) == list(range(12)), key
        assert set(rows["bd_codec"]) == {"jpeg(qualities=(10, 30, 50, 75, 90))"}
        methods = rows[rows["kind"] == "method"]
        assert set(methods["track_codec"]) == {"jpeg(qualities=(10, 30, 50, 75, 90))", "webp"}
        summaries[shard] = compression_summary(store)
        store.close()
    # fronts and bootstrap intervals are computed across shards: the same whatever the sharding
    # (SSIM is computed on each shard's own front, so it may differ)
    ssim = [c for c in summaries[12] if c.startswith("ssim")]
    for shard in (6, 4):
        pd.testing.assert_frame_equal(
            summaries[shard].drop(columns=ssim),
            summaries[12].drop(columns=ssim),
            check_exact=False,
            rtol=1e-12,
        )
    comp = summaries[12].set_index(["method", "track_codec"])
    jpeg = "jpeg(qualities=(10, 30, 50, 75, 90))"
    assert (
        comp.loc[(jpeg, jpeg), "kind"] == "codec" and comp.loc[("webp", "webp"), "kind"] == "codec"
    )
    assert comp.loc[("center", jpeg), "kind"] == "method"
    # each row against its own codec's curve: WebP's against WebP's, not JPEG's
    assert comp.loc[(jpeg, jpeg), "bd_rate"] == 0.0 and comp.loc[("webp", "webp"), "bd_rate"] == 0.0
    assert comp.loc[("center", "webp"), "bd_codec"] == "webp"
    assert comp.loc[("center", jpeg), "bd_codec"] == jpeg
    assert comp.loc[(jpeg, jpeg), "n_images"] == 12
    for key in [("center", jpeg), ("random", "webp")]:
        lo, r, hi = comp.loc[
            key, ["compression_ratio_lo", "compression_ratio", "compression_ratio_hi"]
        ]
        assert lo <= r <= hi or np.isnan(r)
    board = pd.read_csv(tmp_path / "shard4" / "leaderboard.csv").set_index("method")
    assert board.loc["webp", "kind"] == "codec" and board.loc["center", "kind"] == "method"
    assert board.loc["webp", "bd_codec"] == "webp" and board.loc[jpeg, "bd_rate"] == 0.0
    assert board.loc["center", "bd_codec"] == jpeg and "bd_rate_webp" in board
    assert {
        "front_quality",
        "front_share",
        "front_factor",
        "compression_ratio_lo",
        "compression_ratio_hi",
        "payload_ratio",
        "vs_uniform",
    } <= set(board.columns)
    assert board.loc["random", "sanity"] in ("ok", "FAILED") or np.isnan(
        board.loc["random", "vs_uniform_hi"]
    )
    points = pd.read_csv(tmp_path / "shard4" / "compression_points.csv")
    assert set(points[points.kind == "codec"].method) == {jpeg, "webp"}
    wanted = {"quality", "keep", "share", "factor", "on_front", "headline", "track_codec"}
    assert wanted <= set(points)
    for _, part in points.groupby(["method", "track_codec"]):
        front = part[part.on_front].sort_values("bytes")
        assert front["accuracy"].is_monotonic_increasing and len(front) >= 1
        cheaper = part[part.bytes <= front.bytes.max()]
        assert cheaper.accuracy.max() == front.accuracy.max()
    md = (tmp_path / "shard4" / "leaderboard.md").read_text()
    assert "`random` must show no gain" in md

    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE_SUMMARY, str(tmp_path / "shard4")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    free = pd.read_json(io.StringIO(proc.stdout), orient="split")
    # JSON has no inf (an upper bound where too few resamples qualify): it comes back as NaN
    pd.testing.assert_frame_equal(free, summaries[4].replace(np.inf, np.nan), check_dtype=False)


@pytest.mark.slow
def test_gradcam_beats_random_on_scenes64(scenes64, tmp_path):
    """The issue's acceptance check on the real scenes-64 classifier (trained once, ~2 min)."""
    ds, model = scenes64
    cfg = RunConfig(
        datasets=[PluginSpec.make("scenes", {"size": 64, "n": 200})],
        methods=parse_specs("gradcam,random"),
        n_images=100,
        shard_size=100,
        out=str(tmp_path),
    )
    run(cfg, progress=False)
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    g, r = board.loc["gradcam"], board.loc["random"]
    assert g.deletion_auc < r.deletion_auc
    assert g.insertion_auc > r.insertion_auc
    assert g.pointing_game > r.pointing_game
    assert board.accuracy_original.iloc[0] >= 0.9


# The default leaderboard as it was defined in runner.py before it moved to default.toml.
TODAYS_DEFAULT_METHODS = [
    "random",
    "center",
    "edges",
    "oracle",
    "saliency",
    "ig",
    "occlusion",
    "gradcam",
    "lime",
    "rise:n_masks=500",
    "rtsal",
    "nice",
    "nice-opt",
    "nice-refined",  # issue 30's amortised-then-refined gates
    "smoothgrad",
    "gradshap",
    "deeplift",
    "gradcam++",
    "scorecam",  # issue 14's comparison methods
]
TODAYS_DEFAULT_CODECS = ["jpeg", "webp"]  # were methods; codecs are their own kind now
TODAYS_DEFAULT_METRICS = [
    "deletion",
    "insertion",
    "pointing_game",
    "energy_pointing_game",
    "mask_auroc",
    "mask_share",
    "masked_accuracy",
    "saliency_metric",
    "sanity_spearman",
    "random_logit",
    "sparseness",
    "entropy",
    "compression",
]


def test_default_config_is_the_packaged_toml_and_unchanged():
    from importlib import resources
    from pathlib import Path

    from nicebench.data import DatasetMissingError, load_dataset
    from nicebench.runner import DEFAULT_METHODS, DEFAULT_METRICS, default_config

    try:
        load_dataset("fashion-mnist")
        optional = [PluginSpec.make("fashion-mnist")]
    except DatasetMissingError:
        optional = []
    expected = RunConfig(
        datasets=[PluginSpec.make("scenes", {"size": 64}), *optional],
        methods=parse_specs(TODAYS_DEFAULT_METHODS),
        codecs=parse_specs(TODAYS_DEFAULT_CODECS),
        metrics=TODAYS_DEFAULT_METRICS,
        n_images=100,
        settings={"track_codecs": "reference"},
    )
    assert default_config() == expected
    assert DEFAULT_METHODS == TODAYS_DEFAULT_METHODS and DEFAULT_METRICS == TODAYS_DEFAULT_METRICS
    assert default_config(n_images=7, out="x") == RunConfig(
        **{**vars(expected), "n_images": 7, "out": "x"}
    )
    with pytest.raises(TypeError, match="n_imgs"):
        default_config(n_imgs=7)
    packaged = resources.files("nicebench").joinpath("configs", "default.toml")
    in_repo = Path(__file__).resolve().parents[1] / "configs" / "default.toml"
    assert packaged.read_text() == in_repo.read_text()  # the same file, found installed too
    assert load_config(in_repo) == expected


def test_optional_datasets_are_added_when_their_files_exist(tiny_scenes, tmp_path, capsys):
    from nicebench import BenchDataset, DatasetMissingError

    class Absent(BenchDataset):
        def __init__(self, split="test"):
            raise DatasetMissingError("zz-absent: not on this machine")

    path = tmp_path / "run.toml"
    path.write_text(
        'datasets = ["scenes:size=32"]\noptional_datasets = ["zz-absent", "scenes:size=64,n=4"]\n'
    )
    with registered("dataset", "zz-absent", Absent):
        cfg = load_config(path)
        tiny = tmp_path / "tiny.toml"
        tiny.write_text(f'datasets = ["{TINY}"]\noptional_datasets = ["zz-absent"]\n')
        code = main(
            [
                "run",
                str(tiny),
                "--methods",
                "center",
                "--metrics",
                "deletion",
                "--n-images",
                "2",
                "--out",
                str(tmp_path / "run"),
                "-q",
                "--no-report",
            ]
        )
    assert cfg.datasets == parse_specs(["scenes:size=32", "scenes:size=64,n=4"])
    assert cfg.skipped_datasets == [("zz-absent", "zz-absent: not on this machine")]
    assert code == 0
    err = capsys.readouterr().err  # the user is told what was left out and why
    assert "skipped dataset zz-absent: zz-absent: not on this machine" in err


def test_report_reads_the_better_direction_from_the_metric_specs(tiny_scenes, tmp_path):
    from nicebench.registry import register_metric
    from nicebench.report.tables import lower_is_better

    # today's note for the default columns
    assert lower_is_better(LEADERBOARD_COLUMNS) == [
        "bd_rate",
        "bpp",
        "compression_ratio",
        "deletion_auc",
        "explain_ms_per_image",
        "saliency_metric",
        "sanity_spearman",
    ]
    notes = {}
    for lower in (True, False):
        with restored("metric", "zz_spread"):
            register_metric(
                "zz_spread", lambda c: c.saliency.flatten(1).std(1), higher_is_better=not lower
            )
            cfg = _cfg(tmp_path / str(lower), methods=("edges",), n=4, shard=4)
            cfg.metrics = ["deletion", "zz_spread"]
            assert run(cfg, progress=False).ok == 1
        per_image = pd.read_csv(tmp_path / str(lower) / "per_image.csv")
        assert per_image.zz_spread.notna().all() and len(per_image) == 4
        md = (tmp_path / str(lower) / "leaderboard.md").read_text()
        notes[lower] = next(line for line in md.splitlines() if line.startswith("Lower is better"))
    # the run's own metrics (its stored catalogue) and the report's columns
    assert notes[True] == (
        "Lower is better for bd_rate, bpp, combined_rank, compression_ratio, "
        "deletion_auc, explain_ms_per_image, zz_spread; higher for the rest."
    )
    assert notes[False] == notes[True].replace(", zz_spread", "")


def test_cli_run_ends_with_figures_and_report_of_the_latest_run(tiny_scenes, tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "--datasets",
        TINY,
        "--metrics",
        "deletion,insertion",
        "--n-images",
        "4",
        "-q",
        "--out",
        str(out),
    ]
    assert main(["run", "--methods", "center,edges", *base]) == 0
    text = capsys.readouterr().out
    assert "figures: figures" in text and "report: report/index.html" in text
    assert (out / "figures" / "curves.png").stat().st_size > 0
    assert (out / "figures" / "curves.pdf").stat().st_size > 0
    assert (out / "figures" / "forest_deletion_auc.png").exists()
    page = (out / "report" / "index.html").read_text()
    assert ">edges<" in page
    # a later run in the same directory: its figures, report and tables show its cells only,
    # and figures the earlier run drew that no longer apply are gone
    (out / "figures" / "mine.txt").write_text("a user's file stays")
    later = [*base[:2], *base[4:]]  # the same run directory, without insertion
    assert main(["run", "--methods", "center", "--metrics", "deletion,deletion", *later]) == 0
    assert not (out / "figures" / "forest_insertion_auc.png").exists()
    assert (out / "figures" / "forest_deletion_auc.png").exists()
    assert (out / "figures" / "mine.txt").exists()
    assert ">edges<" not in (out / "report" / "index.html").read_text()
    assert pd.read_csv(out / "leaderboard.csv").method.tolist() == ["center"]
    # the standalone commands redraw from the store alone
    (out / "figures" / "curves.png").unlink()
    assert main(["figures", str(out), "--format", "png"]) == 0
    assert (out / "figures" / "curves.png").exists()
    assert main(["report", str(out)]) == 0
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "holds no run store" in capsys.readouterr().err
