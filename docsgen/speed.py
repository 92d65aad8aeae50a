"""The speed page (``speed.md``), from the committed ``results/bench.json``: every headline figure
of ``bench/run_all.py`` with the command in ``bench/`` that measures it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
BENCH_JSON = REPO / "results" / "bench.json"


def load_run_all() -> ModuleType:
    """``bench/run_all.py`` (not a package), whose ``BENCHES`` say how to read each benchmark."""
    path = REPO / "bench" / "run_all.py"
    spec = importlib.util.spec_from_file_location("nicebench_bench_run_all", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def speed_page(bench: dict | None = None) -> str:
    """The Markdown of the speed page from ``bench`` (default: ``results/bench.json``)."""
    bench = json.loads(BENCH_JSON.read_text()) if bench is None else bench
    run_all = load_run_all()
    machine, results = bench["machine"], bench["results"]
    lines = [
        "# Speed",
        "",
        "Generated when the docs are built from the committed `results/bench.json`, which "
        "`python bench/run_all.py` writes (it runs every benchmark below in a fresh process). "
        "Each figure is a ratio of two timings measured side by side in one process, so load on "
        "a shared machine hits both arms; the command in the last column measures that figure "
        "alone and prints one JSON line. The history of these figures is in the "
        "[changelog](changelog.md).",
        "",
        f"Measured on: {machine['processor']}, {machine['cores']} cores, {machine['threads']} torch "
        f"threads, torch {machine['torch']}, Python {machine.get('python', '?')}, GPU: "
        f"{machine['cuda'] or 'none'}; {machine['date']}, commit `{machine['commit'] or '?'}`.",
        "",
        "| figure | value | target | command |",
        "|---|---|---|---|",
    ]
    for b in run_all.BENCHES:
        result = results.get(b.name)
        if result is None:
            continue
        command = f"`python bench/{b.name}.py{''.join(' ' + a for a in b.args)}`"
        if "error" in result:
            lines.append(f"| failed: {_cell(result['error'])} | | | {command} |")
            continue
        for figure, value, target in b.figures(result):
            shown = "—" if value is None else f"{value:g}"
            lines.append(f"| {b.name} | {_cell(figure)} | {shown} | {_cell(target)} | {command} |")
    lines += [
        "",
        "The GPU figures come from `python bench/gpu_figures.py` on a CUDA machine "
        "(`results/gpu/` holds such a run); the studies in `bench/` that produce results rather "
        "than speed figures (compression anchors and fronts, the NICE λ sweep) are described in "
        "[The compression track](compression.md) and [NICE](nice.md).",
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
