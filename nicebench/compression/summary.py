"""The compression track's leaderboard summary (SPEC §6), from stored rows alone: no torch.

:func:`summarise` reduces one method's (or codec's) per-image rows and a codec's quality-sweep rows
to the leaderboard figures; :func:`summarise_table` does it for every row of a run's
``compression`` table. Both only need pandas, numpy and :mod:`.rate` (scipy, scikit-image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .rate import bd_rate, headline_ratio, operating_points

__all__ = ["summarise", "summarise_table"]


def summarise(
    points: pd.DataFrame | list[dict[str, Any]],
    sweep: pd.DataFrame | list[dict[str, Any]],
    reference_accuracy: float | None = None,
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """The leaderboard figures of one method from its rows and the codec's quality-sweep rows.

    - ``compression_ratio``: the smallest Σbytes/Σreference-bytes among the operating points whose
      accuracy is ≥ ``reference_accuracy − tolerance`` (default: the accuracy on the decoded
      reference, one point); **NaN when no operating point qualifies**.
    - ``bd_rate``: :func:`~nicebench.compression.rate.bd_rate` of the operating points (mean bytes
      vs accuracy) against the sweep; negative = fewer bytes than uniform-quality coding at equal
      accuracy, positive = uniform quality reduction beats the method. The sweep's codec is in
      ``bd_codec``.
    - ``bpp``, ``payload_ratio``, ``accuracy_compressed``, ``psnr``, ``ssim``: at the headline
      operating point (named in ``operating_point``), or at the most accurate point when none
      qualifies (``within_tolerance`` False).
    - ``accuracy_original``/``accuracy_reference``: on the originals and the decoded reference.
    """
    pts_rows = pd.DataFrame(points)
    sweep_rows = pd.DataFrame(sweep)
    pts = operating_points(pts_rows, "point")
    sw = operating_points(sweep_rows, "quality")
    ref_acc = (
        float(pts_rows["correct_reference"].mean())
        if reference_accuracy is None
        else float(reference_accuracy)
    )
    ratio, best = headline_ratio(pts["ratio"], pts["accuracy"], ref_acc, tolerance)
    within = best is not None
    if best is None:
        best = int(np.argmax(pts["accuracy"].to_numpy()))
    at = pts.iloc[best]
    return {
        "compression_ratio": ratio,
        "bd_rate": bd_rate(pts["bytes"], pts["accuracy"], sw["bytes"], sw["accuracy"]),
        "bd_codec": str(sweep_rows["codec"].iloc[0]) if len(sweep_rows) else "",
        "bpp": float(at["bpp"]),
        "bpp_payload": float(at["bpp_payload"]),
        "payload_ratio": float(at["payload_ratio"]),
        "psnr": float(at["psnr"]),
        "ssim": float(at["ssim"]),
        "accuracy_original": float(pts_rows["correct_original"].mean()),
        "accuracy_reference": ref_acc,
        "accuracy_compressed": float(at["accuracy"]),
        "operating_point": str(at["point"]),
        "within_tolerance": within,
        "n_images": int(pts_rows["image"].nunique()),
        "reference_bytes": float(pts_rows.groupby("image")["ref_bytes"].first().mean()),
    }


def summarise_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset (× model, when the rows have one) × leaderboard row: :func:`summarise` of its rows against its ``bd_codec``.

    ``rows`` are a run's ``compression`` rows with the columns ``dataset``, ``method`` (the row's
    label), ``kind`` (``"method"`` or ``"codec"``) and ``bd_codec`` (the label of the codec row whose
    quality sweep it is measured against: the run's first codec). A row whose ``bd_codec`` sweep is
    missing (its cells failed) gets an empty ``bd_rate`` and ``bd_codec``.
    """
    if rows.empty:
        return pd.DataFrame()
    out = []
    axes = [c for c in ("dataset", "model") if c in rows]  # a codec's sweep per classifier
    for where, part in rows.groupby(axes, sort=False):
        codec_rows = part[part["kind"] == "codec"]
        for (method, kind), mrows in part.groupby(["method", "kind"], sort=False):
            bd_codec = str(mrows["bd_codec"].iloc[0])
            sweep = codec_rows[codec_rows["method"] == bd_codec]
            summary = summarise(mrows, sweep if len(sweep) else mrows)
            summary["bd_codec"] = bd_codec if len(sweep) else ""
            if not len(sweep):
                summary["bd_rate"] = float("nan")
            out.append({**dict(zip(axes, where, strict=True)), "method": method, "kind": kind,
                        **summary})  # fmt: skip
    return pd.DataFrame(out)
