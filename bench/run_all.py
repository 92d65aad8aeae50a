"""Run every speed benchmark under ``bench/`` and write ``results/bench.json`` and ``bench.md``.

Each benchmark is its own script printing one JSON line, and each of its figures is a ratio of two
timings measured side by side in that one process (so load on a shared machine hits both arms).
This runs them one after the other in fresh processes, collects their lines, and writes:

* ``results/bench.json``: the machine (processor, cores, threads, torch version, date, commit)
  and every benchmark's full JSON line;
* ``results/bench.md``: one Markdown table of the headline ratios with their targets, which the
  README shows.

The studies in ``bench/`` that produce results rather than speed figures (compression anchors and
fronts, the NICE λ sweep) are run by their own commands; GPU figures come from
``bench/gpu_figures.py`` on a CUDA machine (listed here as owed when there is none).

    python bench/run_all.py [--out results] [--only deletion_engine,metrics] [--readme README.md]

With ``--readme``, the table also replaces the README's block between ``<!-- bench:start -->``
and ``<!-- bench:end -->``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    """A benchmark script, its arguments, and how to read its headline figures."""

    name: str
    args: tuple[str, ...]
    figures: Callable[[dict], list[tuple[str, float | None, str]]]  # (figure, value, target)


def _engine(r: dict) -> list[tuple[str, float | None, str]]:
    out = [
        (f"deletion vs forward limit, {m}, batch {x['batch']}", x["ratio"], "≥ 0.85")
        for m, rows in r["models"].items()
        for x in rows
    ]
    out += [
        (
            f"forward with BatchNorm folded / as loaded, {m}, batch {rows[0]['batch']}",
            rows[0]["folded_forward_speedup"],
            "",
        )
        for m, rows in r["models"].items()
        if rows and "folded_forward_speedup" in rows[0]
    ]
    return out


def _metrics(r: dict) -> list[tuple[str, float | None, str]]:
    out = [
        (
            "deletion+insertion vs forward floor (scenes-64, 64 images, 64 steps)",
            r["ratio_to_floor"],
            "≥ 0.85",
        ),
        ("deletion+insertion speed-up over a per-image loop", r["speedup_vs_loop"], ""),
    ]
    for key in sorted(k for k in r if k.endswith("_ratio_to_floor") and k != "ratio_to_floor"):
        out.append((f"{key.removesuffix('_ratio_to_floor')} vs forward floor", r[key], "≥ 0.7"))
    return out


def _gate(r: dict) -> list[tuple[str, float | None, str]]:
    cpu = r.get("cpu", {})
    out = []
    if "speedup" in cpu:
        out.append(("nice-opt batched vs per-image loop (CPU)", cpu["speedup"], ""))
    gpu = r.get("gpu", {})
    if "gate_step" in gpu:
        out.append(("fused gate step vs unfused ops (GPU)", gpu["gate_step"]["speedup"], "≥ 2"))
        out.append(
            (
                "nice-opt ResNet-50 vs T×(fwd+bwd) (GPU)",
                gpu["optimizer_resnet50_224"]["ratio_to_limit"],
                "≥ 0.8",
            )
        )
    else:
        out.append(
            ("GPU figures (fused gate step, nice-opt ResNet-50)", None, gpu.get("skipped", "owed"))
        )
    return out


BENCHES = [
    Bench("deletion_engine", (), _engine),
    Bench("metrics", (), _metrics),
    Bench("gate_optimizer", ("--repeats", "1"), _gate),
    Bench(
        "nice_explain",
        ("--repeats", "7"),
        lambda r: [("nice explain time / one forward pass", r["ratio_explain_to_forward"], "≤ 2")],
    ),
    Bench(
        "rtsal_speed",
        (),
        lambda r: [("rtsal explain throughput / forward throughput", r["ratio"], "")],
    ),
    Bench(
        "default_run",
        (),
        lambda r: [
            ("default leaderboard, cold (empty model cache), s", r["cold_s"], ""),
            ("default leaderboard, warm (rerun of the same run directory), s", r["warm_s"], ""),
            ("models trained by the cold run", r["trained"], "0"),
        ],
    ),
    Bench(
        "figure_data",
        ("--repeat", "1"),
        lambda r: [("run time with / without the figure data", r["time_ratio"], "≈ 1")],
    ),
]


def _machine() -> dict:
    import torch

    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": dt.date.today().isoformat(),
        "processor": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
    }


def _markdown(machine: dict, results: dict) -> str:
    head = (
        f"Machine: {machine['processor']}, {machine['cores']} cores, {machine['threads']} "
        f"torch threads, torch {machine['torch']}, GPU: {machine['cuda'] or 'none'}; "
        f"{machine['date']}, commit {machine['commit'] or '?'}."
    )
    lines = [head, "", "| benchmark | figure | value | target |", "|---|---|---|---|"]
    for b in BENCHES:
        r = results.get(b.name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {b.name} | failed: {r['error'][:80]} | | |")
            continue
        for fig, value, target in b.figures(r):
            v = "—" if value is None else f"{value:g}"
            lines.append(f"| {b.name} | {fig} | {v} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE.parent / "results"))
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    p.add_argument("--readme", default=None, help="a README whose bench block to replace")
    args = p.parse_args()
    only = {s for s in args.only.split(",") if s}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        raise SystemExit(
            f"--only: unknown benchmark(s) {sorted(unknown)}; known: {[b.name for b in BENCHES]}"
        )
    results: dict[str, dict] = {}
    for b in BENCHES:
        if only and b.name not in only:
            continue
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{b.name}.py"), *b.args], capture_output=True, text=True
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            results[b.name] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        else:
            results[b.name] = json.loads(lines[-1])
        results[b.name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(
            json.dumps(
                {
                    "bench": b.name,
                    "wall_s": results[b.name]["wall_s"],
                    "ok": "error" not in results[b.name],
                }
            ),
            flush=True,
        )
    machine = _machine()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=1) + "\n"
    )
    md = _markdown(machine, results)
    (out / "bench.md").write_text(md)
    if args.readme:
        _update_readme(Path(args.readme), md)
    print(md)


def _update_readme(path: Path, md: str) -> None:
    """Replace the block between the bench markers of ``path`` with ``md``."""
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} … {end} block to replace; add the two markers")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{md}{end}{tail}")


if __name__ == "__main__":
    main()
