"""The weight cache: atomic entries with their hash, one training for concurrent processes, corrupt
entries reported and retrained (never loaded, never a crash)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from nicebench.models.cache import CorruptCacheWarning, cache_path, cached_module

IDENTITY = {"what": "a tiny linear layer", "seed": 3}


def _build() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(IDENTITY["seed"])
        return nn.Linear(4, 2)


def _train(calls: list[int]):
    def train(module: nn.Module) -> dict:
        calls.append(1)
        with torch.no_grad():
            module.weight.mul_(2).add_(1)
        return {"note": "trained"}

    return train


def _expected() -> dict[str, torch.Tensor]:
    module = _build()
    _train([])(module)
    return module.state_dict()


def _same(module: nn.Module) -> bool:
    return all(
        torch.equal(a, b)
        for a, b in zip(module.state_dict().values(), _expected().values(), strict=True)
    )


def test_an_entry_carries_its_hash_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    calls: list[int] = []
    first = cached_module("test", IDENTITY, _build, _train(calls))
    second = cached_module("test", IDENTITY, _build, _train(calls))
    assert calls == [1] and _same(first) and _same(second)
    path = cache_path("test", IDENTITY)
    meta = json.loads(path.with_suffix(".json").read_text())
    import hashlib

    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["note"] == "trained" and meta["identity"] == IDENTITY
    assert not list(path.parent.glob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupt_entry_is_reported_and_retrained(damage, tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    calls: list[int] = []
    cached_module("test", IDENTITY, _build, _train(calls))
    path = cache_path("test", IDENTITY)
    data = bytearray(path.read_bytes())
    if damage == "truncate":  # a crash half-way through a copy
        data = data[: len(data) // 2]
    elif damage == "flip":  # still a loadable file, other weights: only the hash can tell
        weights = _expected()["weight"].numpy().tobytes()
        data[data.index(weights)] ^= 0x01
    else:
        data = bytearray(b"not a weight file")
    path.write_bytes(bytes(data))
    with pytest.warns(CorruptCacheWarning, match="corrupt cache entry .*retraining"):
        module = cached_module("test", IDENTITY, _build, _train(calls))
    assert calls == [1, 1] and _same(module)
    assert path.with_name(path.name + ".corrupt").read_bytes() == bytes(data)
    cached_module("test", IDENTITY, _build, _train(calls))  # the retrained entry is good
    assert calls == [1, 1]


def test_an_entry_without_a_hash_is_loaded_and_gets_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))
    calls: list[int] = []
    cached_module("test", IDENTITY, _build, _train(calls))
    meta_path = cache_path("test", IDENTITY, ".json")
    meta = json.loads(meta_path.read_text())
    digest = meta.pop("sha256")
    meta_path.write_text(json.dumps(meta))  # as the cache wrote entries before this change
    assert _same(cached_module("test", IDENTITY, _build, _train(calls))) and calls == [1]
    assert json.loads(meta_path.read_text())["sha256"] == digest


_WORKER = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    from nicebench.models.cache import cached_module

    def build():
        torch.manual_seed(0)
        return nn.Linear(8, 3)

    def train(module):
        with open(sys.argv[1], "a") as log:  # one line per training
            log.write("trained\\n")
        time.sleep(1.5)  # long enough for the other process to ask for the entry meanwhile
        with torch.no_grad():
            module.weight.add_(1)
        return {}

    module = cached_module("race", {"n": 1}, build, train)
    print(float(module.weight.sum()))
""")


def test_two_processes_train_an_entry_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    log = tmp_path / "trainings.log"
    env = {**os.environ, "NICEBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(log)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert log.read_text() == "trained\n"  # one training; the other process waited and loaded
    assert outs[0][0] == outs[1][0]  # the same weights


def test_a_run_directory_has_one_live_writer(tmp_path):
    from nicebench.store import RunStore, StoreError

    first = RunStore(tmp_path).claim()
    with pytest.raises(StoreError, match=rf"in use by a live run \(pid {os.getpid()}\).*--out"):
        RunStore(tmp_path).claim()
    reader = RunStore(tmp_path)  # reading needs no claim
    assert reader.done_keys() == set()
    reader.close()
    first.close()
    RunStore(tmp_path).claim().close()  # released on close (and by the OS when a run dies)


def test_a_damaged_store_is_refused_with_the_fix(tmp_path):
    from nicebench.cli import main
    from nicebench.store import RunStore, StoreError

    (tmp_path / "store.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    with pytest.raises(StoreError, match=r"store\.sqlite is damaged .*move it aside"):
        RunStore(tmp_path)
    code = main(
        [
            "run",
            "--datasets",
            "scenes:size=32,n=4",
            "--methods",
            "random",
            "--metrics",
            "deletion",
            "--n-images",
            "4",
            "--out",
            str(tmp_path),
            "-q",
        ]
    )
    assert code == 2
