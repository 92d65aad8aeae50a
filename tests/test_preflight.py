"""A run's keys and plugin parameters are checked before any dataset, model or training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

import nicebench as nb
import nicebench.runner
from nicebench.cli import main
from nicebench.config import ConfigError, RunConfig, load_config, parse_specs
from nicebench.models.loading import RECIPE_KEYS
from nicebench.params import Parameter, check_params, constructor_parameters
from nicebench.preflight import MODEL_PARAMS, check_run
from nicebench.runner import default_config, plan_cells

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def no_work(monkeypatch):
    """Every dataset or model load of the runner fails the test: the check must come first."""

    def never(*args, **kwargs):
        raise AssertionError("a dataset or model was loaded before the run was checked")

    monkeypatch.setattr(nicebench.runner, "load_run_dataset", never)
    monkeypatch.setattr(nicebench.runner, "load_model", never)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--methods", "gradcam:foo=1"], ["--methods", "'gradcam'", "'foo'", "layer=None"]),
        (["--methods", "rise:n_mask=10"], ["'rise'", "'n_mask'", "Did you mean 'n_masks'"]),
        (["--methods", "rise:n_masks=abc"], ["'rise'", "n_masks='abc'", "an integer"]),
        (["--n-images", "-3"], ["--n-images must be a positive integer, not -3"]),
        (["--batch-size", "0"], ["--batch-size must be a positive integer"]),
        (["--datasets", "scenes:sise=32"], ["dataset 'scenes'", "Did you mean 'size'"]),
        (["--models", "default:epoch=2"], ["model 'default'", "Did you mean 'epochs'"]),
        (["--codecs", "jpeg:qualities=10"], ["codec 'jpeg'", "a list of integers"]),
        (["--codecs", "jpeg:subsampling=none"], ["subsampling=None", "a string or an integer"]),
    ],
)
def test_a_bad_value_on_the_command_line_stops_the_run_first(argv, says, no_work, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *argv, "--out", str(out), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in says:
        assert text in err, err
    assert not out.exists()  # no store, no lock: nothing started


def test_the_command_exits_with_a_message_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nicebench.cli",
            "run",
            "--methods",
            "rise:n_masks=abc",
            "--out",
            str(tmp_path / "run"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: --methods: method 'rise': parameter n_masks='abc' must be" in proc.stderr


def test_a_config_file_error_names_the_file_and_line(no_work, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        'datasets = ["scenes:size=32"]\nmethods = [\n  "gradcam",\n'
        '  "rise:n_masks=abc",\n]\n[[codecs]]\nname = "jpeg"\nqualities = [10, 50]\n'
    )
    with pytest.raises(ConfigError, match=rf"{path}, line 4: method 'rise': parameter n_masks="):
        plan_cells(load_config(path))
    path.write_text('datasets = ["scenes:size=32"]\n[[codecs]]\nname = "jpeg"\nquality = 50\n')
    with pytest.raises(
        ConfigError,
        match=rf"{path}, line 3: codec 'jpeg' has no parameter "
        "'quality'. Did you mean 'qualities'",
    ):
        plan_cells(load_config(path))


def test_an_api_override_is_checked_without_the_packaged_files_line():
    with pytest.raises(ConfigError, match=r"^n_images must be a positive integer, not -3"):
        check_run(default_config(n_images=-3))
    with pytest.raises(ConfigError, match="shard_size must be a positive integer"):
        check_run(RunConfig(shard_size=2.5))


def test_every_shipped_config_passes_the_check():
    check_run(default_config())
    for path in sorted(CONFIGS.glob("*.toml")):
        check_run(load_config(path))


def test_good_values_of_each_kind_pass():
    cfg = RunConfig(
        datasets=parse_specs("scenes:size=32,n=8,split=val"),
        models=parse_specs(["default:seed=1,lr=0.01,flip=false", "torchvision:resnet18:weights=w"]),
        methods=parse_specs(
            "nice:lam=auto,codec=jpeg,nice:lam=5,rise:batch_size=none,"
            "extremal:areas=0.1+0.2,nice-opt:cell=8"
        ),
        codecs=parse_specs(["jpeg:subsampling=4:4:4"])
        + [nb.config.PluginSpec.make("webp", {"qualities": [10, 50]})],
    )
    check_run(cfg)


def test_types_follow_the_annotation_else_the_default():
    def ok(hint, value, default=None):
        return Parameter("x", hint, default).accepts(value)

    assert ok(int, 3) and not ok(int, 3.0) and not ok(int, True) and not ok(int, "3")
    assert ok(float, 3) and ok(float, 0.5) and not ok(float, False)
    assert ok(bool, False) and not ok(bool, 0)
    assert ok(int | None, None) and ok(str | float, "auto") and not ok(str | float, None)
    assert ok(Literal["a", "b"], "a") and not ok(Literal["a", "b"], "c")
    assert ok(tuple[int, ...], (1, 2)) and not ok(tuple[int, ...], (1, "x"))
    assert not ok(tuple[int, ...], 1) and ok(tuple[int, int], [1, 2])
    unannotated = Parameter("x", default=8)
    assert unannotated.accepts(4) and not unannotated.accepts("4")
    assert Parameter("x", default=None).accepts("anything")


def test_kwargs_that_no_base_names_skip_the_name_check_only():
    class Base:
        def __init__(self, *, level: int = 1):
            pass

    class Closed(Base):  # passes **kwargs on to a base that names them all
        def __init__(self, *, mode: str = "a", **kwargs):
            super().__init__(**kwargs)

    class Open:
        def __init__(self, *, level: int = 1, **kwargs):
            pass

    params, open_names = constructor_parameters(Closed)
    assert sorted(params) == ["level", "mode"] and not open_names
    with pytest.raises(ConfigError, match="'levl'. Did you mean 'level'"):
        check_params("codec", "closed", {"levl": 2}, params, open_names)
    params, open_names = constructor_parameters(Open)
    assert open_names
    check_params("codec", "open", {"anything": 2}, params, open_names)
    with pytest.raises(ConfigError, match="level='2' must be an integer"):
        check_params("codec", "open", {"level": "2"}, params, open_names)


def test_create_method_names_close_matches():
    with pytest.raises(nb.MethodError, match="'n_mask'. Did you mean 'n_masks'"):
        nb.create_method("rise", None, n_mask=10)


def test_model_parameters_are_the_loaders():
    assert set(MODEL_PARAMS) == {"seed", "weights", *RECIPE_KEYS}
