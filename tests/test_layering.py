"""The package's layering: no import circle (function-local imports counted), no forbidden arrow,
and the report drawn from a stored run with torch absent."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nicebench

PACKAGE = Path(nicebench.__file__).parent

# (importer prefix, imported prefix, why it is forbidden)
FORBIDDEN = [
    ("nicebench.report", "torch", "the report draws a stored run without torch"),
    ("nicebench.report", "nicebench.models", "the report never runs a classifier"),
    ("nicebench.report", "nicebench.metrics", "the report reads the run's stored catalogue"),
    ("nicebench.compression", "nicebench.models", "compression is coding math, no classifier"),
    ("nicebench.compression", "nicebench.metrics", "compression is below the metrics"),
    ("nicebench.registry", "nicebench.metrics", "the registry knows MetricSpec, not metrics"),
    ("nicebench.metric_spec", "torch", "the metric catalogue is torch-free"),
    ("nicebench.store", "torch", "the run store is torch-free"),
]


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the modules it imports (package-internal ones by their module, others by their
    top-level name), every ``import`` statement counted, function-local and TYPE_CHECKING ones
    aside: ``if TYPE_CHECKING:`` imports never run."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skipped = {
            id(n) for node in ast.walk(tree) if _is_type_checking(node) for n in ast.walk(node)
        }
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            for target in targets:
                if target.startswith("nicebench"):
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                else:
                    target = target.split(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def forbidden_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule of :data:`FORBIDDEN`, with the rule's reason."""
    bad = []
    for importer, imported, why in FORBIDDEN:
        for module, edges in graph.items():
            if module == importer or module.startswith(importer + "."):
                for target in sorted(edges):
                    if target == imported or target.startswith(imported + "."):
                        bad.append(f"{module} imports {target}: {why}")
    return bad


def test_the_package_has_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_module_imports_across_a_forbidden_arrow():
    assert forbidden_arrows(import_graph()) == []


def test_a_planted_import_makes_the_checks_fail(tmp_path):
    """The checks can fail: a copy of the package with one import added at the top of the
    registry (registry → metrics, closing a circle through the metrics' registration)."""
    copy = tmp_path / "nicebench"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    registry = copy / "registry.py"
    registry.write_text(
        registry.read_text().replace(
            "from .metric_spec import MetricSpec",
            "from .metric_spec import MetricSpec\nfrom .metrics import get_metric_spec  # planted",
            1,
        )
    )
    graph = import_graph(copy)
    assert any("nicebench.registry" in c and "nicebench.metrics" in c for c in cycles(graph))
    assert any(
        b.startswith("nicebench.registry imports nicebench.metrics")
        for b in forbidden_arrows(graph)
    )


BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith(("torch.", "torchvision", "captum")):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, NoTorch())
""")


@pytest.mark.slow
def test_the_report_and_figures_are_drawn_without_torch(tiny_scenes, tmp_path):
    """``nicebench report --figures``: every figure and the report from a stored run (a real tiny
    one: a gate method, the oracle, the compression track), in a process where importing torch
    (or torchvision, captum) fails."""
    from nicebench.runner import run as run_config
    from nicebench.testing import tiny_run_config

    run = tmp_path / "run"
    cfg = tiny_run_config(
        run,
        ["random", "gradcam", "oracle", "nice"],
        codecs=["jpeg"],
        metrics=["deletion", "insertion", "pointing_game", "sanity_spearman", "compression"],
    )
    summary = run_config(cfg, progress=False)
    assert summary.ok == summary.total
    script = BLOCK_TORCH + textwrap.dedent(f"""
        from nicebench.cli import main
        code = main(["report", "--figures", {str(run)!r}])
        assert "torch" not in sys.modules, "torch was imported"
        sys.exit(code)
    """)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    figures = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert any(n.startswith("saliency_grid") for n in figures), figures
    assert any(n.startswith("rankings") for n in figures), figures
    assert (run / "report" / "index.html").stat().st_size > 10_000


#: The modules of the core a plugin may import from, each by its ``__all__``.
PUBLIC_MODULES = (
    "nicebench",
    "nicebench.metrics",
    "nicebench.models",
    "nicebench.gates",
    "nicebench.batching",
    "nicebench.codec",
    "nicebench.compression",
    "nicebench.testing",
)


def plugin_imports(folder: Path) -> list[tuple[str, str, str]]:
    """(file, module, name) of every ``from nicebench... import name`` in a plugin folder."""
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nicebench"):
                found += [(path.name, node.module, a.name) for a in node.names]
    return found


@pytest.mark.parametrize("folder", ["methods", "datasets"])
def test_plugins_import_only_the_public_api_of_the_core(folder):
    """The built-in plugins use what a third-party plugin can: the public modules' ``__all__``."""
    import importlib

    where = Path(importlib.import_module(f"nicebench.{folder}").__file__).parent
    bad = [
        f"{file}: from {module} import {name}"
        for file, module, name in plugin_imports(where)
        if module not in PUBLIC_MODULES
        or name not in getattr(importlib.import_module(module), "__all__", ())
    ]
    assert bad == []


def test_every_package_of_the_source_tree_is_installed():
    """pyproject.toml lists its packages by name: a new folder of the core must be listed, or a
    fresh install lacks it (an editable install would hide that)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        ".".join(p.parent.relative_to(root).parts)
        for p in (root / "nicebench").rglob("__init__.py")
    }
    assert folders <= listed, sorted(folders - listed)
