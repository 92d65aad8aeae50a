"""A real Ray cluster: two nodes on this machine, a head (``ray start --head``) and a node that
joins it (``ray start --address``), one CPU each. ``nicebench run --executor ray --address``
computes a tiny leaderboard's cells on both nodes and writes the local run's tables.

The nodes run with the Ray CLI of this virtual environment, on free ports, each with a temp dir
of its own and without the test's ``NICEBENCH_*``, ``OMP_*`` and ``MKL_*`` variables (only the
driver's runtime env gives them to the workers, as on machines of their own). They are stopped
by their process groups, never with ``ray stop``, which stops every Ray instance of the machine,
and the test checks that none of their processes is left. It skips only where Ray can't start here *and*
``NICEBENCH_REQUIRE_RAY_CLUSTER`` is unset; CI (tox.ini) sets it, so there it fails instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pandas as pd
import pytest
import torch

from nicebench.cli import main
from nicebench.executors import WORKER_ENV_PREFIXES
from nicebench.testing import TINY_SCENES

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
# 2 methods x 4 shards of 2 images: 8 cells, two at a time on the cluster's two CPUs
ARGS = [
    *("--datasets", TINY, "--methods", "gradcam,random", "--metrics", "deletion,insertion"),
    *("--n-images", "8", "--shard-size", "2", "--threads", "1", "--no-report", "--quiet"),
]
TIMING = ("explain_ms", "peak_mem", "seconds")  # measured, not computed: they differ run to run
BIN = Path(sys.executable).parent
# lists the cluster's alive nodes as JSON [[node id, CPUs], ...]
NODES = (
    "import json, sys, ray; "
    "ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False); "
    "print(json.dumps([[n['NodeID'], n['Resources'].get('CPU')] for n in ray.nodes() "
    "if n['Alive']]))"
)


def _cannot_run(why: str) -> NoReturn:
    """Skip, or fail where ``NICEBENCH_REQUIRE_RAY_CLUSTER`` is set."""
    if os.environ.get("NICEBENCH_REQUIRE_RAY_CLUSTER", "") not in ("", "0"):
        pytest.fail(why + "; NICEBENCH_REQUIRE_RAY_CLUSTER is set, so it may not skip")
    pytest.skip(why)


def _ray_cli(bin_dir: Path = BIN) -> Path:
    """The ``ray`` command of this environment (in ``bin_dir``), or :func:`_cannot_run`."""
    if not Path("/proc/self/stat").is_file():
        _cannot_run("the Ray cluster test finds its nodes' processes in /proc (Linux)")
    try:
        import ray  # noqa: F401
    except ImportError:
        _cannot_run("the Ray cluster test needs ray (pip install nicebench[ray])")
    if not (bin_dir / "ray").is_file():
        _cannot_run(f"no `ray` command in {bin_dir}, beside this Python")
    return bin_dir / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process of the machine."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command name) "
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class TwoNodeCluster:
    """A head and a second node started with ``ray start``, each in a process group and a temp
    dir of its own; :meth:`stop` ends exactly their processes (and the workers they started)."""

    def __init__(self, ray: Path, root: Path):
        self.ray, self.root = ray, root
        self.address = f"127.0.0.1:{_free_port()}"
        self.groups: list[int] = []
        self.seen: set[int] = set()  # every process of the nodes found so far
        # Ray's token authentication with a token of the cluster's own (Ray listens on every
        # interface): the nodes and the driver join, nobody else, whatever ~/.ray/auth_token holds
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith((*WORKER_ENV_PREFIXES, "RAY_"))
        } | self.auth

    def start(self) -> None:
        # free ports for all that Ray would otherwise put on fixed ones (6379, 8265, 52365, and
        # 10001 where Ray Client is installed), so that other Ray instances here don't collide
        head = ["--head", "--port", self.address.split(":")[1], "--include-dashboard", "false"]
        head += ["--dashboard-port", str(_free_port())]
        if importlib.util.find_spec("grpc"):  # Ray Client installed: the head starts its server
            head += ["--ray-client-server-port", str(_free_port())]
        self._start("head", head)
        self._start("node", ["--address", self.address])

    def _start(self, name: str, args: list[str]) -> None:
        proc = subprocess.Popen(
            [str(self.ray), "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
            + ["--dashboard-agent-listen-port", str(_free_port())]
            + ["--temp-dir", str(self.root / name), "--disable-usage-stats"],
            env=self.env,
            start_new_session=True,  # its daemons stay in this process group: stopped by it
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.groups.append(proc.pid)
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out = "(no answer in 90 s)"
        if proc.returncode:
            _cannot_run(
                f"`ray start {args[0]}` failed here (exit {proc.returncode}): {out[-1500:]}"
            )

    def alive(self) -> set[int]:
        """The nodes' live processes: their process groups, and the children of any process of
        theirs found before (Ray's workers have groups of their own)."""
        table = _processes()
        for _ in range(len(table)):  # to a fixed point: children of children
            more = {
                pid
                for pid, (parent, group, state) in table.items()
                if state != "Z"
                and pid not in self.seen
                and (group in self.groups or parent in self.seen)
            }
            if not more:
                break
            self.seen |= more
        return {pid for pid in self.seen if pid in table and table[pid][2] != "Z"}

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGKILL to the nodes' processes until none is left (a throwaway cluster); the command
        lines of those still alive after ``timeout`` s, and of any other process that names the
        nodes' temp dirs (there should be none)."""
        deadline = time.monotonic() + timeout
        while (pids := self.alive()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        left = {pid: _command_line(pid) for pid in self.alive()}
        table = _processes()
        left |= {
            pid: cmd
            for pid in table
            if table[pid][2] != "Z" and str(self.root) in (cmd := _command_line(pid))
        }
        return [f"{pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())]

    def nodes(self) -> list[list]:
        """[node id, CPUs] of each alive node, as Ray's GCS lists them."""
        proc = subprocess.run(
            [sys.executable, "-c", NODES, self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    ray = _ray_cli()
    # short: Ray's unix sockets live under the temp dir, and their paths may not pass 107 bytes
    root = Path(tempfile.mkdtemp(prefix="nb-ray-"))
    cluster = TwoNodeCluster(ray, root)
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test's Ray nodes left running: {left}"


def test_ray_cluster_of_two_nodes_matches_local(tiny_scenes, two_node_cluster, tmp_path):
    """Both nodes compute cells (each cell records its Ray node), and the tables equal the local
    run's in every column but the timings."""
    cluster = two_node_cluster
    nodes = cluster.nodes()
    assert len(nodes) == 2 and all(cpus == 1 for _, cpus in nodes), nodes

    threads = torch.get_num_threads()
    try:
        assert main(["run", *ARGS, "--out", str(tmp_path / "local")]) == 0
    finally:
        torch.set_num_threads(threads)
    argv = ["run", *ARGS, "--executor", "ray", "--address", cluster.address]
    # from a folder of its own: Ray puts the driver's working directory on its workers' path
    proc = subprocess.run(
        [str(BIN / "nicebench"), *argv, "--out", str(tmp_path / "ray")],
        cwd=tmp_path,
        env=os.environ | cluster.auth,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "8 cells computed, 0 already in the store, 0 failed" in proc.stdout, proc.stdout

    with sqlite3.connect(tmp_path / "ray" / "store.sqlite") as conn:
        ran_on = [
            json.loads(spec).get("ray_node") for (spec,) in conn.execute("SELECT spec FROM cells")
        ]
    assert len(ran_on) == 8 and set(ran_on) == {node for node, _ in nodes}, (ran_on, nodes)

    for name in ("leaderboard.csv", "per_image.csv"):
        a = pd.read_csv(tmp_path / "local" / name)
        b = pd.read_csv(tmp_path / "ray" / name)
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0, name
        timing = [c for c in a.columns if c.startswith(TIMING)]
        for column in a.columns.drop(timing):
            pd.testing.assert_series_equal(
                a[column], b[column], check_exact=True, obj=f"{name}: {column}"
            )

    assert cluster.stop() == []  # nothing of the two nodes is left (the fixture stops them anyway)


def test_cluster_check_fails_when_required(tmp_path, monkeypatch):
    monkeypatch.delenv("NICEBENCH_REQUIRE_RAY_CLUSTER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no `ray` command"):
        _ray_cli(tmp_path)
    monkeypatch.setenv("NICEBENCH_REQUIRE_RAY_CLUSTER", "1")
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        _ray_cli(tmp_path)
