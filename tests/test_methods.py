"""The method checks catch dishonest plugins; Grad-CAM matches pytorch-grad-cam (the built-ins'
contract runs in test_contract.py)."""

from __future__ import annotations

import pytest
import torch

import nicebench as nb
from nicebench import Method, MethodError, register_method
from nicebench.testing import ContractError, check_method, restored


def test_check_method_catches_a_dishonest_plugin():
    class Dishonest(Method):
        uses_model = False  # but it does use the model

        def attribute(self, images, targets, **kw):
            with torch.no_grad():
                score = self.model(images).gather(1, targets[:, None])
            return score[:, :, None, None] * images.mean(1, keepdim=True)

    with pytest.raises(ContractError, match="uses_model=False"):
        check_method(Dishonest)

    class BatchDependent(Method):
        uses_model = False

        def attribute(self, images, targets, **kw):
            return images.mean(1, keepdim=True) - images.mean()

    with pytest.raises(ContractError, match="batch-independent"):
        check_method(BatchDependent)

    class WrongShape(Method):
        uses_model = False

        def attribute(self, images, targets, **kw):
            return images[:, :1, :4, :4]

    with pytest.raises(MethodError, match="expected"):
        check_method(WrongShape)


def test_gradcam_matches_pytorch_grad_cam(tiny_scenes):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ds, model = tiny_scenes
    images = torch.stack([ds[i][0] for i in range(8)])
    with torch.no_grad():
        targets = model(images).argmax(1)
    ours = nb.create_method("gradcam", model).explain(images, targets)[:, 0]
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with pgc.GradCAM(model=model, target_layers=[model.cam_layer]) as cam:
            theirs = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
    theirs = torch.as_tensor(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if a.std() < 1e-8 or b.std() < 1e-8:
            continue
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert r >= 0.99, f"Pearson {r:.4f}"


def test_create_method_errors():
    with pytest.raises(KeyError, match="Did you mean: gradcam"):
        nb.create_method("gradcma")
    with pytest.raises(MethodError, match="window"):
        nb.create_method("occlusion", None, windw=8)


def test_explain_validates_input(tiny_scenes):
    ds, model = tiny_scenes
    m = nb.create_method("gradcam", model)
    with pytest.raises(MethodError, match=r"\[B,C,H,W\]"):
        m.explain(torch.zeros(3, 32, 32), [0])
    with pytest.raises(MethodError, match="targets"):
        m.explain(torch.zeros(2, 3, 32, 32), [0, 1, 2])
    with pytest.raises(MethodError, match="masks"):
        nb.create_method("oracle", model).explain(torch.zeros(1, 3, 32, 32), [0])


def test_register_and_wildcards():
    with restored("method", "zz-test-const"):

        @register_method("zz-test-const")
        class Const(Method):
            uses_model = False

            def attribute(self, images, targets, **kw):
                return torch.ones_like(images[:, :1])

        assert "zz-test-const" in nb.list_methods("zz-*")
        with pytest.raises(ValueError, match="already registered"):
            register_method("zz-test-const")(type("Other", (Method,), {}))
    assert "zz-test-const" not in nb.list_methods("zz-*")


class _GradTimesInput(Method):
    """Gradient × input, calling requires_grad_ on the images it is given."""

    needs_gradients = True

    def attribute(self, images, targets, **kw):
        images.requires_grad_(True)
        score = self.model(images).gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, images)
        return (grad * images).sum(1, keepdim=True)


@pytest.mark.parametrize("name", ["saliency", "gradcam", "zz-grad-x-input"])
def test_gradient_methods_work_under_no_grad_and_inference_mode(tiny_scenes, name):
    ds, model = tiny_scenes
    images, labels = nb.collate([ds[i] for i in range(4)])[:2]
    cls = _GradTimesInput if name.startswith("zz") else nb.registry.get_method_class(name)
    m = cls(model)
    ref = m.explain(images, labels)
    assert ref.abs().max() > 0
    with torch.no_grad():
        torch.testing.assert_close(m.explain(images, labels), ref)
    with torch.inference_mode():
        x, y = images.clone(), labels.clone()  # inference tensors, as a caller there has them
        torch.testing.assert_close(m.explain(x, y), ref)
        assert torch.is_inference_mode_enabled()  # the caller's mode is restored
    with torch.no_grad():
        m.explain(images, labels)
        assert not torch.is_grad_enabled()


def test_explain_hands_the_plugin_a_detached_copy():
    seen = []

    class Scribbler(Method):
        uses_model = False

        def attribute(self, images, targets, **kw):
            seen.append(images)
            out = images.mean(1, keepdim=True).clone()
            images.zero_()  # in place on what it was given
            return out

    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    before = images.detach().clone()
    sal = Scribbler(None).explain(images, [0, 1])
    assert torch.equal(images.detach(), before)
    assert seen[0].data_ptr() != images.data_ptr() and not seen[0].requires_grad
    torch.testing.assert_close(sal, before.mean(1, keepdim=True))
