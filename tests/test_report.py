"""The static HTML report (``nicebench.report.html``): written, self-contained, every string escaped,
and, in real headless Chromium (Playwright driving Debian's ``chromium``), a page that loads without
console errors, sorts its tables, shows every image and switches sample images.

The browser test skips only where Playwright or Chromium is missing *and* ``NICEBENCH_REQUIRE_BROWSER``
is unset; CI (tox.ini) sets it, so there a missing browser fails the test instead of hiding it.
"""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from nicebench.report.html import render_report, write_report
from nicebench.report.tables import leaderboard
from nicebench.store import CellResult, RunStore

SECTIONS = ["leaderboard", "figures", "images", "accuracy", "timings", "failed", "settings"]
# Names a plugin, a config or a dataset could carry; each would run a script if not escaped.
EVIL_DATASET = "<script>window.__pwned = 'dataset'</script>\"'&ds"
EVIL_METHOD = "<img src=x onerror=\"window.__pwned = 'method'\">m</script>"
EVIL_ERROR = "</pre></td><script>window.__pwned = 'error'</script> & more"
EVIL_SETTING = "</script><script>window.__pwned = 'config'</script>"


# -- a synthetic store (no model, no torch): what the runner writes, made up ---------------------
def _cell(
    key,
    dataset,
    method,
    *,
    n=6,
    size=16,
    seed=0,
    kind="method",
    masks=True,
    gate=False,
    status="ok",
    error="",
):
    rng = np.random.default_rng(seed)
    res = CellResult(
        key=key,
        dataset=dataset,
        method=method,
        method_name=method,
        shard=0,
        kind=kind,
        status=status,
        error=error,
        n_images=n,
        seconds=0.5 + seed,
        explain_ms_per_image=1.0 + seed,
        peak_mem_mb=100.0,
    )
    if status != "ok":
        return res
    for i in range(n):
        res.image_rows.append((i, i % 3, i % 3, "correct", 1.0))
        if kind == "method":
            res.image_rows.append((i, i % 3, i % 3, "deletion_auc", float(rng.uniform(0, 0.5))))
            res.image_rows.append((i, i % 3, i % 3, "insertion_auc", float(rng.uniform(0.5, 1))))
            m = rng.standard_normal((size, size)).astype(np.float16)
            res.artifacts.append((i, "map", m / np.abs(m).max()))
            if gate:
                res.artifacts.append((i, "gate_mask", (m > 0).astype(np.uint8)))
        res.samples.append((i, "image", rng.integers(0, 255, (size, size, 3), dtype=np.uint8)))
        res.samples.append((i, "label", np.asarray(i % 3)))
        if masks:
            mask = np.zeros((size, size), np.uint8)
            mask[4:10, 4:10] = 1
            res.samples.append((i, "mask", mask))
    return res


def _synthetic_run(run_dir: Path, hostile: bool = False) -> Path:
    store = RunStore(run_dir)
    settings = {"n_steps": 8, "note": EVIL_SETTING} if hostile else {"n_steps": 8}
    store.record_run(
        {"datasets": ["scenes:size=16"], "methods": ["a", "b"], "settings": settings},
        {"nicebench": "0.1.0", "torch": "x"},
    )
    cells = [
        _cell("s-a", "scenes", "a", seed=1),
        _cell("s-b", "scenes", "b", seed=2, gate=True),
        _cell("s-j", "scenes", "jpeg", kind="codec"),
        _cell("f-a", "fmnist", "a", seed=3, masks=False),
        _cell("f-b", "fmnist", "b", status="failed", error="ValueError: boom"),
    ]
    if hostile:
        cells += [
            _cell("e-m", EVIL_DATASET, EVIL_METHOD, seed=4),
            _cell("e-f", "scenes", EVIL_METHOD, status="failed", error=EVIL_ERROR),
        ]
    for cell in cells:
        store.write(cell)
    store.close()
    return run_dir


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data", "poster") and value is not None:
                self.refs.append((tag, name, value))
            if name == "id":
                self.ids.add(value)


def _parse(text: str) -> _Links:
    parser = _Links()
    parser.feed(text)
    return parser


def test_report_written_self_contained_with_every_section(tmp_path):
    run_dir = _synthetic_run(tmp_path / "run")
    figures = run_dir / "figures"
    figures.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(figures / "rate_accuracy_scenes.png")
    Image.new("RGB", (2400, 900), "blue").save(figures / "wide.png")  # a 300-dpi figure
    (figures / "wide.pdf").write_bytes(b"%PDF-1.4\n")
    (figures / "broken.png").write_bytes(b"not a png")
    path = write_report(run_dir)
    assert path == run_dir / "report" / "index.html" and path.is_file()
    text = path.read_text()
    links = _parse(text)
    assert set(SECTIONS) <= links.ids
    for tag, attr, value in links.refs:  # nothing from the network, nothing from another origin
        assert not value.startswith("//") and "://" not in value, (tag, attr, value)
        if tag in ("img", "script", "link") and attr in ("src", "href"):
            assert value.startswith(("data:", "#")), (tag, attr, value)
    assert "<script src" not in text and 'rel="stylesheet"' not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    # the figure, embedded, with its file name as caption and a link to the file beside it
    assert (
        "rate_accuracy_scenes.png" in text and 'href="../figures/rate_accuracy_scenes.png"' in text
    )
    assert 'width="900" height="338" alt="wide.png"' in text  # shrunk to screen resolution
    assert 'href="../figures/wide.pdf"' in text
    assert 'alt="broken.png"' not in text and "broken.png: not a readable PNG" in text
    # leaderboard per dataset; the failed cell shows with its error; settings and versions
    assert text.count('<table class="board sortable"') == 2
    assert "ValueError: boom" in text and "Failed cells (1)" in text
    assert "n_steps" in text and "0.1.0" in text
    # per-image browser: one panel per sample image of each dataset, the first one shown
    assert text.count('class="sample"') == 12 and text.count('class="sample" data-image="0">') == 2
    # the picker names the classes of a dataset whose plugin declares them (scenes' second: crescent)
    assert "label 1 (crescent)" in text


def test_hostile_names_are_escaped(tmp_path):
    text = render_report(_synthetic_run(tmp_path / "run", hostile=True))
    for evil in (EVIL_DATASET, EVIL_METHOD, EVIL_ERROR, EVIL_SETTING):
        assert evil not in text
    assert "<script>window.__pwned" not in text and "<img src=x" not in text
    assert text.count("<script") == 1  # the page's own script, nothing else
    assert "&lt;script&gt;window.__pwned = &#x27;dataset&#x27;&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&quot;window.__pwned" in text


def test_keys_select_cells_and_missing_store(tmp_path):
    run_dir = _synthetic_run(tmp_path / "run")
    text = render_report(run_dir, keys={"s-a"})
    assert 'data-v="a"' in text and 'data-v="b"' not in text and "fmnist" not in text
    with pytest.raises(FileNotFoundError, match="no run store"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "store.sqlite").exists()


def test_empty_store_and_tile_sizes(tmp_path):
    store = RunStore(tmp_path / "run")
    store.record_run({"datasets": []}, {})
    store.close()
    text = render_report(tmp_path / "run")
    assert set(SECTIONS) <= _parse(text).ids and "No cells in this run yet" in text
    from nicebench.report.html import _tile_shape

    assert _tile_shape(28, 28) == (None, (112, 112))  # small: blown up by a whole factor
    assert _tile_shape(64, 32) == (None, (128, 64))
    assert _tile_shape(224, 448) == ((80, 160), (80, 160))  # large: drawn shrunk


def test_browser_check_fails_when_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("NICEBENCH_CHROMIUM", raising=False)
    monkeypatch.delenv("NICEBENCH_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        _chromium()
    monkeypatch.setenv("NICEBENCH_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        _chromium()


# -- the browser test ------------------------------------------------------------------------------
def _chromium() -> str:
    """Debian's Chromium and Playwright for Python, or a skip (a failure when
    NICEBENCH_REQUIRE_BROWSER is set)."""
    required = os.environ.get("NICEBENCH_REQUIRE_BROWSER", "") not in ("", "0")
    exe = (
        os.environ.get("NICEBENCH_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if not exe:
        missing.append("chromium (apt-get install chromium)")
    if missing:
        why = "browser test needs " + " and ".join(missing)
        if required:
            pytest.fail(why + "; NICEBENCH_REQUIRE_BROWSER is set, so it may not skip")
        pytest.skip(why)
    return exe


@pytest.fixture(scope="module")
def tiny_report_run(tiny_scenes, tmp_path_factory):
    """A real tiny run (four methods, one a gate method, and the JPEG codec's compression track)
    plus hostile cells written straight into its store, and its report."""
    from nicebench.runner import run
    from nicebench.testing import tiny_run_config

    out = tmp_path_factory.mktemp("report-run")
    cfg = tiny_run_config(
        out,
        ["random", "center", "gradcam", "oracle"],
        codecs=["jpeg"],
        metrics=["deletion", "insertion", "pointing_game", "mask_auroc", "compression"],
    )
    summary = run(cfg, progress=False)
    assert summary.ok == summary.total
    store = RunStore(out)
    scenes = store.cells().dataset.iloc[0]
    latest = store.latest_run()  # a config value from a user: shown as text too
    store.record_run(
        {**latest["config"], "settings": {"n_steps": 8, "note": EVIL_SETTING}}, latest["versions"]
    )
    store.write(_cell("evil-ok", EVIL_DATASET, EVIL_METHOD, n=4, size=32, seed=5))
    store.write(_cell("evil-b", EVIL_DATASET, "center", n=4, size=32, seed=6))
    store.write(_cell("evil-failed", scenes, EVIL_METHOD, status="failed", error=EVIL_ERROR))
    store.close()
    from nicebench.report.figures import write_figures

    write_figures(out, formats=("png",))  # every cell, the hostile ones too
    assert list((out / "figures").glob("rate_accuracy_*.png")), (
        "the run drew no rate-accuracy figure"
    )
    return out, write_report(out)


class _Figures(HTMLParser):
    """The report's figures: (embedded image's data URI, width attribute, [links])."""

    def __init__(self):
        super().__init__()
        self.figures: list[tuple[str, int, list[str]]] = []
        self._in_figure = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "class" not in a:
            self._in_figure = True
        elif self._in_figure and tag == "img":
            self.figures.append((a["src"], int(a["width"]), []))
        elif self._in_figure and tag == "a":
            self.figures[-1][2].append(a["href"])

    def handle_endtag(self, tag):
        self._in_figure = self._in_figure and tag != "figure"


def test_report_embeds_screen_sized_figures_linking_the_full_files(tiny_report_run):
    """Each figure is embedded at screen resolution (so a reference report stays a few MB) and
    links its 300-dpi file beside the report, which exists and is the larger one."""
    import base64
    import io
    import urllib.parse

    from PIL import Image

    from nicebench.report.html import _FIGURE_MAX_WIDTH

    run_dir, path = tiny_report_run
    parser = _Figures()
    parser.feed(path.read_text())
    drawn = sorted((run_dir / "figures").glob("*.png"))
    assert len(parser.figures) == len(drawn) >= 3
    for uri, width, links in parser.figures:
        head, data = uri.split(",", 1)
        assert head == "data:image/webp;base64"
        raw = base64.b64decode(data)
        with Image.open(io.BytesIO(raw)) as shown:
            assert shown.format == "WEBP" and shown.width == width <= _FIGURE_MAX_WIDTH
        assert links and links[0].endswith(".png")
        full = (path.parent / urllib.parse.unquote(links[0])).resolve()
        assert full.parent == (run_dir / "figures").resolve() and full.is_file(), links
        with Image.open(full) as original:
            assert original.width > width and original.info["dpi"][0] > 250, full.name
        assert len(raw) < min(200_000, full.stat().st_size), (full.name, len(raw))
    assert path.stat().st_size < 1_500_000  # the whole page


def test_report_in_headless_chromium(tiny_report_run):
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    run_dir, path = tiny_report_run
    store = RunStore(run_dir)
    board = leaderboard(store)
    store.close()
    expected = {ds: list(g.method) for ds, g in board.groupby("dataset", sort=False)}
    assert EVIL_DATASET in expected and len(expected) == 2

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on(
                "console",
                lambda m: (
                    problems.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "request",
                lambda r: (
                    problems.append(f"request: {r.url}")
                    if not r.url.startswith(("file:", "data:"))
                    else None
                ),
            )
            page.goto(path.as_uri(), wait_until="load")

            # every image loaded, none broken
            images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth])")
            assert len(images) > 20 and all(done and w > 0 for done, w in images)

            # one leaderboard table per dataset, one row per (dataset, method)
            tables = page.locator("table.board")
            assert tables.count() == len(expected)
            for t in range(tables.count()):
                table = tables.nth(t)
                dataset = table.get_attribute("data-dataset")
                names = table.locator("tbody td.name").all_inner_texts()
                assert names == expected[dataset], dataset

            # the hostile names show as text (and ran nothing)
            assert page.evaluate("window.__pwned") is None
            evil_table = page.locator("table.board").nth(list(expected).index(EVIL_DATASET))
            assert EVIL_METHOD in evil_table.locator("tbody td.name").all_inner_texts()
            assert EVIL_DATASET in page.locator("#leaderboard h3").all_inner_texts()
            assert EVIL_ERROR in page.locator("#failed pre").all_inner_texts()
            assert EVIL_SETTING in page.locator("#settings").inner_text()

            # clicking a header sorts: deletion (lower is better) best first, then flipped
            scenes = page.locator("table.board").first

            def column(name: str) -> list[str]:
                idx = scenes.locator("thead th").all_inner_texts()
                col = next(i for i, h in enumerate(idx) if h.split()[0] == name)
                return scenes.locator(f"tbody tr td:nth-child({col + 1})").evaluate_all(
                    "tds => tds.map(td => td.getAttribute('data-v'))"
                )

            header = scenes.locator("thead th", has_text="deletion_auc").locator("button")
            header.click()
            values = [float(v) for v in column("deletion_auc") if v]
            assert values == sorted(values) and len(values) >= 4
            assert column("deletion_auc")[-1] == ""  # the codec's empty cell sorts last
            header.click()
            values = [float(v) for v in column("deletion_auc") if v]
            assert values == sorted(values, reverse=True)
            scenes.locator("thead th", has_text="method").first.locator("button").click()
            names = scenes.locator("tbody td.name").all_inner_texts()
            assert sorted(names) == sorted(expected[list(expected)[0]])
            plain = [n for n in names if n != EVIL_METHOD]
            assert plain == sorted(plain) and len(plain) == 5

            # the per-image browser switches images: select, next and previous
            browser_div = page.locator(".browser").first
            visible = browser_div.locator(".sample:not([hidden])")
            assert visible.count() == 1 and visible.get_attribute("data-image") == "0"
            first_src = visible.locator("img").first.get_attribute("src")
            n_tiles = visible.locator(".tile").count()
            assert n_tiles >= 2 + 4  # image, ground truth, a map per method (+ the gate)
            options = browser_div.locator("select option").all_inner_texts()
            assert len(options) == 8
            browser_div.locator("select").select_option(index=3)
            visible = browser_div.locator(".sample:not([hidden])")
            assert visible.count() == 1 and visible.get_attribute("data-image") == "3"
            assert visible.locator("img").first.get_attribute("src") != first_src
            assert visible.locator("img").first.is_visible()
            assert visible.locator("table.scores tbody tr").count() == 4
            browser_div.locator("button.next").click()
            assert browser_div.locator(".sample:not([hidden])").get_attribute("data-image") == "4"
            browser_div.locator("button.prev").click()
            browser_div.locator("button.prev").click()
            assert browser_div.locator(".sample:not([hidden])").get_attribute("data-image") == "2"
            assert page.evaluate("window.__pwned") is None
            assert not problems, problems
        finally:
            browser.close()


def test_leaderboard_is_computed_once_per_store_state(tmp_path, monkeypatch):
    """The tables, figures and report of a run read one leaderboard (computed once); a new cell
    or a value changed in place gives a new one."""
    import nicebench.report.tables as T

    run_dir = _synthetic_run(tmp_path / "run")
    calls = []
    real = T._leaderboard
    monkeypatch.setattr(T, "_leaderboard", lambda *a: calls.append(1) or real(*a))
    store = RunStore(run_dir)
    first = leaderboard(store)
    first.loc[:, "deletion_auc"] = -1.0  # a caller's edit stays in its copy
    again = leaderboard(store)
    assert len(calls) == 1 and (again.deletion_auc.dropna() >= 0).all()
    with store.conn:
        store.conn.execute(
            "UPDATE image_values SET value = value + 1 WHERE metric = 'deletion_auc'"
        )
    changed = leaderboard(store)
    assert len(calls) == 2
    row = (changed.dataset == "scenes") & (changed.method == "a")
    assert changed[row].deletion_auc.item() == pytest.approx(again[row].deletion_auc.item() + 1)
    store.write(_cell("s-c", "scenes", "c", seed=5))
    assert "c" in set(leaderboard(store).method) and len(calls) == 3
    store.close()
