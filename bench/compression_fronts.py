"""Print the compression track's headline table of finished runs (issue 13), from their stores.

Per (dataset, model, codec) and method: the front's smallest ratio to the codec at q75 on the
originals with accuracy within one point of it, its 95% bootstrap interval, the payload ratio (the
codec's header left out of both files), the BD-rate of the front against the codec's own quality
curve, the ratio to uniform quality (paired interval), the front's operating point and the random
sanity line. With ``--versus METHOD``: each row's headline over METHOD's, paired over the same
bootstrap resamples of images, and the share of resamples in which the row needs fewer bytes.

    python bench/compression_fronts.py results/compression-scenes128 [more run dirs]
    python bench/compression_fronts.py results/compression-scenes128-nice --versus gradcam
"""

from __future__ import annotations

import argparse

import numpy as np

from nicebench.compression.summary import random_sanity, versus_table
from nicebench.report.tables import compression_summary
from nicebench.store import RunStore


def _f(x: float, digits: int = 3) -> str:
    if x is None or np.isnan(x):
        return ""
    return "inf" if np.isinf(x) else f"{x:.{digits}f}"


def table(run_dir: str) -> str:
    store = RunStore(run_dir)
    try:
        comp = compression_summary(store)
    finally:
        store.close()
    lines = []
    for (dataset, model, track), part in comp.groupby(
        ["dataset", "model", "track_codec"], sort=False
    ):
        own = part[(part["kind"] == "method") | (part["method"] == track)]
        ref = own["reference_bytes"].iloc[0]
        lines += [
            f"### {dataset} · {model} · {track} (n = {int(own['n_images'].max())} images, "
            f"reference {track} q75 = {ref:.0f} B, accuracy {100 * own['accuracy_reference'].iloc[0]:.1f}% "
            f"on it, {100 * own['accuracy_original'].iloc[0]:.1f}% on the originals)",
            "",
            "| method | ratio | 95% interval | payload ratio | bd_rate | vs uniform [95%] | accuracy"
            " | front point (mask, share, q, factor) | points / front |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in own.iterrows():
            name = "uniform " + r["method"] if r["kind"] == "codec" else r["method"]
            point = (
                f"{r['front_mask']}, {_f(r['front_share'], 2)}, q{r['front_quality']:.0f}, "
                f"×{r['front_factor']:.0f}"
            )
            vs = f"{_f(r['vs_uniform'])} [{_f(r['vs_uniform_lo'])}, {_f(r['vs_uniform_hi'])}]"
            lines.append(
                f"| {name} | {_f(r['compression_ratio'])} | [{_f(r['compression_ratio_lo'])}, "
                f"{_f(r['compression_ratio_hi'])}] | {_f(r['payload_ratio'])} | "
                f"{_f(r['bd_rate'])} | {vs} | {100 * r['accuracy_compressed']:.1f}% | {point} | "
                f"{r['n_points']} / {r['n_front']} |"
            )
        lines.append("")
    lines += [f"- {line}" for line in random_sanity(comp)]
    return "\n".join(lines)


def versus(run_dir: str, against: str) -> str:
    store = RunStore(run_dir)
    try:
        vs = versus_table(store.tables("compression"), against)
    finally:
        store.close()
    if vs.empty:
        return f"no row labelled {against!r} in {run_dir}"
    lines = []
    axes = [c for c in ("dataset", "model", "track_codec") if c in vs]
    for where, part in vs.groupby(axes, sort=False):
        lines += [
            f"### {' · '.join(map(str, where))}: each row's headline over {against}'s "
            f"(paired, {int(part['n_images'].max())} images)",
            "",
            f"| row | ratio to {against} | 95% interval | P(fewer bytes than {against}) |",
            "|---|---|---|---|",
        ]
        for _, r in part.iterrows():
            name = "uniform " + r["method"] if r["kind"] == "codec" else r["method"]
            lines.append(
                f"| {name} | {_f(r['ratio'])} | [{_f(r['lo'])}, {_f(r['hi'])}] | "
                f"{_f(r['p_below'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument(
        "--versus",
        metavar="METHOD",
        help="also each row's headline over this row's, paired (e.g. gradcam)",
    )
    args = ap.parse_args()
    for run_dir in args.runs:
        print(table(run_dir))
        if args.versus:
            print(versus(run_dir, args.versus))


if __name__ == "__main__":
    main()
