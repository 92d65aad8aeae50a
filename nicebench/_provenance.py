"""Where the imported nicebench comes from: the guard the test suite runs before anything else."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PLUGIN_PACKAGES = ("nicebench.methods", "nicebench.datasets")


def import_origins() -> dict[str, Path]:
    """The folder each of ``nicebench`` and its mapped plugin packages is imported from.

    Raises ``ImportError`` with the fix when a plugin package is missing, which happens when the
    bare source folder ``nicebench/`` shadows the installed package (``methods/`` and
    ``datasets/`` become ``nicebench.methods`` / ``nicebench.datasets`` only through setuptools'
    ``package-dir`` mapping, i.e. in an installation).
    """
    import nicebench  # at call time: the guard reports what is importable now, from wherever

    origins = {"nicebench": Path(nicebench.__file__).resolve().parent}
    for name in PLUGIN_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ImportError(
                f"{name} cannot be imported: nicebench was imported from {origins['nicebench']}, "
                f"which looks like the bare source folder. Install the package (`pip install -e .` "
                f"or `tox`) and run the tests from outside the repository root, or with pytest's "
                f"--import-mode=importlib (pyproject.toml sets it)."
            ) from err
        origins[name] = Path(module.__file__).resolve().parent
    return origins


def check_installed_under(prefix: str | Path) -> dict[str, Path]:
    """Check that nicebench and its plugin packages are imported from the environment ``prefix``."""
    prefix = Path(prefix).resolve()
    origins = import_origins()
    strays = {name: path for name, path in origins.items() if not path.is_relative_to(prefix)}
    if strays:
        listed = ", ".join(f"{name} from {path}" for name, path in strays.items())
        raise ImportError(
            f"the tests must import the nicebench installed in {prefix} (this run's environment, "
            f"python {sys.executable}), but import {listed}"
        )
    return origins
