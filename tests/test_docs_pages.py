"""The generated docs pages (docsgen/): the metric catalogue reads the registry (a plugin metric
appears), the CLI reference lists every command and option, the speed page every figure."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from nicebench.metric_spec import MetricSpec, Setting
from nicebench.testing import registered

DOCSGEN = Path(__file__).resolve().parents[1] / "docsgen"


def _load(name: str):
    sys.path.insert(0, str(DOCSGEN))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCSGEN))


def test_catalogue_lists_every_metric_and_a_plugin_one():
    catalogue = _load("metric_catalogue")
    spec = MetricSpec(
        "zz_peak",
        lambda c: c.saliency.flatten(1).amax(1),
        "zz_peak_col",
        higher_is_better=True,
        category="complexity",
        checked_against="none",
        settings=(Setting("zz_top", 3, "pixels averaged"),),
        description="largest value of the map",
    )
    with registered("metric", "zz_peak", spec):
        page = catalogue.catalogue_page()
    assert "## zz_peak" in page and "| `zz_top` | `3` | pixels averaged |" in page
    section = page.split("## zz_peak\n")[1].split("\n## ")[0]
    assert f"- **Plugin:** registered by `{spec.fn.__module__}`" in section
    for spec in catalogue.registered_metrics():
        assert f"## {spec.name}\n" in page and spec.checked_against, spec.name
    assert "| valid | range 0.10 → 0.88" in page  # deletion on fashion-mnist, results/validity.csv


def test_cli_reference_lists_every_command_and_option():
    from nicebench.cli import build_parser

    page = _load("cli_reference").cli_page()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"## nicebench {name}\n" in page
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in page, (name, flag)


def test_speed_page_has_every_figure_and_its_command(tmp_path):
    speed = _load("speed")
    bench = json.loads(speed.BENCH_JSON.read_text())
    page = speed.speed_page(bench)
    for b in speed.load_run_all().BENCHES:
        if b.name in bench["results"]:
            assert f"`python bench/{b.name}.py" in page
    assert f"commit `{bench['machine']['commit']}`" in page
    with pytest.raises(KeyError):
        speed.speed_page({"results": {}})  # no machine: refused, not a page without one
