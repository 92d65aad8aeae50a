"""Executors run cells and yield their results to the driver, which alone writes the store."""

from __future__ import annotations

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
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False)  # fmt: skip

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


def get_executor(name: str, address: str | None = None):
    """``"local"`` or ``"ray"``."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address)
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")
