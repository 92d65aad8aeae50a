"""``precomputed``: score maps that another tool saved, looked up by the images' dataset index.

``precomputed:path=FILE`` reads ``FILE``:

- ``.npz``: one array per image, keyed by the image's index as a string (``"0"``, ``"17"``), as
  ``np.savez(FILE, **{str(i): m for i, m in maps.items()})`` writes (see :func:`save_maps`);
  read with ``allow_pickle=False``;
- ``.pt``: a dict from index (int or string) to a tensor, as ``torch.save`` writes; read with
  ``weights_only=True``.

Each map is ``H×W`` or ``1×H×W`` at the dataset's image size, finite, higher = more important. The
runner hands the method each batch's dataset indices (:attr:`nicebench.Method.needs_indices`). A
cell's key names the file's path, not its content: write changed maps to a new path (or run with
``--fresh``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nicebench import Method, MethodError, register_method

__all__ = ["Precomputed", "save_maps"]

SUFFIXES = (".npz", ".pt", ".pth")


def save_maps(path: str | Path, maps: Mapping[int, Any]) -> Path:
    """Write ``{image index: map}`` as the ``.npz`` (or ``.pt``) file ``precomputed`` reads."""
    path = Path(path)
    arrays = {
        int(i): np.asarray(torch.as_tensor(m).detach().cpu(), dtype=np.float32)
        for i, m in maps.items()
    }
    if path.suffix == ".npz":
        np.savez(path, **{str(i): a for i, a in arrays.items()})
    elif path.suffix in (".pt", ".pth"):
        torch.save({i: torch.from_numpy(a) for i, a in arrays.items()}, path)
    else:
        raise ValueError(f"save_maps: {path} must end in one of {SUFFIXES}")
    return path


def _index(key: Any, path: Path) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise MethodError(
            f"precomputed: {path}: key {key!r} is not an image index "
            "(keys must be the images' dataset indices, e.g. '0', '17')"
        ) from None


@register_method("precomputed")
class Precomputed(Method):
    """Maps saved by any other tool (``path``: a ``.npz`` or ``.pt`` file, see the module's doc),
    looked up by dataset index; errors name the file and the image."""

    uses_model = False
    needs_indices = True

    def __init__(self, model, *, path: str | None = None):
        super().__init__(model)
        if not path:
            raise MethodError(
                "precomputed: give the maps file, precomputed:path=FILE.npz (or FILE.pt)"
            )
        self.path = str(path)
        file = Path(path).expanduser()
        if file.suffix not in SUFFIXES:
            raise MethodError(f"precomputed: {file} must be a .npz or .pt file")
        if not file.is_file():
            raise MethodError(f"precomputed: maps file {file} does not exist")
        self._file = file
        try:
            if file.suffix == ".npz":
                self._store: Any = np.load(file, allow_pickle=False)
                keys = self._store.files
            else:
                self._store = torch.load(file, map_location="cpu", weights_only=True)
                if not isinstance(self._store, Mapping):
                    raise MethodError(
                        f"precomputed: {file} holds a "
                        f"{type(self._store).__name__}, not a dict of image index "
                        "→ map"
                    )
                keys = list(self._store)
            self._keys = {_index(k, file): k for k in keys}
        except MethodError:
            raise
        except Exception as exc:
            raise MethodError(
                f"precomputed: cannot read {file}: {type(exc).__name__}: {exc}"
            ) from exc

    def _map(self, i: int) -> torch.Tensor:
        if i not in self._keys:
            raise MethodError(
                f"precomputed: {self._file} has no map for image {i} "
                f"({len(self._keys)} maps in the file)"
            )
        key = self._keys[i]
        try:
            raw = self._store[key]
        except ValueError as exc:  # an object array (would need pickle)
            raise MethodError(f"precomputed: {self._file}: map for image {i}: {exc}") from exc
        if not isinstance(raw, np.ndarray | torch.Tensor):
            raise MethodError(
                f"precomputed: {self._file}: map for image {i} is a "
                f"{type(raw).__name__}, not an array"
            )
        t = torch.as_tensor(np.asarray(raw) if isinstance(raw, np.ndarray) else raw)
        if not (
            t.dtype.is_floating_point
            or t.dtype
            in (torch.int32, torch.int64, torch.uint8, torch.int16, torch.int8, torch.bool)
        ):
            raise MethodError(f"precomputed: {self._file}: map for image {i} has dtype {t.dtype}")
        return t.float()

    def attribute(self, images, targets, *, indices: torch.Tensor, **kw):
        h, w = images.shape[-2:]
        maps = []
        for i in indices.tolist():  # one lookup per image
            m = self._map(i)
            if m.dim() == 3 and m.shape[0] == 1:
                m = m[0]
            if tuple(m.shape) != (h, w):
                raise MethodError(
                    f"precomputed: {self._file}: map for image {i} has shape "
                    f"{tuple(self._map(i).shape)}, expected ({h}, {w}) or "
                    f"(1, {h}, {w}) (the dataset's image size)"
                )
            if not torch.isfinite(m).all():
                bad = int((~torch.isfinite(m)).sum())
                raise MethodError(
                    f"precomputed: {self._file}: map for image {i} has {bad} NaN/inf values"
                )
            maps.append(m)
        return torch.stack(maps).unsqueeze(1).to(images.device)
