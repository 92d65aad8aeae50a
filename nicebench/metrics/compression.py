"""The compression track (SPEC §6) as a table-valued metric named ``compression``.

Per cell it produces rows: a method cell's operating points (its map's top-k masks and, for gate
methods, its own binary mask, as mixed-resolution images coded with the run's reference codec), a
codec cell's quality sweep. Every row names its ``bd_codec``. The leaderboard summary is
:func:`nicebench.compression.summary.summarise_table`, which needs no torch.
"""

from __future__ import annotations

from typing import Any

from ..compression.summary import summarise_table
from ..compression.track import DEFAULT_KEEPS
from . import MetricContext, MetricSpec, _register

__all__ = ["COMPRESSION_METRIC", "compression_table"]


def compression_table(ctx: MetricContext) -> list[dict[str, Any]]:
    """Per-image × operating-point rows of one cell (settings: ``quality`` of the reference,
    default 75; ``keeps``, ``factor`` (4), ``dilate`` (0) for methods)."""
    from ..compression import compression_rows, quality_sweep_rows

    s = ctx.settings
    quality = s.get("quality", 75)
    if ctx.kind == "codec":
        rows = quality_sweep_rows(ctx.model, ctx.images, ctx.labels, ctx.codec, qualities=None,
                                  reference_quality=quality, first_image=ctx.start)  # fmt: skip
    else:
        gate = ctx.gate_mask() if ctx.method.gate_mask else None
        rows = compression_rows(
            ctx.model, ctx.images, ctx.labels, ctx.saliency, gt_masks=ctx.masks, codec=ctx.codec,
            quality=quality, keeps=tuple(s.get("keeps", DEFAULT_KEEPS)),
            factor=s.get("factor", 4), dilate=s.get("dilate", 0), binary_mask=gate,
            first_image=ctx.start,
        )  # fmt: skip
    for row in rows:
        row["bd_codec"] = ctx.bd_codec
    return rows


COMPRESSION_METRIC = _register(MetricSpec(
    "compression", compression_table, "compression_ratio", higher_is_better=False,
    kind="table", summary=summarise_table,
    description="SPEC §6: bytes vs accuracy of mixed-resolution images against a codec's sweep",
))  # fmt: skip
