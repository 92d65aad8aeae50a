"""The tests run against the nicebench installed for this run, never the bare source folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nicebench._provenance import check_installed_under, import_origins

CHECKOUT = Path(__file__).resolve().parents[1]


def test_plugin_packages_come_from_the_same_installation():
    origins = import_origins()
    core = origins["nicebench"]
    for name, folder in (("nicebench.methods", "methods"), ("nicebench.datasets", "datasets")):
        # installed: site-packages/nicebench/methods; editable: the checkout's methods/
        assert origins[name] in (core / folder, core.parent / folder), (name, origins[name], core)


@pytest.mark.skipif(
    "NICEBENCH_EXPECT_PREFIX" not in os.environ,
    reason="tox sets NICEBENCH_EXPECT_PREFIX to the environment it built",
)
def test_imports_come_from_this_runs_environment():
    prefix = Path(os.environ["NICEBENCH_EXPECT_PREFIX"]).resolve()
    assert Path(sys.prefix).resolve() == prefix, "pytest runs in another Python than tox built"
    origins = check_installed_under(prefix)
    assert not origins["nicebench"].is_relative_to(CHECKOUT / "nicebench"), (
        origins
    )  # not the source


def test_guard_rejects_a_foreign_prefix(tmp_path):
    with pytest.raises(ImportError, match="must import the nicebench installed in"):
        check_installed_under(tmp_path)


def test_guard_names_the_fix_when_the_source_folder_shadows_the_package(tmp_path):
    # A copy of the bare source folder, first on sys.path, in a fresh interpreter.
    import shutil
    import subprocess

    shutil.copytree(
        CHECKOUT / "nicebench", tmp_path / "nicebench", ignore=shutil.ignore_patterns("__pycache__")
    )
    # An editable install maps nicebench.methods by full name whatever the parent; drop its finder
    # so the subprocess sees what a plain installation plus a shadowing source folder gives.
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if '__editable__' not in getattr(f, '__module__', '') + repr(f)]; "
        "from nicebench._provenance import import_origins; import_origins()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "nicebench.methods cannot be imported" in proc.stderr
    assert "pip install -e ." in proc.stderr


def test_the_shipped_weights_are_installed_and_listed_as_package_data():
    """Every file of the source tree's nicebench/weights is matched by pyproject.toml's
    package-data (or a built wheel lacks it), and the installed package holds every file its
    manifest lists, with its size."""
    import fnmatch
    import json

    import tomllib

    import nicebench

    patterns = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["nicebench"]
    source = CHECKOUT / "nicebench"
    files = [
        p.relative_to(source).as_posix() for p in (source / "weights").rglob("*") if p.is_file()
    ]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files
    installed = Path(nicebench.__file__).parent / "weights"
    manifest = json.loads((installed / "MANIFEST.json").read_text())
    for entry in manifest["models"]:
        pt = installed / entry["kind"] / f"{entry['key']}.pt"
        assert pt.stat().st_size == entry["bytes"] and pt.with_suffix(".json").is_file(), pt
