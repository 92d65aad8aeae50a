"""Executors run cells and yield their results to the driver, which alone writes the store.

``map(fn, cells, progress, timeout, fail)``: ``fn(cell)`` computes a cell (and keeps its own time
limit, see :func:`nicebench.runner.run_cell`); ``fail(cell, error)`` makes the failed result of a
cell that returned nothing, which the Ray executor yields for a worker that died twice or that
overran ``timeout`` by more than :func:`grace` (a hang the in-worker limit could not interrupt).
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LocalExecutor", "RayExecutor", "get_executor"]


class LocalExecutor:
    """Cells one after another in this process (models and fitted methods stay cached)."""

    def map(
        self,
        fn: Callable[[Any], Any],
        cells: Iterable[Any],
        progress: bool = True,
        timeout: float | None = None,
        fail: Callable[[Any, str], Any] | None = None,
    ) -> Iterator:
        cells = list(cells)
        bar = tqdm(cells, desc="cells", disable=not progress or not cells, unit="cell")
        for cell in bar:
            bar.set_postfix_str(f"{cell.dataset.label} · {cell.method.label}", refresh=False)
            yield fn(cell)


def grace(timeout: float) -> float:
    """How long the Ray driver waits past a cell's ``timeout`` before it stops the worker: the
    in-worker limit normally fires first and keeps the worker (and its cached models)."""
    return min(120.0, max(5.0, 0.25 * timeout))


def _in_worker(fn: Callable[[Any], Any], threads: int, cell: Any) -> Any:
    """``fn(cell)`` with the driver's torch thread count (Ray sets one thread per task), so that
    results are bit-identical to the local executor's. A result with a ``spec`` dict (a
    :class:`~nicebench.store.CellResult`) records there the Ray node that computed it
    (``ray_node``: the node's id), stored with the cell."""
    import ray
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    result = fn(cell)
    if isinstance(getattr(result, "spec", None), dict):
        result.spec["ray_node"] = ray.get_runtime_context().get_node_id()
    return result


# The driver's variables its workers see: nicebench's own, and the thread settings that change
# the last bits of a result (cli.py sets MKL_DYNAMIC=FALSE). A Ray instance the driver starts
# inherits all of its environment; the nodes of a cluster started with `ray start` have theirs.
WORKER_ENV_PREFIXES = ("NICEBENCH_", "OMP_", "MKL_")


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default ``os.environ``) passed to every Ray worker."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(WORKER_ENV_PREFIXES)}


def worker_death_reason(exc: BaseException) -> str:
    """The useful part of Ray's message about a worker that died: its exit type and detail where
    the message has them (Ray 2.x hands the driver no exit code or signal; its raylet log and
    the worker's ``python-core-worker-*.log`` in the Ray session's logs have the rest)."""
    text = " ".join(str(exc).split())
    found = re.search(r"(Worker exit type: .*?)(?: There are some potential root causes|$)", text)
    if found:
        return found.group(1).strip()
    return text[:300]


class RayExecutor:
    """Cells as Ray tasks on a cluster (``address``) or a local Ray instance; results stream
    back to the driver as they finish.

    A task whose worker dies (killed, ``os._exit``, out of memory) is retried once by Ray; a
    second death fails the cell with the worker's exit reason. At most as many tasks as the
    cluster has CPUs are in flight, so a task starts when it is submitted and the driver can time
    it: one that runs past ``timeout`` + :func:`grace` is cancelled (its worker stopped) and
    failed with "timed out after N s". Only the driver writes the store."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the ray executor needs `pip install nicebench[ray]`") from exc
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            # workers see the driver's cache and settings (models are trained once, not per worker)
            try:
                ray.init(
                    address=address,
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": worker_env()},
                )
            except ConnectionError as exc:
                if address is None:
                    raise
                raise ConnectionError(
                    f"could not join the Ray cluster at {address} ({exc}). Is it running? One "
                    "with Ray's token authentication (`ray start --head` turns it on where "
                    "~/.ray/auth_token exists) is joined with RAY_AUTH_MODE=token set here and "
                    "its token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                ) from exc
            self.started = True

    def shutdown(self) -> None:
        """Stop the Ray instance this executor started (a cluster it joined keeps running)."""
        if self.started:
            self.ray.shutdown()

    def map(
        self,
        fn: Callable[[Any], Any],
        cells: Iterable[Any],
        progress: bool = True,
        timeout: float | None = None,
        fail: Callable[[Any, str], Any] | None = None,
    ) -> Iterator:
        import torch

        ray = self.ray
        remote = ray.remote(max_retries=1, retry_exceptions=False)(_in_worker)
        queue = deque(cells)
        window = max(1, int(ray.cluster_resources().get("CPU", 1)))
        threads = torch.get_num_threads()
        running: dict[Any, tuple[Any, float]] = {}  # task → (cell, when the driver stops it)
        limit = timeout + grace(timeout) if timeout else float("inf")
        bar = tqdm(total=len(queue), desc="cells", disable=not progress or not queue)
        try:
            while queue or running:
                while queue and len(running) < window:
                    cell = queue.popleft()
                    running[remote.remote(fn, threads, cell)] = (cell, time.monotonic() + limit)
                wait = min(1.0, max(0.0, min(d for _, d in running.values()) - time.monotonic()))
                ready, _ = ray.wait(list(running), num_returns=1, timeout=wait)
                for ref in ready:
                    cell, _ = running.pop(ref)
                    bar.update(1)
                    yield self._result(ref, cell, timeout, fail)
                now = time.monotonic()
                for ref, (cell, deadline) in list(running.items()):
                    if now >= deadline:
                        ray.cancel(ref, force=True)  # stops the worker process
                        running.pop(ref)
                        bar.update(1)
                        yield self._failed(
                            fail,
                            cell,
                            f"timed out after {timeout:g} s (the "
                            f"worker was stopped {grace(timeout):g} s later)",
                        )
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            bar.close()
            self.shutdown()

    def _result(self, ref: Any, cell: Any, timeout: float | None, fail: Callable | None) -> Any:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.TaskCancelledError:
            return self._failed(fail, cell, f"timed out after {timeout:g} s")
        except (exceptions.WorkerCrashedError, exceptions.RaySystemError) as exc:
            return self._failed(
                fail,
                cell,
                "worker died twice (retried once): "
                f"{type(exc).__name__}: {worker_death_reason(exc)}",
            )
        except (
            exceptions.RayError
        ) as exc:  # fn raised: not a cell's own failure (run_cell never does)
            return self._failed(fail, cell, f"{type(exc).__name__}: {worker_death_reason(exc)}")

    @staticmethod
    def _failed(fail: Callable | None, cell: Any, error: str) -> Any:
        if fail is None:
            raise RuntimeError(f"cell {cell}: {error}")
        return fail(cell, error)


def get_executor(name: str, address: str | None = None, num_cpus: int | None = None):
    """``"local"`` or ``"ray"`` (a cluster at ``address``, else a local Ray instance)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, num_cpus=num_cpus)
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")
