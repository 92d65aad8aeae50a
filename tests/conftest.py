"""Shared fixtures: a private model cache per test session and tiny trained classifiers."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    """Stop at once, with the fix, when the tests would run against the wrong nicebench."""
    from nicebench._provenance import check_installed_under, import_origins

    try:
        prefix = os.environ.get("NICEBENCH_EXPECT_PREFIX")
        check_installed_under(prefix) if prefix else import_origins()
    except ImportError as err:
        raise pytest.UsageError(str(err)) from err


from nicebench.testing import TINY_SCENES  # noqa: E402  (after the guard's definition)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """A NICEBENCH_CACHE private to this test session (tests never use the user's cache)."""
    path = tmp_path_factory.mktemp("nicebench-cache")
    old = os.environ.get("NICEBENCH_CACHE")
    os.environ["NICEBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("NICEBENCH_CACHE", None)
    else:
        os.environ["NICEBENCH_CACHE"] = old


@pytest.fixture(autouse=True)
def _private_cache(session_cache, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(session_cache))


@pytest.fixture
def test_cache_one_thread(tmp_path, monkeypatch):
    """A model cache of the test's own (nothing trained by another test is found) and one torch
    thread; modules use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_scenes(session_cache):
    """(dataset, model): scenes at 32 px with a classifier trained for a few seconds."""
    import nicebench as nb

    ds = nb.load_dataset("scenes", **TINY_SCENES)
    return ds, nb.load_model(ds)


@pytest.fixture(scope="session")
def scenes64(session_cache):
    """(dataset, model): the real scenes-64 classifier, trained once per session (~2 min)."""
    import nicebench as nb

    ds = nb.load_dataset("scenes", size=64, n=200)
    return ds, nb.load_model(ds)
