"""The compression track (docs/design.md §6) as a table-valued metric named ``compression``.

Per cell it produces per-image rows: a method cell's operating points (its map's top-k masks and,
for gate methods, its own binary mask × the track's quality sweep × the background factors, as
mixed-resolution images coded with each codec of the run, or only the reference with
``track_codecs = "reference"``), a codec cell's own quality sweep. Every row names its
``track_codec`` (the codec that coded it) and ``bd_codec`` (the run's reference). The leaderboard
summary, fronts and bootstrap intervals across shards are
:func:`nicebench.compression.summary.summarise_table`, which needs no torch.

Settings (the run's ``[settings]``): ``quality`` (the reference quality, 75), ``keeps`` (the top-k
shares, default (0.1, 0.3); docs/design.md §6's full sweep is 0.05, 0.1, 0.2, 0.3, 0.5), ``qualities`` (the
track's quality sweep, default (30, 50, 75); a study sweeps 10…90), ``factors`` (the background
factors, (4, 8);
the single ``factor`` of old configs still works), ``dilate`` (0), ``track_codecs`` (``"all"`` or
``"reference"``), ``ssim`` (``"front"``: SSIM on each shard's front points only, ``"all"``,
``"none"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..compression.summary import summarise_table
from ..metric_spec import MetricSpec
from ..registry import register_metric
from . import settings as S
from .compression_track import compression_rows, quality_sweep_rows
from .context import MetricContext

__all__ = ["COMPRESSION_METRIC", "TRACK_SETTINGS", "compression_table", "track_settings"]

#: The settings the compression track reads (:mod:`nicebench.metrics.settings`).
TRACK_SETTINGS = (
    S.QUALITY,
    S.KEEPS,
    S.QUALITIES,
    S.FACTORS,
    S.FACTOR,
    S.DILATE,
    S.TRACK_CODECS,
    S.SSIM,
    S.CODED_EXAMPLES,
)


def track_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The compression track's grid from a run's settings, defaults filled in."""
    factors = S.FACTORS.get(settings) if "factors" in settings else None
    if factors is None:
        factor = S.FACTOR.get(settings)
        factors = (factor,) if factor is not None else S.FACTORS.default
    return {
        "quality": S.QUALITY.get(settings),
        "keeps": tuple(S.KEEPS.get(settings)),
        "qualities": tuple(S.QUALITIES.get(settings)),
        "factors": tuple(factors),
        "dilate": S.DILATE.get(settings),
        "track_codecs": S.TRACK_CODECS.get(settings),
        "ssim": S.SSIM.get(settings),
    }


def compression_table(ctx: MetricContext) -> list[dict[str, Any]]:
    """Per-image × operating-point rows of one cell (settings: :func:`track_settings`)."""
    t = track_settings(ctx.settings)
    coded: dict[str, list[bytes]] = {}
    if ctx.kind == "codec":
        rows = quality_sweep_rows(
            ctx.model,
            ctx.images,
            ctx.labels,
            ctx.codec,
            qualities=None,
            reference_quality=t["quality"],
            first_image=ctx.start,
            gt_masks=ctx.masks,
            ssim=t["ssim"],
            coded_out=coded,
        )
        for row in rows:
            row["bd_codec"] = ctx.bd_codec
        _keep_examples(ctx, coded)
        return rows
    codecs = list(ctx.codecs) or [(ctx.bd_codec or ctx.codec.name, ctx.codec)]
    if t["track_codecs"] == "reference":
        codecs = codecs[:1]
    gate = ctx.gate_mask() if ctx.method.gate_mask else None
    rows = []
    for label, codec in codecs:
        part = compression_rows(
            ctx.model,
            ctx.images,
            ctx.labels,
            ctx.saliency,
            gt_masks=ctx.masks,
            codec=codec,
            quality=t["quality"],
            keeps=t["keeps"],
            qualities=t["qualities"],
            factors=t["factors"],
            dilate=t["dilate"],
            binary_mask=gate,
            first_image=ctx.start,
            ssim=t["ssim"],
            coded_out=None if rows else coded,  # the reference codec's files
        )
        for row in part:
            row["track_codec"], row["bd_codec"] = label, ctx.bd_codec
        rows += part
    _keep_examples(ctx, coded)
    return rows


def _keep_examples(ctx: MetricContext, coded: dict[str, list[bytes]]) -> None:
    """Keep the coded files of the first ``settings["coded_examples"]`` (default 2) sample images
    at every operating point, as ``coded/<point>`` (uint8 bytes of the file), for figures."""
    first = S.CODED_EXAMPLES.get(ctx.settings)  # the dataset's first images, any shard
    rows = [j for j in ctx.sample_rows if ctx.start + j < first]
    for point, streams in coded.items():
        files = [np.frombuffer(b, dtype=np.uint8) for b in streams]
        ctx.keep(f"coded/{point}", files, rows=rows, dtype="uint8")


COMPRESSION_METRIC = register_metric(
    MetricSpec(
        "compression",
        compression_table,
        "compression_ratio",
        higher_is_better=False,
        category="compression",
        citation="Li & Ji, NICE, arXiv 1908.08988; docs/design.md §6",
        checked_against="Pillow (the bytes it writes) and scikit-image PSNR/SSIM, "
        "tests/test_compression.py::test_bytes_equal_what_pillow_writes, "
        "tests/test_compression.py::test_psnr_and_ssim_batches_equal_scikit_image",
        kind="table",
        summary=summarise_table,
        settings=TRACK_SETTINGS,
        description="docs/design.md §6: the rate–accuracy front of mixed-resolution images against each "
        "codec's own quality curve",
    )
)
