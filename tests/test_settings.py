"""Declared settings: every ``[settings]`` key a metric reads is declared once, with its default
and meaning; a run naming an undeclared key, or a value of the wrong type, is refused with the
line and the close matches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nicebench
from nicebench.cli import main
from nicebench.config import check_settings, parse_config
from nicebench.metric_spec import RUN_SETTINGS, MetricSpec, Setting, SettingError, catalogue
from nicebench.metrics import get_metric_spec
from nicebench.metrics import settings as S
from nicebench.registry import METRICS

PACKAGE = Path(nicebench.__file__).parent


def test_a_setting_reads_its_default_or_the_runs_checked_value():
    assert S.SANITY_IMAGES.get({}) == 32
    assert S.SANITY_IMAGES.get({"sanity_images": 8}) == 8
    assert S.SENSITIVITY_RADIUS.get({"sensitivity_radius": 1}) == 1.0
    assert S.KEEPS.get({"keeps": [0.2]}) == (0.2,)
    with pytest.raises(SettingError, match="sanity_images = 'many': expected an integer"):
        S.SANITY_IMAGES.get({"sanity_images": "many"})
    with pytest.raises(SettingError, match="sanity_images = 2.5"):
        S.SANITY_IMAGES.get({"sanity_images": 2.5})
    with pytest.raises(SettingError, match="must be one of 'pred', 'label'"):
        S.TARGET.get({"target": "labels"})


def test_an_unknown_setting_names_its_line_and_the_close_matches():
    text = 'metrics = ["sanity_spearman"]\n\n[settings]\nsanity_images = 8\nrefit_epoch = 2\n'
    with pytest.raises(SettingError) as err:
        parse_config(text, "study.toml")
    message = str(err.value)
    assert message.startswith("study.toml, line 5: unknown setting 'refit_epoch'")
    assert "did you mean 'refit_epochs'" in message
    # a key another metric declares is unknown to this run's metrics
    with pytest.raises(SettingError, match="unknown setting 'keeps'"):
        parse_config('metrics = ["deletion"]\n[settings]\nkeeps = [0.1]\n', "c.toml")
    with pytest.raises(SettingError, match="c.toml, line 3: setting quality = 'high'"):
        parse_config('metrics = ["compression"]\n[settings]\nquality = "high"\n', "c.toml")
    cfg = parse_config('metrics = ["compression"]\n[settings]\nkeeps = [0.1]\nseed = 3\n', "c.toml")
    assert cfg.settings == {"keeps": [0.1], "seed": 3}


def test_the_command_line_refuses_an_unknown_setting_before_any_work(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('metrics = ["deletion"]\n[settings]\nn_step = 8\n')
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "line 3: unknown setting 'n_step'; did you mean 'n_steps'" in err
    assert not (tmp_path / "run" / "store.sqlite").exists()


def test_every_registered_metric_declares_what_it_reads():
    """Each built-in metric's settings are Setting objects, one object per name across metrics
    (declared once), and check_settings accepts each at its default."""
    by_name: dict[str, Setting] = {s.name: s for s in RUN_SETTINGS}
    for name in METRICS.names():
        spec = METRICS.get(name)
        assert isinstance(spec, MetricSpec)
        for setting in spec.settings:
            assert by_name.setdefault(setting.name, setting) is setting, setting.name
    check_settings(
        {n: s.default for n, s in by_name.items() if s.default is not None}, METRICS.names()
    )


def test_no_module_reads_a_setting_with_an_inline_default():
    """A default is written once, in its Setting: no ``settings.get("key", default)`` in the
    package or the built-in plugins."""
    pattern = re.compile(r"settings\.get\(\s*[\"'][a-z_]+[\"']\s*,\s*([\"'\d(\[-]|True|False)")
    found = [
        f"{path.relative_to(PACKAGE)}:{i}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_notes_and_listing_come_from_the_declaration(capsys):
    spec = get_metric_spec("insertion")
    assert spec.note({}) == ""  # defaults only: nothing to note
    assert spec.note({"insertion_start": "rise"}) == "insertion_start 'rise'"
    row = {r["name"]: r for r in catalogue([spec], {"seed": 1})}["insertion"]
    assert {s["name"] for s in row["settings"]} == {"n_steps", "seed", "target", "insertion_start"}
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "setting insertion_start = 'calibrated': insertion's start image" in out
    assert "setting audit_images = 16" in out  # the run's own


def test_a_plugin_metric_declares_its_settings(tmp_path):
    """The README's example: a function metric with a declared setting; a run may set it."""
    from nicebench import Setting, register_metric
    from nicebench.testing import restored

    top = Setting("peak_top", 1, "pixels averaged at the top of the map")
    with restored("metric", "peak_mean"):

        @register_metric("peak_mean", higher_is_better=True, settings=(top,))
        def peak_mean(ctx):
            return ctx.saliency.flatten(1).topk(top.get(ctx.settings), 1).values.mean(1)

        assert get_metric_spec("peak_mean").settings == (top,)
        check_settings({"peak_top": 4}, ["peak_mean"])
        with pytest.raises(SettingError, match="did you mean 'peak_top'"):
            check_settings({"peak_tops": 4}, ["peak_mean"])
