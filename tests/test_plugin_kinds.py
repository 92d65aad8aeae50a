"""The method kinds: hooks declared on Method, GateMaskMethod (one function), LearnedMethod."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nicebench import GateMaskMethod, LearnedMethod, Method, MethodError
from nicebench.config import RunConfig, parse_specs
from nicebench.registry import METHODS
from nicebench.runner import run
from nicebench.testing import (
    TINY_SCENES,
    ContractError,
    check_gate_method,
    check_method,
    registered,
)


# A new gate method in a handful of lines: only its gate logits.
class GradientGates(GateMaskMethod):
    """Keep the cells with the largest input-gradient energy for the target class."""

    needs_gradients = True

    def __init__(self, model, *, keep: float = 0.3, **gate_params):
        super().__init__(model, **gate_params)
        self.keep = keep

    def gate_logits(self, images, targets):
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            score = self.model(x).gather(1, self.targets_for(images, targets)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, x)
        energy = F.avg_pool2d(
            grad.square().sum(1, keepdim=True), self.cell_size(*images.shape[-2:]), ceil_mode=True
        )
        cut = energy.flatten(1).quantile(1 - self.keep, dim=1)[:, None, None, None]
        return 4 * (energy - cut) / (energy.flatten(1).std(1)[:, None, None, None] + 1e-12)


def test_a_new_gate_method_passes_the_contract():
    report = check_gate_method(GradientGates, params={"cell": 4})
    assert report["cell"] == 4
    assert 0.1 < report["mask_share"] < 0.6


def test_check_gate_method_catches_a_gate_method_off_contract():
    class WrongGrid(GradientGates):
        def gate_logits(self, images, targets):
            return super().gate_logits(images, targets)[..., :-1]

    with pytest.raises(MethodError, match="gate_logits gave"):
        check_gate_method(WrongGrid, params={"cell": 4})

    class LeakyComposite(GradientGates):
        def composite(self, images, mask):
            return images * 0.5

    with pytest.raises(ContractError, match="composite"):
        check_gate_method(LeakyComposite, params={"cell": 4})

    with pytest.raises(ContractError, match="must subclass nicebench.GateMaskMethod"):
        check_gate_method("gradcam")


def test_method_declares_every_hook_the_core_calls(tiny_scenes):
    ds, model = tiny_scenes
    m = METHODS.get("gradcam")(model)
    assert not m.gate_mask and not m.masked_input
    with pytest.raises(MethodError, match="no gate mask"):
        m.binary_mask(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    with pytest.raises(MethodError, match="no masked input"):
        m.composite(torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32))
    occ = METHODS.get("occlusion")(model, window=4)
    other = occ.with_model(model)
    assert type(other) is type(occ) and other.params() == occ.params() and other is not occ


def test_check_method_rejects_a_fit_that_moves_the_global_rng(tiny_scenes):
    class Sloppy(LearnedMethod):
        uses_model = False
        cache_kind = "sloppy-test"

        def __init__(
            self,
            model,
            *,
            n_train: int = 8,
            epochs: int = 1,
            batch_size: int = 8,
            lr: float = 1e-2,
            seed: int = 0,
        ):
            super().__init__(model)
            self.n_train, self.epochs, self.batch_size, self.lr, self.seed = (
                n_train,
                epochs,
                batch_size,
                lr,
                seed,
            )

        def fit(self, dataset):
            torch.manual_seed(self.seed)  # what nice and rtsal did inside build()
            self.fitted = True
            return self

        def attribute(self, images, targets, **kw):
            return images.mean(1, keepdim=True)

    with pytest.raises(ContractError, match="moved the global RNG"):
        check_method(Sloppy)


@pytest.mark.parametrize("name", ["nice", "rtsal"])
def test_learned_methods_leave_the_global_rng_alone(name, tiny_scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("NICEBENCH_CACHE", str(tmp_path))  # train, not load
    ds, model = tiny_scenes
    cls = METHODS.get(name)
    assert issubclass(cls, LearnedMethod)
    for _ in range(2):  # trained, then loaded from the cache
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        cls(model, **cls.quick_params).fit(ds.train_split())
        assert torch.equal(torch.rand(3), expected), name


def test_gate_method_runs_in_a_leaderboard(tmp_path):
    with registered(METHODS, "zz-gradient-gates", GradientGates):
        tiny = "scenes:" + ",".join(f"{k}={v}" for k, v in TINY_SCENES.items())
        cfg = RunConfig(
            datasets=parse_specs(tiny),
            methods=parse_specs(["zz-gradient-gates:cell=4", "random"]),
            n_images=8,
            batch_size=8,
            out=str(tmp_path),
            settings={"n_steps": 8},
            metrics=["deletion", "pointing_game", "mask_share", "masked_accuracy"],
        )
        summary = run(cfg, progress=False)
        assert summary.exit_code == 0, summary.failed
        import pandas as pd

        board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
        row = board.loc["zz-gradient-gates(cell=4)"]
        assert 0.1 < row.mask_share < 0.6
        assert 0 <= row.masked_accuracy <= 1 and 0 <= row.deletion_auc <= 1
        assert pd.isna(board.loc["random"].get("mask_share", float("nan")))


def test_method_subclass_without_docstring_is_fine():
    class NoDoc(Method):
        uses_model = False

        def attribute(self, images, targets, **kw):
            return images.mean(1, keepdim=True)

    assert check_method(NoDoc)["ok"]
