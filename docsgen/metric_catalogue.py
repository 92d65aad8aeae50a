"""The metric catalogue page (``reference/metrics.md``), from the metric registry and the reference
run's validity audit, so that it lists exactly the metrics an installation has."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from nicebench.metric_spec import CATEGORIES, MetricSpec

# The validity audit's verdicts of the committed reference run, one row per (dataset, column), and
# its Markdown, whose "Thresholds:" paragraph says what each verdict means.
VALIDITY_CSV = Path(__file__).resolve().parents[1] / "results" / "validity.csv"
VALIDITY_MD = VALIDITY_CSV.with_suffix(".md")


def registered_metrics() -> list[MetricSpec]:
    """Every registered metric (built-ins and installed plugins), in catalogue order: by
    category (:data:`~nicebench.metric_spec.CATEGORIES` first, then others), then by name."""
    import nicebench.metrics  # noqa: F401  (registers the built-ins)
    from nicebench.registry import METRICS

    specs = [METRICS.get(name) for name in METRICS.names()]
    return sorted(specs, key=lambda s: (_category_rank(s.category), s.category, s.name))


def read_validity(path: Path = VALIDITY_CSV) -> dict[str, list[dict[str, str]]]:
    """Leaderboard column → the audit's rows for it (dataset, verdict, reason)."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    if path.exists():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                out[row["metric"]].append(row)
    return out


def catalogue_page(
    specs: list[MetricSpec] | None = None, validity: dict[str, list[dict]] | None = None
) -> str:
    """The Markdown of the catalogue: an overview table, then one section per metric."""
    specs = registered_metrics() if specs is None else specs
    validity = read_validity() if validity is None else validity
    lines = [
        "# Metric catalogue",
        "",
        "Generated when the docs are built, from the metric registry of the installed nicebench "
        "(`nicebench.registry.METRICS`: every built-in metric and every installed plugin metric) "
        "and from the validity audit of the committed reference run (`results/validity.csv`). "
        "`nicebench list metrics` prints the same names. What the columns and verdicts mean is "
        "explained beside the table in [The leaderboard](../leaderboard.md); how to add a metric "
        "in [Writing plugins](../plugins.md).",
        "",
        "| metric | better | category | validity audit of the reference run |",
        "|---|---|---|---|",
    ]
    for spec in specs:
        lines.append(
            f"| [{spec.name}](#{_anchor(spec.name)}) | {_direction(spec)} | "
            f"{spec.category or 'uncategorised'} | {_verdict_summary(validity.get(spec.column))} |"
        )
    thresholds = _thresholds()
    if thresholds:
        lines += ["", f"Verdicts of the audit (`results/validity.md`). {thresholds}"]
    for spec in specs:
        lines += ["", *_section(spec, validity.get(spec.column, []))]
    return "\n".join(lines) + "\n"


def _section(spec: MetricSpec, audit: list[dict[str, Any]]) -> list[str]:
    facts = [
        f"column `{spec.column}`",
        f"{_direction(spec)} is better",
        spec.category or "uncategorised",
        "one value per image" if spec.kind == "per_image" else "a table per cell",
        "counts in the combined rank" if spec.in_combined_rank else "not ranked (descriptive)",
    ]
    if spec.needs_masks:
        facts.append("needs object masks")
    out = [f"## {spec.name}", "", " · ".join(facts), ""]
    if spec.description:
        out += [_link_spec(spec.description[0].upper() + spec.description[1:]) + ".", ""]
    origin = spec.fn.__module__ if hasattr(spec.fn, "__module__") else ""
    out += [
        f"- **Citation:** {spec.citation or '—'}",
        f"- **Checked against:** {spec.checked_against or 'not declared'}",
    ]
    if origin and not origin.startswith("nicebench."):
        out.append(f"- **Plugin:** registered by `{origin}`")
    out.append("")
    settings = [s for s in spec.settings if s.name != "seed"]
    if settings:
        out += ["Settings (keys of a run's `[settings]`):", ""]
        out += ["| setting | default | meaning |", "|---|---|---|"]
        for s in settings:
            choices = f" (one of {', '.join(map(str, s.choices))})" if s.choices else ""
            out.append(f"| `{s.name}` | `{s.default!r}` | {_cell(s.meaning + choices)} |")
        out.append("")
    else:
        out += ["No settings of its own.", ""]
    if audit:
        out += ["Validity in the reference run (`results/validity.csv`):", ""]
        out += ["| dataset | verdict | audit |", "|---|---|---|"]
        for row in audit:
            out.append(f"| {row['dataset']} | {row['verdict']} | {_cell(row['reason'])} |")
    else:
        out.append("Not in the reference run's validity audit.")
    return out


def _thresholds(path: Path = VALIDITY_MD) -> str:
    if not path.exists():
        return ""
    for line in path.read_text().splitlines():
        if line.startswith("Thresholds:"):
            return line
    return ""


def _direction(spec: MetricSpec) -> str:
    return "higher" if spec.higher_is_better else "lower"


def _verdict_summary(rows: list[dict[str, str]] | None) -> str:
    """``valid: a, b; saturated: c``, the datasets grouped by verdict (valid first)."""
    if not rows:
        return "not audited"
    by_verdict: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_verdict[row["verdict"]].append(row["dataset"])
    order = sorted(by_verdict, key=lambda v: (v != "valid", v))
    return "; ".join(f"{v.replace('_', ' ')}: {', '.join(by_verdict[v])}" for v in order)


def _category_rank(category: str) -> int:
    return CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES)


def _anchor(name: str) -> str:
    """The id MkDocs gives the heading ``## name`` (a metric name is a Python identifier)."""
    return name.lower()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _link_spec(text: str) -> str:
    """A citation of the technical contract ("docs/design.md §6") as a link to that page."""
    return re.sub(r"docs/design\.md (§\d+)", r"[design.md \1](../design.md)", text)
