"""Executors run cells and yield their results to the driver, which alone writes the store."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LocalExecutor", "RayExecutor", "get_executor"]


class LocalExecutor:
    """Cells one after another in this process (models and fitted methods stay cached)."""

    def map(
        self, fn: Callable[[Any], Any], cells: Iterable[Any], progress: bool = True
    ) -> Iterator:
        cells = list(cells)
        bar = tqdm(cells, desc="cells", disable=not progress or not cells, unit="cell")
        for cell in bar:
            bar.set_postfix_str(f"{cell.dataset.label} · {cell.method.label}", refresh=False)
            yield fn(cell)


class RayExecutor:
    """Cells as Ray tasks on a cluster (``address``) or a local Ray instance; results stream
    back to the driver as they finish."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the ray executor needs `pip install nicebench[ray]`") from exc
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            # workers see the driver's cache and settings (models are trained once, not per worker)
            env = {k: v for k, v in os.environ.items() if k.startswith(("NICEBENCH_", "OMP_"))}
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": env})  # fmt: skip
            self.started = True

    def shutdown(self) -> None:
        """Stop the Ray instance this executor started (a cluster it joined keeps running)."""
        if self.started:
            self.ray.shutdown()

    def map(
        self, fn: Callable[[Any], Any], cells: Iterable[Any], progress: bool = True
    ) -> Iterator:
        ray = self.ray
        remote = ray.remote(fn)
        pending = [remote.remote(c) for c in cells]
        bar = tqdm(total=len(pending), desc="cells", disable=not progress or not pending)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            bar.update(1)
            yield ray.get(ready[0])
        bar.close()
        self.shutdown()


def get_executor(name: str, address: str | None = None, num_cpus: int | None = None):
    """``"local"`` or ``"ray"`` (a cluster at ``address``, else a local Ray instance)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, num_cpus=num_cpus)
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")
