"""Reliability: per-cell time limits, Ray workers that die, bad input named with its fix, and
``nicebench verify`` (recompute a sample of stored cells and compare them bit for bit)."""

from __future__ import annotations

import errno
import sqlite3
import textwrap
import time

import pandas as pd
import pytest

from nicebench.config import RunConfig, load_config, parse_config, parse_specs
from nicebench.plugins import load_plugins
from nicebench.runner import plan_cells, run
from nicebench.store import RunStore, StoreError
from nicebench.testing import TINY_SCENES, restored
from nicebench.timelimit import CellTimeout, time_limit

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
TINY_LABEL = parse_specs(TINY)[0].label

# Plugins that misbehave on purpose; a file so that Ray workers load it too ($NICEBENCH_PLUGINS).
FAULTY_PLUGINS = textwrap.dedent('''
    import os
    import signal
    import time
    from pathlib import Path

    import torch

    from nicebench import Method, register_method


    class _Base(Method):
        uses_model = False

        def __init__(self, model=None, marker="", **params):
            super().__init__(model, **params)
            self.marker = marker

        def attribute(self, images, targets, **kw):
            return images.mean(1, keepdim=True)


    @register_method("zz-sleep", overwrite=True)
    class Sleep(_Base):
        """Hangs in Python (time.sleep) for a minute."""

        def attribute(self, images, targets, **kw):
            time.sleep(60)
            return super().attribute(images, targets)


    @register_method("zz-deaf", overwrite=True)
    class Deaf(_Base):
        """Hangs where no signal reaches it (SIGALRM blocked): only stopping the process helps."""

        def attribute(self, images, targets, **kw):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            try:
                time.sleep(60)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            return super().attribute(images, targets)


    @register_method("zz-die-once", overwrite=True)
    class DieOnce(_Base):
        """Kills its own process the first time (marker file absent), then works."""

        def attribute(self, images, targets, **kw):
            marker = Path(self.marker)
            if not marker.exists():
                marker.write_text("died")
                os.kill(os.getpid(), signal.SIGKILL)
            return super().attribute(images, targets)


    @register_method("zz-die", overwrite=True)
    class Die(_Base):
        """Exits its process every time, counting attempts in the marker file."""

        def attribute(self, images, targets, **kw):
            with open(self.marker, "a") as f:
                f.write("x")
            os._exit(3)
''')


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "faulty_plugins.py"
    path.write_text(FAULTY_PLUGINS)
    # other tests list the methods: the plugins are gone after this module
    with restored("method", "zz-sleep", "zz-deaf", "zz-die-once", "zz-die"):
        load_plugins([str(path)], env=False)
        yield path


def _cfg(out, methods, n=4, shard=4, **kw):
    return RunConfig(
        datasets=parse_specs(TINY),
        methods=parse_specs(methods),
        n_images=n,
        shard_size=shard,
        batch_size=4,
        out=str(out),
        metrics=["deletion", "pointing_game"],
        settings={"n_steps": 8},
        **kw,
    )


# -- 1. per-cell time limit ----------------------------------------------------------------------
def test_time_limit_interrupts_sleep_and_costs_nothing_otherwise():
    t0 = time.perf_counter()
    with pytest.raises(CellTimeout, match=r"timed out after 0.2 s"):
        with time_limit(0.2):
            time.sleep(20)
    assert time.perf_counter() - t0 < 2
    with time_limit(5):  # a block that ends in time: nothing fires later
        pass
    time.sleep(0.05)
    with time_limit(None), time_limit(0):
        pass


def test_hanging_cell_times_out_and_the_run_goes_on(tiny_scenes, faulty, tmp_path):
    t0 = time.perf_counter()
    summary = run(_cfg(tmp_path, "zz-sleep,center", cell_timeout=1.5), progress=False)
    assert time.perf_counter() - t0 < 30
    assert summary.ok == 1 and summary.failed == [(TINY_LABEL, "zz-sleep", "timed out after 1.5 s")]
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    assert board.loc["center", "status"] == "ok" and board.loc["zz-sleep", "status"] != "ok"
    # the limit is no part of a cell's key: the same config with another limit resumes
    again = run(_cfg(tmp_path, "center"), progress=False)
    assert again.skipped == 1 and again.ok == 0


def test_cell_timeout_in_config_and_not_in_cell_keys(tmp_path):
    base = f'datasets = ["{TINY}"]\nmethods = ["center"]\n'
    top = parse_config(base + "cell_timeout = 90\n")
    nested = parse_config(base + "[settings]\ncell_timeout = 45\nn_steps = 8\n")
    assert top.cell_timeout == 90.0 and nested.cell_timeout == 45.0
    assert nested.settings == {"n_steps": 8} and parse_config(base).cell_timeout == 3600.0
    keyed = RunConfig(
        datasets=parse_specs(TINY), methods=parse_specs("center"), settings={"cell_timeout": 5}
    )
    plain = RunConfig(datasets=parse_specs(TINY), methods=parse_specs("center"))
    assert [c.key for c in plan_cells(keyed)] == [c.key for c in plan_cells(plain)]


def test_cell_timeout_flag_on_the_command_line(tiny_scenes, faulty, tmp_path, capsys):
    from nicebench.cli import main

    argv = [
        "run",
        "--datasets",
        TINY,
        "--methods",
        "zz-sleep,center",
        "--metrics",
        "deletion",
        "--n-images",
        "4",
        "--out",
        str(tmp_path),
        "-q",
        "--no-report",
    ]
    t0 = time.perf_counter()
    assert main([*argv, "--cell-timeout", "1"]) == 1
    assert time.perf_counter() - t0 < 30
    out = capsys.readouterr().out
    assert "1 cells computed" in out and "FAILED" in out and "zz-sleep: timed out after 1 s" in out
    assert main([*argv, "--cell-timeout", "-1"]) == 2
    assert "--cell-timeout must be a number of seconds >= 0" in capsys.readouterr().err


# -- 2. Ray: workers that die or hang ------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray(faulty, session_cache):
    ray = pytest.importorskip("ray")
    env = {"NICEBENCH_CACHE": str(session_cache), "NICEBENCH_PLUGINS": str(faulty)}
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    yield ray
    ray.shutdown()


def test_ray_worker_killed_once_is_retried_and_bit_identical_to_local(
    tiny_scenes, local_ray, tmp_path
):
    marker = tmp_path / "died-once"
    methods = f"zz-die-once:marker={marker},gradcam"
    remote = run(_cfg(tmp_path / "ray", methods, n=8, executor="ray"), progress=False)
    assert marker.read_text() == "died"  # the first attempt was killed
    assert remote.ok == 4 and not remote.failed
    local = run(_cfg(tmp_path / "local", methods, n=8), progress=False)  # marker there: no kill
    assert local.ok == 4
    for name in ("per_image.csv", "leaderboard.csv"):
        a = pd.read_csv(tmp_path / "local" / name)
        b = pd.read_csv(tmp_path / "ray" / name)
        timing = [c for c in a.columns if c.startswith(("explain_ms", "peak_mem", "seconds"))]
        pd.testing.assert_frame_equal(
            a.drop(columns=timing), b.drop(columns=timing), check_exact=True
        )


def test_ray_worker_that_keeps_dying_fails_its_cell_with_the_exit_reason(
    tiny_scenes, local_ray, tmp_path
):
    marker = tmp_path / "attempts"
    summary = run(_cfg(tmp_path, f"zz-die:marker={marker},center", executor="ray"), progress=False)
    assert marker.read_text() == "xx"  # tried twice
    assert summary.ok == 1 and len(summary.failed) == 1
    error = summary.failed[0][2]
    assert error.startswith("worker died twice (retried once): WorkerCrashedError"), error
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        status = dict(conn.execute("SELECT method_name, status FROM cells"))
    assert status == {"zz-die": "failed", "center": "ok"}


def test_ray_cells_time_out_in_the_worker_or_are_stopped_by_the_driver(
    tiny_scenes, local_ray, tmp_path
):
    t0 = time.perf_counter()
    summary = run(
        _cfg(tmp_path, "zz-sleep,zz-deaf,center", executor="ray", cell_timeout=20), progress=False
    )
    assert time.perf_counter() - t0 < 120
    errors = {method: error for _, method, error in summary.failed}
    # a sleeping cell times out in its worker where the alarm reaches it, else the driver stops
    # the worker once the grace period has passed; a cell that blocks the alarm is always stopped
    # by the driver
    assert summary.ok == 1 and set(errors) == {"zz-sleep", "zz-deaf"}
    assert all(e.startswith("timed out after 20 s") for e in errors.values()), errors
    assert errors["zz-deaf"].startswith("timed out after 20 s (the worker was stopped"), errors


# -- 3. bad input: named with its fix, nothing written -------------------------------------------
@pytest.mark.parametrize(
    "body, line, says",
    [
        ('n_images = "ten"', 3, "n_images must be a positive integer, not 'ten'"),
        ("n_image = 5", 3, "unknown key 'n_image'; did you mean 'n_images'?"),
        ("batch_size = 0", 3, "batch_size must be a positive integer"),
        ('executor = "dask"', 3, 'executor must be "local" or "ray"'),
        ("cell_timeout = true", 3, "cell_timeout must be a number of seconds"),
        (
            "[settings]\nn_steps = 8\ncell_timeout = -1",
            5,
            "cell_timeout must be a number of seconds",
        ),
        ("metrics = [1, 2]", 3, "metrics must be a list of metric names"),
        ("[[models]]\nseed = 1", 3, "a [[models]] table needs a name"),
        ("settings = 5", 3, "settings must be a table"),
    ],
)
def test_config_errors_name_line_and_key(tmp_path, body, line, says):
    from nicebench.cli import main

    path = tmp_path / "bad.toml"
    out = tmp_path / "out"
    path.write_text(
        f'datasets = ["{TINY}"]\nmethods = ["center"]\n{body}\nout = "{out}"\n'
        if not body.startswith("[")
        else f'datasets = ["{TINY}"]\nmethods = ["center"]\nout = "{out}"\n{body}\n'
    )
    if body.startswith("["):
        line += 1
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert f"{path}, line {line}: " in str(err.value) and says in str(err.value), str(err.value)
    assert main(["run", str(path), "-q", "--no-report"]) == 2
    assert not out.exists()


def _image_tree(root, n=3):
    from PIL import Image

    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 30), (40 * i, 90, 200)).save(root / cls / f"{i}.jpg")
    return root


def test_imagefolder_names_a_bad_file_or_skips_and_counts_bad_files(tmp_path):
    import nicebench as nb

    root = _image_tree(tmp_path / "imgs")
    (root / "cat" / "notes.png").write_text("not an image at all")  # an image name, no image
    good = (root / "dog" / "0.jpg").read_bytes()
    (root / "dog" / "9.jpg").write_bytes(good[:-2])  # its end cut off
    with pytest.raises(ValueError, match=r"cat/notes.png is not a readable image .*skip_bad=true"):
        nb.load_dataset("imagefolder", root=str(root), size=32)
    with pytest.warns(UserWarning, match="skipped 2 unreadable file"):
        ds = nb.load_dataset("imagefolder", root=str(root), size=32, skip_bad=True)
    assert len(ds) == 6 and sorted(p.rsplit("/", 1)[1] for p, _ in ds.skipped) == [
        "9.jpg",
        "notes.png",
    ]
    assert ds.identity()["skipped"] == 2 and ds[5][0].shape == (3, 32, 32)
    # a truncated file passes the header check; loading it names the file
    (root / "cat" / "notes.png").unlink()
    ds = nb.load_dataset("imagefolder", root=str(root), size=32)
    with pytest.raises(ValueError, match=r"dog/9.jpg can't be decoded"):
        ds[len(ds) - 1]


def test_weights_file_that_is_no_state_dict_stops_the_run_before_any_write(tmp_path):
    import torch

    from nicebench.cli import main

    bad = tmp_path / "model.pt"
    for content, says in (
        (lambda p: torch.save([torch.zeros(2)], p), "holds a list, not a state dict"),
        (lambda p: p.write_bytes(b"garbage"), "is not a state dict that torch.load"),
        (lambda p: torch.save({}, p), "holds a dict, not a state dict"),
    ):
        content(bad)
        out = tmp_path / "out"
        cfg = _cfg(out, "center")
        cfg.models = parse_specs(f"scenecnn:weights={bad}")
        with pytest.raises(ValueError, match=f"model weights file {bad} {says}.*torch.save"):
            run(cfg, progress=False)
        assert not out.exists()
    code = main(
        [
            "run",
            "--datasets",
            TINY,
            "--methods",
            "center",
            "--models",
            f"scenecnn:weights={bad}",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 2 and not out.exists()


def test_unwritable_run_directory_is_named(tiny_scenes, tmp_path, capsys):
    from nicebench.cli import main

    (tmp_path / "file").write_text("a file where the run directory would go")
    out = tmp_path / "file" / "run"
    with pytest.raises(
        StoreError, match=rf"run directory {out} is not usable: can't write .*--out"
    ):
        run(_cfg(out, "center"), progress=False)
    assert (
        main(
            [
                "run",
                "--datasets",
                TINY,
                "--methods",
                "center",
                "--metrics",
                "deletion",
                "--n-images",
                "2",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 2
    )
    assert "is not usable" in capsys.readouterr().err


def test_full_disk_while_writing_the_store_loses_nothing(tiny_scenes, tmp_path, monkeypatch):
    """SQLite's own "database or disk is full" (a page cap) after the first cell: the run stops
    naming the store and what to free; the first cell stays; a rerun finishes with equal tables."""
    methods = "center,edges,random"
    run(_cfg(tmp_path / "whole", methods), progress=False)
    write = RunStore.write
    calls = []

    def write_then_fill(self, res):
        write(self, res)
        calls.append(res.key)
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full

    monkeypatch.setattr(RunStore, "write", write_then_fill)
    out = tmp_path / "full"
    with pytest.raises(
        StoreError,
        match=rf"no space left on the disk writing {out}/store.sqlite "
        r"\(\d+ MiB free there\): free space",
    ):
        run(_cfg(out, methods), progress=False)
    monkeypatch.setattr(RunStore, "write", write)
    with sqlite3.connect(out / "store.sqlite") as conn:
        assert [k for (k,) in conn.execute("SELECT key FROM cells")] == calls[:1]
    again = run(_cfg(out, methods), progress=False)
    assert again.skipped == 1 and again.ok == 2
    for name in ("leaderboard.csv", "per_image.csv"):
        a, b = pd.read_csv(tmp_path / "whole" / name), pd.read_csv(out / name)
        timing = [c for c in a.columns if c.startswith(("explain_ms", "peak_mem"))]
        pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))


def test_full_disk_while_writing_the_tables_keeps_the_old_ones(tiny_scenes, tmp_path, monkeypatch):
    run(_cfg(tmp_path, "center"), progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.csv")}
    to_csv = pd.DataFrame.to_csv

    def full(self, path=None, *args, **kw):
        if str(path).endswith("per_image.csv"):
            with open(path, "w") as f:
                f.write("dataset,meth")  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return to_csv(self, path, *args, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(
        StoreError,
        match=rf"no space left on the disk writing {tmp_path}/per_image"
        r".csv .*previous tables are unchanged",
    ):
        run(_cfg(tmp_path, "center,edges"), progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.csv")} == before
    assert not list(tmp_path.glob(".tables-*"))


# -- 4. nicebench verify -------------------------------------------------------------------------
def _verify_cli(run_dir, *args):
    import contextlib
    import io

    from nicebench.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["verify", str(run_dir), *args])
    return code, buf.getvalue()


@pytest.fixture
def verified_run(tiny_scenes, tmp_path):
    out = tmp_path / "run"
    assert run(_cfg(out, "center,gradcam", n=8), progress=False).ok == 4
    return out


def test_verify_passes_on_a_fresh_run_and_finds_a_changed_value(verified_run):
    code, text = _verify_cli(verified_run, "--sample", "4")
    assert code == 0, text
    assert "integrity ok" in text and "4 of 4 cells match" in text and text.count("identical") == 4
    with sqlite3.connect(verified_run / "store.sqlite") as conn:  # one stored score changed
        key = conn.execute("SELECT key FROM cells WHERE method = 'gradcam' LIMIT 1").fetchone()[0]
        conn.execute(
            "UPDATE image_values SET value = value + 1e-12 WHERE cell_key = ? "
            "AND metric = 'deletion_auc' AND image_index = 1",
            (key,),
        )
    code, text = _verify_cli(verified_run, "--sample", "4")
    assert (
        code == 1
        and f"DIFFERS   {TINY_LABEL} · gradcam · shard 0 [{key}]: deletion_auc of image 1" in text
        and text.strip().endswith("verify: FAILED")
    ), text


def test_verify_reports_an_altered_spec_other_code_and_a_damaged_store(
    tiny_scenes, verified_run, tmp_path, monkeypatch
):
    from nicebench import runner

    with sqlite3.connect(verified_run / "store.sqlite") as conn:
        key, spec = conn.execute("SELECT key, spec FROM cells WHERE method = 'center'").fetchone()
        spec = spec.replace('"n_steps": 8', '"n_steps": 9')
        conn.execute("UPDATE cells SET spec = ? WHERE key = ?", (spec, key))
    code, text = _verify_cli(verified_run, "--sample", "0")
    assert code == 1 and f"KEY MISMATCH {TINY_LABEL} · center · shard 0 [{key}]" in text, text

    other = tmp_path / "other"
    monkeypatch.setattr(runner, "code_version", lambda: "0123456789ab")
    run(_cfg(other, "center"), progress=False)
    monkeypatch.undo()
    code, text = _verify_cli(other, "--sample", "1")
    assert code == 1 and "computed by other code" in text and "(code 0123456789ab)" in text
    assert "identical" in text  # the installed code still gives the same values

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "store.sqlite").write_bytes(
        b"\0" * 100 + (verified_run / "store.sqlite").read_bytes()[100:]
    )
    code, text = _verify_cli(damaged)
    assert code == 1 and "DAMAGED" in text


def test_verify_rebuilds_cells_of_stores_written_before_specs_held_them(tiny_scenes, tmp_path):
    """A store whose specs lack the exact ``cell`` entry: specs parsed from their strings (tuple
    parameters included), the reference codec found in the run config."""
    import json

    from nicebench.config import PluginSpec
    from nicebench.verify import spec_from_str

    jpeg = PluginSpec.make("jpeg", {"qualities": [30, 75], "subsampling": "4:2:0"})
    assert spec_from_str(str(jpeg)) == jpeg
    tv = PluginSpec.make("torchvision:resnet50", {"weights": "/m/r.pth", "num_classes": 10})
    assert spec_from_str(str(tv)) == tv
    out = tmp_path / "old"
    cfg = _cfg(out, "center")
    cfg.codecs, cfg.metrics = [jpeg], ["deletion", "compression"]
    assert run(cfg, progress=False).ok == 2
    with sqlite3.connect(out / "store.sqlite") as conn:
        for key, spec in conn.execute("SELECT key, spec FROM cells").fetchall():
            spec = json.loads(spec)
            spec.pop("cell")
            conn.execute("UPDATE cells SET spec = ? WHERE key = ?", (json.dumps(spec), key))
    code, text = _verify_cli(out, "--sample", "2")
    assert code == 0 and text.count("identical") == 2, text


def test_stored_arrays_never_unpickle():
    import io

    import numpy as np

    from nicebench.store import unpack

    buf = io.BytesIO()
    np.save(buf, np.array([{"run": "os.system"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        unpack(buf.getvalue())


def test_verify_audits_the_latest_run_not_earlier_runs_in_the_directory(
    tiny_scenes, tmp_path, monkeypatch
):
    """A run directory keeps the cells of earlier runs (by other code, say) beside its latest
    run's: verify audits the latest run's cells (what the tables show) and names the rest as
    history, so a directory rerun after a code change passes; one whose latest run has a cell by
    other code still fails."""
    from nicebench import runner

    out = tmp_path / "run"
    monkeypatch.setattr(runner, "code_version", lambda: "0123456789ab")
    run(_cfg(out, "center"), progress=False)  # an earlier run by other code
    monkeypatch.undo()
    run(_cfg(out, "edges"), progress=False)  # the latest run, by the installed code
    code, text = _verify_cli(out, "--sample", "5")
    assert code == 0, text
    assert (
        "1 cells of earlier runs in this directory, not in its latest run, are not audited" in text
        and "computed by other code" not in text
        and text.count("identical") == 1
    )
    monkeypatch.setattr(runner, "code_version", lambda: "0123456789ab")
    run(_cfg(out, "center"), progress=False)  # the latest run is now the other code's
    monkeypatch.undo()
    code, text = _verify_cli(out, "--sample", "5")
    assert code == 1 and "computed by other code" in text, text
