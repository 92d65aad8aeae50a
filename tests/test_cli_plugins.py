"""`nicebench list` on undocumented and broken plugins; local plugins through --plugins and
NICEBENCH_PLUGINS."""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest
import torch

from nicebench import Method, plugins, register_method
from nicebench.cli import main
from nicebench.plugins import PLUGINS_ENV, load_plugins
from nicebench.registry import METHODS, Registry
from nicebench.testing import restored

LOCAL_PLUGIN = '''
import torch
from nicebench import Method, register_method


@register_method("{name}")
class Flat(Method):
    """A flat map (a local plugin loaded from a file)."""

    uses_model = False

    def attribute(self, images, targets, **kw):
        return torch.ones_like(images[:, :1])
'''


@pytest.fixture
def forget():
    """``forget(name)`` before a test registers ``name``: the method registry is as it was after
    the test."""
    with ExitStack() as stack:
        yield lambda name: stack.enter_context(restored(METHODS, name))


def test_list_survives_missing_and_empty_docstrings_and_shows_failures(capsys, monkeypatch, forget):
    for name, doc in (("zz-no-doc", None), ("zz-empty-doc", ""), ("zz-blank-doc", "\n   \n")):
        forget(name)
        register_method(name)(type(name, (Method,), {"__doc__": doc}))
    monkeypatch.setitem(METHODS.load_errors, "zz-broken", "entry point 'zz-broken': ImportError: x")
    assert main(["list", "methods", "zz-*"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "methods:",
        "  zz-blank-doc",
        "  zz-empty-doc",
        "  zz-no-doc",
        "failed to load:",
        "  zz-broken              entry point 'zz-broken': ImportError: x",
    ]


def test_plugins_option_loads_a_file_before_listing_and_running(tmp_path, capsys, forget):
    path = tmp_path / "my_plugin.py"
    path.write_text(LOCAL_PLUGIN.format(name="zz-flat-file"))
    forget("zz-flat-file")
    assert main(["--plugins", str(path), "list", "methods", "zz-flat*"]) == 0
    assert "zz-flat-file           A flat map" in capsys.readouterr().out
    assert main(["list", "--plugins", str(path), "methods", "zz-flat*"]) == 0  # loaded once
    assert "zz-flat-file" in capsys.readouterr().out
    m = METHODS.get("zz-flat-file")(None)
    assert torch.equal(m.explain(torch.rand(2, 3, 8, 8), 0), torch.ones(2, 1, 8, 8))


def test_plugins_from_the_environment_and_comma_separated(tmp_path, monkeypatch, forget):
    paths = []
    for name in ("zz-env-a", "zz-env-b", "zz-env-c"):
        paths.append(tmp_path / f"{name.replace('-', '_')}.py")
        paths[-1].write_text(LOCAL_PLUGIN.format(name=name))
        forget(name)
    monkeypatch.setenv(PLUGINS_ENV, f"{paths[0]}{os.pathsep}{paths[1]}")
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins(["zz_env_c"])  # a dotted module name
    assert {"zz-env-a", "zz-env-b", "zz-env-c"} <= set(METHODS.names("zz-env-*"))


def test_a_failing_plugin_is_a_clear_error(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("import no_such_dependency_of_a_plugin\n")
    assert main(["--plugins", str(bad), "list"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "ModuleNotFoundError" in err and "no_such_dependency" in err
    assert main(["list", "--plugins", "no_such_plugin_module_zz"]) == 2
    assert "plugin module 'no_such_plugin_module_zz' failed to load" in capsys.readouterr().err
    assert main(["--plugins", str(tmp_path / "missing.py"), "list"]) == 2
    assert f"plugin file {tmp_path / 'missing.py'} does not exist" in capsys.readouterr().err
    monkeypatch.setenv(PLUGINS_ENV, str(bad))
    assert main(["list", "metrics"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_a_failing_environment_plugin_is_recorded_by_discovery(tmp_path, monkeypatch):
    bad = tmp_path / "bad_env_plugin.py"
    bad.write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.setenv(PLUGINS_ENV, str(bad))
    monkeypatch.setattr(plugins, "_ENV_LOADED", False)
    try:
        assert Registry("thing", None, None).names() == []  # discovery goes on
        assert str(bad) in plugins.PLUGIN_ERRORS[str(bad)]
        assert "RuntimeError: broken at import" in plugins.PLUGIN_ERRORS[str(bad)]
    finally:
        plugins.PLUGIN_ERRORS.pop(str(bad), None)
