"""Paper figures and the LaTeX leaderboard from a tiny run: every file is written, and each plot
holds what it claims (one curve per method, the sample images in the grid's order, sorted forest
plots, λ in order, coded examples at about equal bytes)."""

from __future__ import annotations

import io
import re
import shutil

import matplotlib
import matplotlib.pyplot
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nicebench.config import PluginSpec, RunConfig, parse_specs
from nicebench.report import figures as F
from nicebench.report.style import DOUBLE_COLUMN, SINGLE_COLUMN, Palette
from nicebench.report.tables import compression_points, higher_is_better, leaderboard, write_tables
from nicebench.runner import run
from nicebench.store import CellResult, RunStore
from nicebench.testing import TINY_SCENES

matplotlib.use("Agg")

TINY = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
QUICK = "epochs=1,n_train=64,batch_size=32"
METHODS = ["random", "center", "gradcam", "oracle", f"nice:lam=0.5,{QUICK}", f"nice:lam=2,{QUICK}"]


@pytest.fixture(scope="module")
def tiny_run(tiny_scenes, tmp_path_factory):
    """One tiny run for the module: scenes at 32 px (it has masks), the sanity baselines,
    Grad-CAM, the oracle and NICE at two λ, JPEG as the codec; then its figures."""
    out = tmp_path_factory.mktemp("figrun")
    cfg = RunConfig(
        datasets=parse_specs(TINY),
        methods=parse_specs(METHODS),
        codecs=[PluginSpec.make("jpeg", {"qualities": [10, 30, 50, 75, 90]})],
        n_images=10,
        shard_size=5,
        batch_size=10,
        out=str(out),
        settings={"n_steps": 8},
        metrics=[
            "deletion",
            "insertion",
            "pointing_game",
            "mask_share",
            "masked_accuracy",
            "compression",
        ],
    )
    summary = run(cfg, progress=False)
    assert not summary.failed, summary.failed
    paths = F.write_figures(out)
    store = RunStore(out)
    yield out, store, paths
    store.close()


def _dataset(store):
    return store.cells().dataset.iloc[0]


def test_every_figure_file_is_written(tiny_run):
    out, store, paths = tiny_run
    names = {p.name for p in paths}
    tag = F._safe(_dataset(store))
    stems = [
        f"saliency_grid_{tag}",
        "curves",
        "forest_deletion_auc",
        "forest_insertion_auc",
        "forest_pointing_game",
        "forest_mask_share",
        "forest_masked_accuracy",
        f"rate_accuracy_{tag}",
        f"nice_masks_over_lambda_{tag}",
        "nice_lambda_tradeoff",
    ]
    for stem in stems:
        for fmt in ("png", "pdf"):
            assert f"{stem}.{fmt}" in names, stem
    assert "leaderboard.tex" in names
    assert any(n.startswith("mixed_resolution") for n in names)  # the track kept coded files
    for p in paths:
        assert p.parent == out / "figures" and p.stat().st_size > 0
        if p.suffix == ".pdf":
            assert p.read_bytes()[:5] == b"%PDF-"
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert round(im.info["dpi"][0]) == 300


def test_figures_drawn_in_processes_are_the_serial_ones(tiny_run, tmp_path):
    """write_figures on a pool of processes writes the same files, byte for byte (PNG), in the
    same order, as drawing them one after another in this process."""
    import shutil

    out, _, _ = tiny_run
    copies = {}
    for workers in (1, 2):
        run_dir = tmp_path / f"w{workers}"
        run_dir.mkdir()
        shutil.copy(out / "store.sqlite", run_dir / "store.sqlite")
        paths = F.write_figures(run_dir, formats=("png",), workers=workers)
        copies[workers] = [(p.name, p.read_bytes()) for p in paths]
    assert [n for n, _ in copies[1]] == [n for n, _ in copies[2]]
    assert len(copies[1]) > 8
    for (name, one), (_, two) in zip(copies[1], copies[2], strict=True):
        assert one == two, name


def test_figure_workers_follow_the_environment(monkeypatch):
    monkeypatch.setenv("NICEBENCH_FIGURE_WORKERS", "1")
    assert F.figure_workers(20) == 1
    monkeypatch.setenv("NICEBENCH_FIGURE_WORKERS", "3")
    assert F.figure_workers(2) == 2  # never more than there are figures
    monkeypatch.delenv("NICEBENCH_FIGURE_WORKERS")
    assert 1 <= F.figure_workers(20) <= 4


def test_write_tables_draws_nothing(tiny_run, tmp_path):
    """The rate–accuracy figure moved from write_tables into write_figures."""
    _, store, _ = tiny_run
    write_tables(store, None, tmp_path)
    assert (tmp_path / "compression_points.csv").exists()
    assert not (tmp_path / "figures").exists()


def test_saliency_grid_rows_are_the_sample_images_in_order(tiny_run):
    _, store, _ = tiny_run
    dataset = _dataset(store)
    fig = F.saliency_grid(store, dataset, n_images=6)
    axes = np.array(fig.axes).reshape(6, -1)
    maps = store.artifacts("map")
    methods = list(dict.fromkeys(maps.method))
    assert [ax.get_title().replace("\n", "") for ax in axes[0]] == ["image", *methods]
    samples = store.samples(dataset)
    images = samples[samples.name == "image"].sort_values("image_index")
    assert fig.nicebench_index == images.image_index.tolist()[:6] == list(range(6))
    for r, (_, row) in enumerate(images.head(6).iterrows()):
        drawn = np.asarray(axes[r, 0].images[0].get_array())
        np.testing.assert_array_equal(drawn, row["array"])  # the image itself, in row order
        assert axes[r, 0].get_ylabel().startswith(f"#{row.image_index}")
        for c, method in enumerate(methods, start=1):
            kept = maps[(maps.method == method) & (maps.image_index == row.image_index)]
            overlay = np.asarray(axes[r, c].images[1].get_array())
            np.testing.assert_allclose(overlay, F._stretched(kept.iloc[0]["array"]), atol=1e-3)
    # the ground-truth outline on every map panel (scenes has masks); gate outlines on NICE's
    assert all(len(ax.collections) >= 1 for ax in axes[:, 1:].ravel())
    gates = store.artifacts("gate_mask")
    nice = [(c, m) for c, m in enumerate(methods, start=1) if m.startswith("nice")]
    assert nice
    for r in range(6):
        for c, m in nice:
            g = gates[(gates.method == m) & (gates.image_index == r)].iloc[0]["array"]
            assert len(axes[r, c].collections) == 1 + int(0 < g.sum() < g.size)
    assert fig.get_figwidth() <= DOUBLE_COLUMN + 0.05
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ground-truth object", "gate mask (gate methods)"]


def test_curves_one_per_method_with_band_and_labels(tiny_run):
    _, store, _ = tiny_run
    fig = F.curves_figure(store)
    axes = np.array(fig.axes).reshape(2, -1)
    assert axes.shape == (2, 1)  # deletion and insertion; one dataset
    curves = store.artifacts("curve/%")
    methods = list(dict.fromkeys(curves.method))
    for ax, name in zip(axes[:, 0], ["deletion", "insertion"], strict=True):
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert [ln.get_label() for ln in lines] == methods  # one curve per method
        assert len(ax.collections) == len(methods)  # one bootstrap band each
        assert name.capitalize() in ax.get_ylabel() and "p(target class)" in ax.get_ylabel()
        for ln in lines:
            kept = curves[(curves.method == ln.get_label()) & (curves.name == f"curve/{name}")]
            mean = np.stack(kept["array"].to_list()).mean(0)
            np.testing.assert_allclose(ln.get_ydata(), mean, rtol=1e-5)
            assert ln.get_xdata()[0] == 0 and ln.get_xdata()[-1] == 1
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        assert np.isfinite(band).all()
    assert "share of pixels" in axes[-1, 0].get_xlabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == methods


def test_wrap_label():
    assert F.wrap_label("gradcam") == "gradcam"
    wrapped = F.wrap_label("nice(batch_size=32,epochs=1,lam=0.5,n_train=64)", 14)
    assert wrapped.replace("\n", "") == "nice(batch_size=32,epochs=1,lam=0.5,n_train=64)"
    assert wrapped.split("\n")[0] == "nice" and max(map(len, wrapped.split("\n")[2:])) <= 14


def test_bootstrap_band_brackets_the_mean():
    rng = np.random.default_rng(1)
    curves = rng.random((40, 9))
    mean, lo, hi = F._bootstrap_band(curves)
    np.testing.assert_allclose(mean, curves.mean(0))
    assert (lo <= mean).all() and (mean <= hi).all() and (hi - lo < 0.3).all()
    # about ±1.96 standard errors
    se = curves.std(0, ddof=1) / np.sqrt(40)
    np.testing.assert_allclose((hi - lo) / (2 * 1.96 * se), 1, atol=0.25)


def test_forest_plot_sorted_best_first_with_baselines_marked(tiny_run):
    _, store, _ = tiny_run
    board = leaderboard(store)
    for metric in ("deletion_auc", "pointing_game"):
        fig = F.forest_figure(board, metric)
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        ticks = list(ax.get_yticks())
        # top first
        shown = [lab for _, lab in sorted(zip(ticks, labels, strict=True), reverse=True)]
        part = board[board[metric].notna()]
        expected = part.sort_values(
            metric, ascending=not higher_is_better()[metric], kind="stable"
        ).method.tolist()
        # variants of one plugin by the parameters they differ in, long labels cut at 30
        assert shown == F._tick_labels(expected, width=30)
        assert "nice(lam=0.5)" in shown
        assert ("↓" if metric == "deletion_auc" else "↑") in ax.get_xlabel()
        italic = {t.get_text() for t in ax.get_yticklabels() if t.get_fontstyle() == "italic"}
        assert italic == {"random", "center", "oracle"}
    assert F.forest_figure(board, "no_such_metric") is None
    assert "deletion_auc" in F.forest_metrics(board) and "status" not in F.forest_metrics(board)


def test_rate_accuracy_points_and_fronts(tiny_run):
    _, store, _ = tiny_run
    points = compression_points(store)
    dataset = _dataset(store)
    fig = F.rate_accuracy_figure(points, dataset)
    ax = fig.axes[0]
    labelled = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    methods = set(points[points.kind == "method"].method)
    codecs = set(points[points.kind == "codec"].method)
    assert set(labelled) == methods | {f"{c} (quality sweep)" for c in codecs} | {
        "reference image",
        "1 point below it (headline)",
    }
    assert "on_front" in points  # the track marks each method's front: the front is the line
    for m in methods:
        line, on = labelled[m], points[(points.method == m) & points.on_front]
        assert line.get_linestyle() != "None"
        np.testing.assert_allclose(np.sort(line.get_xdata()), np.sort(on.ratio))
    assert ax.get_xlabel().startswith("bytes") and "accuracy" in ax.get_ylabel()
    # the second panel: the top 5 points of accuracy, where the headline is read, unlabelled
    assert len(fig.axes) == 2 and fig.get_figwidth() == DOUBLE_COLUMN
    ref = 100 * float(points[points.dataset == dataset].accuracy_reference.mean())
    assert fig.axes[1].get_ylim()[0] == pytest.approx(ref - 5)
    assert all(ln.get_label().startswith("_") for ln in fig.axes[1].get_lines())
    one = F.rate_accuracy_figure(points, dataset, zoom=0)
    assert len(one.axes) == 1 and one.get_figwidth() == SINGLE_COLUMN
    # points without a front (older runs): plain markers, every operating point drawn
    plain = points.drop(columns="on_front")
    fig = F.rate_accuracy_figure(plain, dataset)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    for m in methods:
        assert lines[m].get_linestyle() == "None"
        assert len(lines[m].get_xdata()) == (plain.method == m).sum()
    assert F.rate_accuracy_figure(points.iloc[:0], dataset) is None


def test_lambda_figures(tiny_run):
    _, store, _ = tiny_run
    sweeps = F.lambda_sweeps(store)
    assert sweeps.lam.tolist() == [0.5, 2.0] and sweeps.sweep.nunique() == 1
    dataset = _dataset(store)
    fig = F.lambda_mask_grid(store, dataset, n_images=4)
    axes = np.array(fig.axes).reshape(4, 3)
    assert [ax.get_title() for ax in axes[0]] == ["image", "λ = 0.5", "λ = 2"]
    gates = store.artifacts("gate_mask")
    samples = store.samples(dataset)
    for r in range(4):
        image = samples[(samples.name == "image") & (samples.image_index == r)].iloc[0]["array"]
        for c, method in enumerate(sweeps.method, start=1):
            m = gates[(gates.method == method) & (gates.image_index == r)].iloc[0]["array"]
            drawn = np.asarray(axes[r, c].images[0].get_array())
            np.testing.assert_array_equal(drawn, F.masked_view(image, m))
            np.testing.assert_array_equal(drawn[m > 0], image[m > 0])  # open gates: the image
            assert (drawn[m == 0] != image[m == 0]).any(axis=-1).all()  # closed: tinted
    fig = F.lambda_tradeoff(store)
    board = leaderboard(store).set_index("method")
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["Masked accuracy", "Deletion AUC"]
    for ax, col in zip(axes, ["masked_accuracy", "deletion_auc"], strict=True):
        assert ax.containers[0].get_label() == sweeps.sweep.iloc[0]
        line = ax.containers[0].lines[0]  # the errorbar's data line
        np.testing.assert_allclose(line.get_xdata(), board.loc[sweeps.method, "mask_share"])
        np.testing.assert_allclose(line.get_ydata(), board.loc[sweeps.method, col])
        assert [t.get_text() for t in ax.texts] == ["λ=0.5", "λ=2"]
        assert "mask share" in ax.get_xlabel()


def _parse_latex(tex: str) -> tuple[list[str], dict[str, list[list[str]]]]:
    body = tex.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [r.strip() for r in body.split("\\\\") if r.strip()]
    header = [c.strip() for c in rows[0].split("&")]
    blocks: dict[str, list[list[str]]] = {}
    current = None
    for r in rows[1:]:
        r = r.replace("\\midrule", "").strip()
        m = re.match(r"\\multicolumn\{(\d+)\}\{l\}\{\\textit\{(.*)\}\}$", r)
        if m:
            assert int(m.group(1)) == len(header)
            current = m.group(2)
            blocks[current] = []
            continue
        cells = [c.strip() for c in r.split("&")]
        assert len(cells) == len(header), r
        blocks[current].append(cells)
    return header, blocks


def test_latex_leaderboard_has_the_leaderboards_rows_and_columns(tiny_run):
    out, store, _ = tiny_run
    board = leaderboard(store)
    tex = (out / "figures" / "leaderboard.tex").read_text()
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    assert tex.count("{") == tex.count("}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert rule in tex
    header, blocks = _parse_latex(tex)
    cols = F.latex_columns(board)
    assert "deletion_auc" in cols and "bd_rate" in cols
    arrows = {True: "$\\uparrow$", False: "$\\downarrow$"}
    assert header == ["Method"] + [
        f"{F._tex(F.METRIC_LABELS.get(c, c))} {arrows[higher_is_better().get(c, True)]}"
        for c in cols
    ]
    assert re.search(r"\\begin\{tabular\}\{l(r+)\}", tex).group(1) == "r" * len(cols)
    assert list(blocks) == [F._tex(d) for d in dict.fromkeys(board.dataset)]
    rows = next(iter(blocks.values()))
    names = [r[0].replace(" (codec)", "") for r in rows]
    assert names == [F._tex(m) for m in board.method]
    # mean [interval], the best of a column in bold
    j = cols.index("deletion_auc") + 1
    ranked = board[board.method != "oracle"]
    best = ranked.method.iloc[int(np.argmin(ranked.deletion_auc))]
    row = rows[names.index(F._tex(best))]
    assert row[j].startswith("\\textbf{") and "\\scriptsize[" in row[j]
    lo, hi = board.set_index("method").loc[best, ["deletion_auc_lo", "deletion_auc_hi"]]
    assert f"[{lo:.3f}, {hi:.3f}]" in row[j]
    assert sum(r[j].startswith("\\textbf") for r in rows) >= 1
    jpeg = next(r for r in rows if r[0].endswith("(codec)"))
    assert jpeg[j] == "--"  # a codec explains nothing


def test_latex_escapes_names():
    board = pd.DataFrame(
        {
            "dataset": ["d_1"],
            "model": ["default"],
            "method": ["a&b_%<script>"],
            "kind": ["method"],
            "deletion_auc": [0.5],
        }
    )
    tex = F.leaderboard_latex(board, {"deletion_auc": False})
    assert "a\\&b\\_\\%\\textless{}script\\textgreater{}" in tex and "d\\_1" in tex


# -- a store written by hand: two datasets, no masks, no compression, coded examples ---------------
def _png(image: np.ndarray, quality: int | None = None) -> np.ndarray:
    buf = io.BytesIO()
    im = Image.fromarray(image)
    im.save(buf, format="JPEG", quality=quality) if quality else im.save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _hand_store(tmp_path, coded: bool = True, n_methods: int = 3, n_images: int = 6, size=16):
    store = RunStore(tmp_path)
    rng = np.random.default_rng(0)
    methods = [
        "random",
        "gradcam",
        "nice",
        "ig",
        "lime",
        "rise",
        "occlusion",
        "saliency",
        "edges",
        "center",
        "rtsal",
        "nice-opt",
        "oracle",
    ][:n_methods]
    for dataset in ("toy-a", "toy-b"):
        images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
        samples = [(i, "image", images[i]) for i in range(min(n_images, 16))]
        samples += [(i, "label", np.asarray(i % 3)) for i in range(min(n_images, 16))]
        units = [(m, "method") for m in methods] + [("jpeg", "codec")]
        for method, kind in units:
            arts, rows = [], []
            if kind == "method":
                for i in range(n_images):
                    d = np.sort(rng.random(9))[::-1].astype(np.float32)
                    arts += [(i, "curve/deletion", d), (i, "curve/insertion", d[::-1].copy())]
                    rows.append((i, 0, 0, "deletion_auc", float(d.mean())))
                    if i < 16:
                        arts.append((i, "map", rng.random((size, size)).astype(np.float16)))
                        if method == "nice":
                            arts.append(
                                (i, "gate_mask", (rng.random((size, size)) > 0.5).astype(np.uint8))
                            )
            if coded:
                for i in range(min(n_images, 2)):
                    if kind == "codec":
                        arts += [(i, f"coded/q={q}", _png(images[i], q)) for q in (10, 50, 90)]
                    else:
                        arts += [
                            (i, "coded/keep=0.2", _png(images[i], 40)),
                            (i, "coded/keep=0.5", _png(images[i], 70)),
                        ]
            store.write(
                CellResult(
                    key=f"{dataset}-{method}",
                    dataset=dataset,
                    method=method,
                    method_name=method,
                    shard=0,
                    kind=kind,
                    n_images=n_images,
                    explain_ms_per_image=1.0,
                    image_rows=rows,
                    artifacts=arts,
                    samples=samples,
                    spec={"method": method},
                )
            )
    return store


def test_mixed_resolution_examples_at_nearest_bytes(tmp_path):
    store = _hand_store(tmp_path)
    fig = F.mixed_resolution_examples(store, "toy-a")
    coded = store.artifacts("coded/%")
    coded = coded[(coded.dataset == "toy-a") & (coded.image_index == 0)]
    codec = coded[coded.kind == "codec"]
    sizes = {n.split("/", 1)[1]: len(a) for n, a in zip(codec.name, codec["array"], strict=True)}
    assert [p[0] for p in fig.nicebench_panels] == ["random", "gradcam", "nice"]
    for method, point, nbytes, cpoint, cbytes in fig.nicebench_panels:
        assert point == "keep=0.2"  # no gate point: the keep share nearest 0.2
        kept = coded[(coded.method == method) & (coded.name == f"coded/{point}")]
        assert nbytes == len(kept.iloc[0]["array"])
        assert cbytes == sizes[cpoint] == min(sizes.values(), key=lambda b: abs(b - nbytes))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert "original" in titles and "gradcam\nkeep=0.2" in titles
    # the decoded file is what is drawn
    top = next(ax for ax in fig.axes if ax.get_title() == "gradcam\nkeep=0.2")
    data = coded[(coded.method == "gradcam") & (coded.name == "coded/keep=0.2")].iloc[0]["array"]
    with Image.open(io.BytesIO(data.tobytes())) as im:
        np.testing.assert_array_equal(np.asarray(top.images[0].get_array()), np.asarray(im))
    assert (
        F.mixed_resolution_examples(store, "toy-a", point="keep=0.5").nicebench_panels[0][1]
        == "keep=0.5"
    )
    paths = F.write_figures(tmp_path)
    names = {p.name for p in paths}
    assert {"mixed_resolution_toy-a.png", "mixed_resolution_toy-b.pdf"} <= names
    # keys: only these cells (here toy-b's) are drawn
    shutil.rmtree(tmp_path / "figures")
    keys = set(store.cells().query("dataset == 'toy-b'").key)
    names = {p.name for p in F.write_figures(tmp_path, formats=["png"], keys=keys)}
    assert "mixed_resolution_toy-b.png" in names and "saliency_grid_toy-b.png" in names
    assert not any("toy-a" in n for n in names)
    store.close()


def test_a_run_without_masks_compression_or_sweep_draws_what_it_has(tmp_path):
    store = _hand_store(tmp_path, coded=False)
    store.close()
    paths = F.write_figures(tmp_path, formats=["png"])
    names = sorted(p.name for p in paths)
    assert names == [
        "curves.png",
        "forest_deletion_auc.png",
        "leaderboard.tex",
        "rankings_toy-a.png",
        "rankings_toy-b.png",
        "saliency_grid_toy-a.png",
        "saliency_grid_toy-b.png",
        "validity_curves_toy-a.png",
        "validity_curves_toy-b.png",
    ]
    store = RunStore(tmp_path)
    fig = F.curves_figure(store)
    assert np.array(fig.axes).shape == (4,)  # deletion/insertion × two datasets
    assert [ax.get_title() for ax in fig.axes[:2]] == ["toy-a", "toy-b"]
    grid = F.saliency_grid(store, "toy-a")
    assert legend_texts(grid) == ["gate mask (gate methods)"]  # no ground truth: no outline
    assert F.lambda_mask_grid(store, "toy-a") is None and F.lambda_tradeoff(store) is None
    assert F.mixed_resolution_examples(store, "toy-a") is None
    store.close()
    with pytest.raises(FileNotFoundError, match="no store"):
        F.write_figures(tmp_path / "nothing")


def legend_texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []


def test_default_leaderboard_sized_run_draws_in_seconds(tmp_path):
    """13 methods, 2 datasets, 100 images: every figure in well under a minute on a busy CPU."""
    import time

    store = _hand_store(tmp_path, coded=True, n_methods=13, n_images=100, size=64)
    store.close()
    t0 = time.perf_counter()
    paths = F.write_figures(tmp_path, formats=["png"])
    assert len(paths) >= 7
    assert time.perf_counter() - t0 < 60


def test_palette_is_stable_and_distinct():
    a = Palette(["gradcam", "nice", "zz-new", "random"])
    b = Palette(["zz-new", "random", "nice", "ig", "gradcam"])
    for m in ("gradcam", "nice", "random"):
        assert a.line(m) == b.line(m)  # built-ins and baselines keep their style
    many = Palette([f"m{i}" for i in range(20)])
    styles = {tuple(map(str, many.line(f"m{i}").values())) for i in range(20)}
    assert len(styles) == 20  # more methods than colours: line styles and markers tell them apart
    assert Palette(codecs=["jpeg", "webp"]).line("webp", "codec")["color"] == "#404040"


def test_the_run_keeps_coded_examples_that_the_rows_count(tiny_run):
    """The compression track keeps the files of the first 2 sample images at every operating
    point, byte for byte the files its rows count, and the mixed-resolution figure shows them."""
    import io

    from PIL import Image

    out, store, paths = tiny_run
    coded = store.artifacts("coded/%")
    assert set(coded.image_index) == {0, 1}
    rows = store.tables("compression")
    for kind in ("method", "codec"):
        part = coded[coded.kind == kind]
        assert len(part), kind
        table = rows[rows.kind == kind]
        for r in part.itertuples():
            match = table[
                (table.method == r.method)
                & (table.point == r.name[len("coded/") :])
                & (table.image == r.image_index)
            ]
            if kind == "method" and "track_codec" in match:  # the reference codec's files
                match = match[match.track_codec == match.bd_codec]
            assert len(match) == 1, (r.method, r.name)
            assert len(r.array) == int(match.bytes.iloc[0])
            assert Image.open(io.BytesIO(r.array.tobytes())).size == (32, 32)
    assert any(p.name.startswith("mixed_resolution_") for p in paths)


def test_maps_are_stretched_min_to_max_of_their_positive_part():
    offset = np.array([[0.6, 0.7], [0.8, 1.0]], dtype=np.float16)  # RISE-like: a high floor
    np.testing.assert_allclose(F._stretched(offset), [[0, 0.25], [0.5, 1]], atol=1e-3)
    signed = np.array([[-1.0, 0.0], [0.5, 1.0]], dtype=np.float16)  # negative evidence: 0
    np.testing.assert_allclose(F._stretched(signed), [[0, 0], [0.5, 1]])
    assert not F._stretched(np.zeros((2, 2), np.float16)).any()


@pytest.fixture(scope="module")
def cascade_run(tiny_scenes, tmp_path_factory):
    """A tiny run with the full cascade: random (ignores the model) and two gradient methods."""
    out = tmp_path_factory.mktemp("cascaderun")
    cfg = RunConfig(
        datasets=parse_specs(TINY),
        methods=parse_specs(["random", "saliency", "gradcam"]),
        codecs=[],
        n_images=6,
        shard_size=6,
        batch_size=6,
        out=str(out),
        metrics=["cascade_spearman", "cascade_ssim"],
        settings={"cascade": "every", "sanity_images": 4},
    )
    summary = run(cfg, progress=False)
    assert not summary.failed, summary.failed
    store = RunStore(out)
    yield out, store
    store.close()


def test_cascade_figure_draws_the_similarity_per_layer(cascade_run):
    from nicebench.metrics.sanity import parametrised_layers
    from nicebench.models import load_model

    out, store = cascade_run
    fig = F.cascade_figure(store)
    axes = np.array(fig.axes).reshape(2, -1)
    assert axes.shape == (2, 1)  # Spearman and SSIM; one dataset
    n_layers = len(parametrised_layers(load_model("scenes", **TINY_SCENES)))
    curves = store.artifacts("curve/cascade_%")
    for ax, name in zip(axes[:, 0], ["cascade_spearman", "cascade_ssim"], strict=True):
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [str(k) for k in range(1, n_layers)] + [f"all ({n_layers})"]
        lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert list(lines) == ["random", "saliency", "gradcam"]
        for method, line in lines.items():
            kept = curves[(curves.name == f"curve/{name}") & (curves.method == method)]
            data = np.stack(kept.sort_values("image_index")["array"].to_list()).astype(float)
            assert len(data) == 4  # the sanity images only
            data = data[np.isfinite(data).all(1)]  # a constant map has no Spearman: left out
            assert len(data) >= 1
            np.testing.assert_allclose(line.get_ydata(), data.mean(0), atol=1e-6)
        # a model-independent map is the same on every randomised model
        np.testing.assert_allclose(lines["random"].get_ydata(), 1.0, atol=1e-6)
        assert lines["saliency"].get_ydata()[-1] < 0.99  # gradients change with the weights
    assert "cascade.png" in {p.name for p in F.write_figures(out, formats=("png",))}


def test_cascade_ticks_follow_the_steps_setting():
    default = "1,3,all"  # the metric's declared default, as the run's catalogue gives it
    assert F._cascade_ticks('{"settings": {}}', 3, default) == ["1", "3", "all"]
    assert F._cascade_ticks('{"settings": {"cascade": "every"}}', 4, default) == [
        "1",
        "2",
        "3",
        "all (4)",
    ]
    assert F._cascade_ticks('{"settings": {"cascade": "2,all"}}', 2, default) == ["2", "all"]
    assert F._cascade_ticks("not json", 2, None) == ["1", "2"]  # unknown: step numbers


def test_no_cascade_figure_without_cascade_curves(tiny_run):
    _, store, _ = tiny_run
    assert F.cascade_figure(store) is None


def test_vector_files_carry_no_date(tmp_path):
    """A redrawn figure is the same file (a reference rerun commits only changed figures)."""
    fig, ax = matplotlib.pyplot.subplots()
    ax.plot([0, 1], [1, 0])
    paths = F._save(fig, tmp_path, "line", ("pdf", "svg"))
    pdf, svg = (p.read_bytes() for p in paths)
    assert b"/CreationDate" not in pdf and b"<dc:date>" not in svg
