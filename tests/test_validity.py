"""The validity audit: insertion's calibrated start, the audit's statistics against scipy, its
verdicts on metrics that cannot be valid (noise, a constant, a saturated curve, a classifier at
chance), and the verdicts acting on the combined rank, the leaderboard, the summary and the
report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

import nicebench as nb
from nicebench.metrics import MetricContext, get_metric_spec, insertion
from nicebench.metrics.faithfulness import blurred
from nicebench.metrics.insertion_start import CALIBRATION_MARGIN, insertion_start
from nicebench.report import validity as V
from nicebench.report.trust import bootstrap_counts


# -- insertion's start ------------------------------------------------------------------------------
def test_rise_start_is_rises_blur_and_calibrated_start_sits_near_chance(tiny_scenes):
    ds, model = tiny_scenes
    x = torch.stack([ds[i][0] for i in range(16)])
    rise = insertion_start(model, x, "rise", ds)
    assert torch.equal(rise.image(model, x), blurred(x))  # RISE's kernel 11 / σ 5 at 224, scaled
    sal = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        insertion(model, x, sal, start=rise.image(model, x)), insertion(model, x, sal)
    )  # the literal RISE metric, as before
    start = insertion_start(model, x, "calibrated", ds)
    assert start.source == "validation" and start.n_images > 0
    assert start.mean_p <= start.chance + CALIBRATION_MARGIN
    assert start.sigma >= rise.sigma or start.fill > 0
    assert insertion_start(model, x, "calibrated", ds) is start  # once per classifier and dataset
    with pytest.raises(ValueError, match="insertion_start"):
        insertion_start(model, x, "gaussian", ds)


def test_a_large_blur_in_two_passes_is_torchvisions():
    from torchvision.transforms.functional import gaussian_blur

    from nicebench.metrics.insertion_start import DIRECT_KERNEL, blur

    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    k = DIRECT_KERNEL + 12  # over the threshold: the separable path
    torch.testing.assert_close(
        blur(x, 11.0, k), gaussian_blur(x, [k, k], [11.0, 11.0]), atol=1e-5, rtol=1e-5
    )
    assert torch.equal(blur(x, 5.0, 31), gaussian_blur(x, [31, 31], [5.0, 5.0]))


class _Blind(nn.Module):
    """A classifier that ignores its input: the same confident logits for every image."""

    mean = torch.zeros(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([4.0, 0.0, 0.0, 0.0]).expand(len(x), 4)


def test_a_classifier_blind_to_the_perturbation_makes_curves_saturated():
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sal = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    ctx = MetricContext(
        model=_Blind(),
        images=x,
        labels=torch.zeros(12, dtype=torch.long),
        saliency=sal,
        preds=torch.zeros(12, dtype=torch.long),
    )
    for name in ("deletion", "insertion"):
        get_metric_spec(name).fn(ctx)
    ranges = pd.DataFrame(
        [("toy", "default", n, a) for _, n, a in ctx.kept if n.startswith("range/")],
        columns=["dataset", "model", "name", "array"],
    )
    img, audit_rows = _toy_run({"deletion_auc": False, "insertion_auc": True})
    table = V.audit(img, ranges, audit_rows, _classes(4, 4)).set_index("metric")
    for col in ("deletion_auc", "insertion_auc"):
        assert table.loc[col, "verdict"] == "saturated", table.loc[col, "reason"]
        p = float(torch.softmax(torch.tensor([4.0, 0, 0, 0]), 0)[0])
        assert table.loc[col, "blank_p"] == pytest.approx(p) == table.loc[col, "original_p"]


# -- the statistics against scipy -------------------------------------------------------------------
def test_halves_tau_is_scipys_kendall_tau_and_its_interval_scipys_bootstrap():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(8, 60)) + np.linspace(0, 0.6, 8)[:, None]
    tau, lo, hi = V.halves_tau(scores, seed=5)
    perm = np.random.default_rng(5).permutation(60)
    a, b = scores[:, np.sort(perm[:30])], scores[:, np.sort(perm[30:])]
    assert tau == pytest.approx(scipy.stats.kendalltau(a.mean(1), b.mean(1)).statistic)

    def tau_of(ia, ib):  # the images of each half, resampled by scipy
        ia, ib = ia.astype(int), ib.astype(int)
        return scipy.stats.kendalltau(a[:, ia].mean(1), b[:, ib].mean(1)).statistic

    ref = scipy.stats.bootstrap(
        (np.arange(30), np.arange(30)),
        tau_of,
        vectorized=False,
        paired=False,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.08) and hi == pytest.approx(ref.high, abs=0.08)
    assert lo <= tau <= hi


def test_paired_effect_counts_the_same_replicates_as_the_leaderboard():
    diff = np.random.default_rng(4).normal(0.2, 1.0, size=40)
    mean, effect, p = V.paired_effect(diff, spread=0.5, seed=0)
    counts = bootstrap_counts(40, seed=0)
    boot = counts @ diff / counts.sum(1)
    assert mean == pytest.approx(diff.mean()) and effect == pytest.approx(diff.mean() / 0.5)
    assert p == pytest.approx(((boot > 0).sum() + 0.5 * (boot == 0).sum()) / len(boot))
    assert V.paired_effect(np.zeros(5), 0.0)[1:] == (0.0, 0.5)


# -- verdicts on synthetic runs ----------------------------------------------------------------------
_METHODS = ["random", "oracle", "m1", "m2", "m3", "m4", "m5", "m6"]
_QUALITY = {
    "random": 0.0,
    "oracle": 1.0,
    "m1": 0.2,
    "m2": 0.35,
    "m3": 0.5,
    "m4": 0.65,
    "m5": 0.8,
    "m6": 0.95,
}


def _toy_run(columns: dict[str, bool], n: int = 60, k: int = 16, noise: float = 0.05):
    """A per-image table whose metrics order the methods by quality (better direction given),
    and audit rows: the maps of a randomised model score as random's, noisy inputs move a little."""
    rng = np.random.default_rng(0)
    rows, audit_rows = [], []
    for m in _METHODS:
        for i in range(n):
            row = {
                "dataset": "toy",
                "model": "default",
                "method": m,
                "kind": "method",
                "image_index": i,
                "label": 0,
                "pred": 0,
                "accuracy_original": 1.0,
            }
            for col, higher in columns.items():
                v = _QUALITY[m] + noise * rng.normal()
                row[col] = v if higher else -v
                if i < k:
                    rv = _QUALITY["random"] + noise * rng.normal()
                    audit_rows.append(
                        {
                            "dataset": "toy",
                            "model": "default",
                            "method": m,
                            "image_index": i,
                            "column": col,
                            "pass": "randomised",
                            "value": rv if higher else -rv,
                        }
                    )
                    nv = row[col] + 0.01 * rng.normal()
                    audit_rows.append(
                        {
                            "dataset": "toy",
                            "model": "default",
                            "method": m,
                            "image_index": i,
                            "column": col,
                            "pass": "noise",
                            "value": nv,
                        }
                    )
            rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(audit_rows)


def _classes(model_classes: int, dataset_classes: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": "toy",
                "model": "default",
                "model_classes": model_classes,
                "dataset_classes": dataset_classes,
            }
        ]
    )


@pytest.fixture
def toy_metrics():
    """Three plugin metrics registered for the test: one that orders maps, noise, a constant."""
    from nicebench.testing import restored

    names = {"zz_good": True, "zz_noise": True, "zz_constant": False}
    with restored("metric", *names):
        for name, higher in names.items():
            nb.register_metric(name, lambda c: torch.zeros(len(c.images)), higher_is_better=higher)
        yield names


def test_noise_and_constant_metrics_are_not_valid(toy_metrics):
    img, audit_rows = _toy_run({"zz_good": True})
    rng = np.random.default_rng(1)
    img["zz_noise"] = rng.normal(size=len(img))
    img["zz_constant"] = 0.5
    extra = []
    for col, fill in (("zz_noise", None), ("zz_constant", 0.5)):
        part = audit_rows[audit_rows.column == "zz_good"].copy()
        part["column"] = col
        part["value"] = rng.normal(size=len(part)) if fill is None else fill
        extra.append(part)
    audit_rows = pd.concat([audit_rows, *extra], ignore_index=True)
    table = V.audit(
        img, pd.DataFrame(columns=["dataset", "model", "name", "array"]), audit_rows, _classes(6, 6)
    ).set_index("metric")
    assert table.loc["zz_good", "verdict"] == "valid", table.loc["zz_good", "reason"]
    assert table.loc["zz_good", "oracle_effect"] > 1 and table.loc["zz_good", "oracle_p"] == 1
    assert table.loc["zz_good", "best_method"] == "m6"  # the best contender, oracle left out
    for col in ("zz_noise", "zz_constant"):
        assert table.loc[col, "verdict"] in ("not_reactive", "unstable"), table.loc[col]
        assert not table.loc[col, "in_combined_rank"]
    assert table.loc["zz_constant", "verdict"] == "not_reactive"
    exclude = V.rank_exclusions(table.reset_index())
    assert exclude == {("toy", "default"): {"zz_noise", "zz_constant"}}
    forced = V.audit(
        img,
        pd.DataFrame(columns=["dataset", "model", "name", "array"]),
        audit_rows,
        _classes(6, 6),
        {"rank_all_metrics": True},
    )
    assert forced.set_index("metric").loc["zz_noise", "in_combined_rank"]


def test_a_classifier_at_chance_makes_label_metrics_untested_and_warns():
    img, audit_rows = _toy_run({"deletion_auc": False, "masked_accuracy": True})
    img["accuracy_original"] = 0.0  # labels the model does not predict
    comp = pd.DataFrame(
        [
            {
                "dataset": "toy",
                "model": "default",
                "method": "random",
                "kind": "method",
                "track_codec": "jpeg",
                "reference_codec": "jpeg",
                "vs_uniform": 1.0,
                "vs_uniform_hi": 1.2,
            }
        ]
    )
    table = V.audit(
        img,
        pd.DataFrame(columns=["dataset", "model", "name", "array"]),
        audit_rows,
        _classes(1000, 2),
        compression=comp,
    ).set_index("metric")
    assert table.loc["compression_ratio", "verdict"] == "untested"  # every point "qualifies"
    assert "at chance" in table.loc["compression_ratio", "reason"]
    img["accuracy_original"] = 1.0
    fine = V.audit(
        img,
        pd.DataFrame(columns=["dataset", "model", "name", "array"]),
        audit_rows,
        _classes(6, 6),
        compression=comp,
    ).set_index("metric")
    assert fine.loc["compression_ratio", "verdict"] == "valid"  # random: no gain over uniform
    comp["vs_uniform_hi"] = 0.9
    failed = V.audit(
        img,
        pd.DataFrame(columns=["dataset", "model", "name", "array"]),
        audit_rows,
        _classes(6, 6),
        compression=comp,
    ).set_index("metric")
    assert failed.loc["compression_ratio", "verdict"] == "not_reactive"
    img["accuracy_original"] = 0.0
    assert table.loc["masked_accuracy", "verdict"] == "untested"
    assert "at chance" in table.loc["masked_accuracy", "reason"]
    assert table.loc["deletion_auc", "verdict"] == "valid"  # scored on the model's own class
    assert V.at_chance(table.reset_index()) == {("toy", "default")}
    text = V.classifier_warning(
        {"dataset": "toy", "model": "default", "accuracy": 0.0, "accuracy_chance": 0.5}
    )
    assert "0.000" in text and "labels likely do not match" in text
    board = pd.DataFrame(
        [
            {
                "dataset": "toy",
                "model": "default",
                "method": m,
                "kind": "method",
                "deletion_auc": -_QUALITY[m],
            }
            for m in _METHODS
        ]
    )
    from nicebench.report.terminal import best_per_metric, terminal_summary

    assert best_per_metric(board, validity=table.reset_index()).empty  # no best on a blind run
    summary = terminal_summary(board, "run", validity=table.reset_index())
    assert summary.startswith("WARNING: the classifier's accuracy on toy is 0.000")
    assert max(len(line) for line in summary.splitlines()) <= 100


# -- end to end: a tiny leaderboard with plugin metrics -------------------------------------------
@pytest.mark.slow
def test_audit_in_a_tiny_run_marks_and_excludes_plugin_noise(tmp_path, tiny_scenes):
    from nicebench.config import RunConfig, parse_specs
    from nicebench.metrics import MetricSpec
    from nicebench.report.html import render_report
    from nicebench.runner import run
    from nicebench.testing import restored

    def noise(c):
        gen = torch.Generator().manual_seed(1000 + c.start + int(c.saliency.abs().sum() * 1e3))
        return torch.randn(len(c.images), generator=gen)

    with restored("metric", "zz_noise", "zz_constant"):
        nb.register_metric(MetricSpec("zz_noise", noise, "zz_noise", True))
        nb.register_metric(
            MetricSpec("zz_constant", lambda c: torch.ones(len(c.images)), "zz_constant", False)
        )
        cfg = RunConfig(
            datasets=parse_specs("scenes:size=32,n=64,train_n=1500,train_epochs=3"),
            methods=parse_specs("random,oracle,center,edges,saliency,gradcam,occlusion"),
            metrics=["deletion", "insertion", "pointing_game", "zz_noise", "zz_constant"],
            n_images=48,
            out=str(tmp_path / "run"),
            settings={"audit_images": 12},
        )
        summary = run(cfg, progress=False)
    assert summary.exit_code == 0, summary.failed
    out = tmp_path / "run"
    table = pd.read_csv(out / "validity.csv").set_index("metric")
    assert set(table.verdict) <= set(V.VERDICTS)
    for col in ("zz_noise", "zz_constant"):
        assert table.loc[col, "verdict"] in ("not_reactive", "unstable"), table.loc[col, "reason"]
    assert table.loc["insertion_auc", "blank_p"] <= table.loc["insertion_auc", "chance"] + 0.15
    assert table.loc["insertion_auc", "oracle_minus_random"] > 0
    assert math.isfinite(table.loc["deletion_auc", "randomised_p"])
    assert math.isfinite(table.loc["deletion_auc", "tau_noise"])
    md = (out / "leaderboard.md").read_text()
    assert "zz_noise" not in md.split("Metrics used:")[1].split("\n")[0]
    assert "† not valid on its dataset" in md and "Insertion start, scenes" in md
    assert "pointing_game: a hit is the map's arg-max" in md
    assert " †" in md.split("\n\n")[1]  # a marked score in the table
    assert "# Can these metrics be trusted here?" in (out / "validity.md").read_text()
    page = render_report(out)
    assert 'id="validity"' in page and "Can these metrics be trusted here?" in page


def test_a_model_blind_map_is_never_the_method_under_test_even_with_float_noise(toy_metrics):
    """A map that ignores the classifier (like `center`) scores the same on the randomised model
    up to the float noise of another batch; even when it scores best, the reactivity test takes
    the best map that depends on the model (else a 1e-7 difference flips the verdict)."""
    img, audit_rows = _toy_run({"zz_good": True})
    blind = img[img.method == "m6"].copy()
    blind["method"] = "blind"
    blind["zz_good"] = 2.0 + 0.01 * np.random.default_rng(2).normal(size=len(blind))
    noise = np.random.default_rng(3).normal(scale=1e-7, size=16)
    blind_audit = pd.DataFrame(
        {
            "dataset": "toy",
            "model": "default",
            "method": "blind",
            "image_index": np.arange(16),
            "column": "zz_good",
            "pass": "randomised",
            "value": blind.zz_good.to_numpy()[:16] + noise,
        }
    )
    table = V.audit(
        pd.concat([img, blind], ignore_index=True),
        pd.DataFrame(columns=["dataset", "model", "name", "array"]),
        pd.concat([audit_rows, blind_audit], ignore_index=True),
        _classes(6, 6),
    ).set_index("metric")
    assert table.loc["zz_good", "best_method"] == "m6"
    assert table.loc["zz_good", "randomised_effect"] > 1
