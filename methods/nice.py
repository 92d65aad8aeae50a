"""``nice``: Neural Image Compression and Explanation (Li & Ji 2019), the amortized gate mask.

A small fully convolutional generator maps an image to one hard-concrete gate logit ``log α`` per
cell of ``cell×cell`` pixels. It is trained once per (dataset, classifier, parameters) against the
frozen classifier with

    CE(f(z ⊙ x + (1 − z) ⊙ r), target) + λ · mean E[L0(z)] + μ · TV(z)

(z a training sample of the gates, r the reference image) and cached like the classifiers.
``explain`` returns the deterministic test-time mask, upsampled to the image (higher = keep);
:meth:`Nice.binary_mask` gives ``z ≥ 0.5`` for the compression track and :meth:`Nice.composite`
the masked image. By default the mask is class-agnostic: the generator sees only the image (as
in the authors' code), so ``targets`` do not change it. ``condition="class"`` conditions it on the
target class, as a classifier-specific explanation should: the generator's output convolutions
have one map per class and the target's is kept (trained against the training targets; explained
for the targets passed to ``explain``, or the classifier's prediction when there are none).

References ``r``: ``"zero"`` = black pixels (the authors' code), ``"mean"`` = the dataset's mean
colour (0 in the classifier's normalised space, the deletion metric's substrate), ``"lowres"`` =
the image downsampled ×4 (area) and brought back up (bilinear), as the paper's mixed-resolution
pipeline feeds the classifier.

For the compression track (docs/design.md §6), ``codec="jpeg"`` trains the generator for the track's
operating point: gate cells on the codec's block grid (8 px for JPEG, 16 for WebP) and the track's
own low-resolution background as the reference (``factor``: ×4 bilinear, ×8 nearest, as
:func:`nicebench.compression.mixed.low_resolution`). ``lam="auto"`` picks λ from
:data:`LAM_LADDER`: the largest whose masked accuracy (the binary mask over the reference) on
``n_holdout`` held-out images stays within ``auto_tolerance`` (one point) of the classifier's
accuracy on them, by bisection (a few trainings, each cached). The held-out images are the
dataset's validation split when it has one (:meth:`nicebench.BenchDataset.validation_split`:
test-like, as the classifier never saw them), else the training split's last images, which the
generator then does not train on.

``train_quality`` (with ``codec``) puts the codec in the training loop: each training composite is
coded and decoded at that quality before the classifier sees it, and the gradient passes the codec
straight through (the identity in the backward pass, as BPDA), so the gates learn what survives
the coding the track applies. ``lam="auto"`` then measures masked accuracy on composites coded at
``train_quality`` against the originals coded at the same quality (the mask's own cost, not the
quality's).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import Subset

from nicebench import (
    BenchDataset,
    GateMaskMethod,
    LearnedMethod,
    MethodError,
    create_codec,
    register_method,
)
from nicebench.compression import low_resolution
from nicebench.gates import (
    RANK_WINDOW,
    auto_cell,
    expected_l0,
    sample,
    total_variation,
    upsample_cells,
)
from nicebench.models import materialise, predict

NICE_CODE_VERSION = 2  # 2: small generator at feature stride ≥ 2 (cell 1: + per-pixel skip)
GENERATORS = ("small", "tiny")
#: what the generator sees besides the image: nothing, or the target class (one map per class)
CONDITIONS = ("none", "class")
# parameters that do not change the trained generator
EXPLAIN_ONLY = ("rank_window", "auto_tolerance")
#: the λ values ``lam="auto"`` chooses from (increasing: sparser masks)
LAM_LADDER = (0.05, 0.1, 0.2, 0.3, 0.55, 0.8, 1.2, 2.0)


def largest_passing(values, passes) -> Any:
    """The largest of the increasing ``values`` for which ``passes(value)`` holds, by bisection
    (``passes`` assumed to hold up to some value and fail above it: masked accuracy falls as λ
    rises); the smallest value when none passes. Calls ``passes`` about log2(len + 1) times."""
    lo, hi = -1, len(values)  # values[lo] passes (or lo = -1), values[hi] fails (or past the end)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(values[mid]):
            lo = mid
        else:
            hi = mid
    return values[max(lo, 0)]


class MaskGenerator(nn.Module):
    """Image ``[B,C,H,W]`` in [0,1] (and with ``n_classes`` the target classes ``[B]``) → gate
    logits ``[B,1,⌈H/cell⌉,⌈W/cell⌉]``.

    ``small``: three conv blocks (16-32-32 channels, dilations 1-2-4, BatchNorm, ReLU) that reach
    a feature grid of stride ``max(cell, 2)`` by a strided first convolution and max-pooling,
    then a 1×1 head. At cell 1 (28-px images) the head's logits are brought up to the pixel grid
    (bilinear) and a 3×3 convolution of the image adds per-pixel detail, so the generator costs
    a quarter of a full-resolution one (receptive field 53 px at cell 4, 27 px at cell 1).
    ``tiny``: the authors' single 3×3 convolution, average-pooled to the cell grid.
    ``n_classes`` > 0 conditions the generator on the target class: its output convolutions (the
    head, the skip, ``tiny``'s one convolution) give one map per class, and the target's is kept
    (the features before the head are shared by the classes).
    """

    def __init__(
        self,
        channels: int,
        cell: int,
        kind: str,
        mean,
        std,
        init_logit: float = 1.0,
        n_classes: int = 0,
    ):
        super().__init__()
        if cell < 1 or cell & (cell - 1):
            raise MethodError(f"nice: cell must be a power of two, got {cell}")
        self.cell, self.kind, self.n_classes = cell, kind, int(n_classes)
        n_out = max(self.n_classes, 1)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.skip: nn.Module | None = None
        self.channels_last = False  # set by for_inference
        if kind == "tiny":
            self.body = nn.Conv2d(channels, n_out, 3, padding=1)
            head = self.body
        elif kind == "small":
            stride = max(cell, 2)  # of the feature grid: the first convolution strides by 2,
            n_pool = min(int(math.log2(stride // 2)), 2)  # then ≤ 2 max-pools
            stride0 = stride // 2**n_pool
            layers: list[nn.Module] = []
            cin = channels
            for i, (cout, dil) in enumerate(((16, 1), (32, 2), (32, 4))):
                layers += [
                    nn.Conv2d(
                        cin,
                        cout,
                        3,
                        stride=stride0 if i == 0 else 1,
                        padding=dil,
                        dilation=dil,
                        bias=False,
                    ),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
                if i < n_pool:
                    layers.append(nn.MaxPool2d(2, ceil_mode=True))
                cin = cout
            head = nn.Conv2d(cin, n_out, 1)
            layers.append(head)
            self.body = nn.Sequential(*layers)
            if stride > cell:
                self.skip = nn.Conv2d(channels, n_out, 3, padding=1, bias=False)
        else:
            raise MethodError(f"nice: generator must be one of {GENERATORS}, got {kind!r}")
        with torch.no_grad():
            head.bias.fill_(init_logit)

    def for_inference(self, channels_last: bool = False) -> MaskGenerator:
        """A copy in eval mode with each BatchNorm folded into the convolution before it, in
        channels-last memory if asked (faster oneDNN convolutions on CPU): the same logits up
        to float rounding, in about half the time on scenes-64."""
        net = copy.deepcopy(self).eval()
        if isinstance(net.body, nn.Sequential):
            layers: list[nn.Module] = []
            for m in net.body:
                if isinstance(m, nn.BatchNorm2d) and layers and isinstance(layers[-1], nn.Conv2d):
                    layers[-1] = fuse_conv_bn_eval(layers[-1], m)
                else:
                    layers.append(m)
            net.body = nn.Sequential(*layers)
        net.channels_last = channels_last
        return net.to(memory_format=torch.channels_last) if channels_last else net

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        grid = (math.ceil(h / self.cell), math.ceil(w / self.cell))
        if self.n_classes and classes is None:
            raise MethodError("nice: a class-conditioned generator needs the target classes")
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self._pick(self.body(x), classes)
        if self.skip is not None:
            out = F.interpolate(out, size=grid, mode="bilinear", align_corners=False)
            return out + F.avg_pool2d(self._pick(self.skip(x), classes), self.cell, ceil_mode=True)
        if out.shape[-2:] != grid:
            out = F.adaptive_avg_pool2d(out, grid)
        return out

    def _pick(self, maps: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """``maps [B,K,h,w]`` → the map of each image's class ``[B,1,h,w]`` (unconditioned: as is)."""
        if not self.n_classes:
            return maps
        idx = classes.to(maps.device).long().view(-1, 1, 1, 1)
        return maps.gather(1, idx.expand(-1, 1, *maps.shape[-2:]))


@register_method("nice")
class Nice(GateMaskMethod, LearnedMethod):
    """NICE's amortized hard-concrete gate mask, trained against the frozen classifier.

    Parameters: ``lam`` (λ, weight of the mean expected L0 of the gates), ``mu`` (μ, weight of
    the mask's total variation), ``cell`` (gate cell side in pixels or ``"auto"``), ``generator``
    (``"small"`` or ``"tiny"``), ``reference`` (``"zero"``, ``"mean"``, ``"lowres"``), ``target``
    (``"label"`` or ``"pred"``: what the masked image must still be classified as), ``condition``
    (``"none"`` or ``"class"``: the generator also sees the target class), ``epochs``,
    ``lr`` (Adam, cosine decay), ``batch_size``, ``n_train`` (first images of the train split),
    ``seed``, ``rank_window`` (tie-break window of the explanation map as a share of the grid's
    side, 0 = by ``σ(log α)`` alone; it does not change the mask); for the compression track
    ``codec`` (a codec's name: cells on its block grid, the ``lowres`` reference at ``factor``),
    ``lam="auto"`` (with ``n_holdout``, ``auto_tolerance``) and ``train_quality`` (the codec in
    the training loop); see the module's docstring.

    Defaults come from λ sweeps (``bench/nice_lambda_sweep.py``) on scenes-64 and fashion-mnist:
    with the low-resolution reference, auto cells and 5 epochs of up to 24k images (under 2
    minutes on 2 CPU cores), λ = 0.55 keeps about a fifth of the pixels (20% on scenes-64, 21% on
    fashion-mnist) with the classifier's accuracy on the masked images within 2 points of its
    accuracy on the originals (``results/nice_lambda_sweep_*.csv``).
    """

    deterministic = True
    needs_gradients = False
    quick_params = {"epochs": 1, "n_train": 64, "batch_size": 32}
    cache_kind = "nice"
    code_version = NICE_CODE_VERSION
    explain_only = EXPLAIN_ONLY

    def __init__(
        self,
        model: nn.Module | None,
        *,
        lam: float | str = 0.55,
        mu: float = 0.1,
        cell: int | str = "auto",
        generator: str = "small",
        reference: str = "lowres",
        target: str = "label",
        epochs: int = 5,
        lr: float = 3e-3,
        batch_size: int = 64,
        n_train: int = 24000,
        seed: int = 0,
        rank_window: float = RANK_WINDOW,
        codec: str | None = None,
        factor: int = 4,
        n_holdout: int = 500,
        auto_tolerance: float = 0.01,
        train_quality: int | None = None,
        condition: str = "none",
    ):
        if codec is not None:
            if cell == "auto":
                cell = int(create_codec(str(codec)).block)
            if reference != "lowres":
                raise MethodError(
                    f"nice: codec={codec!r} trains against the track's "
                    f"low-resolution background: reference must be 'lowres'"
                )
        if train_quality is not None:
            if codec is None:
                raise MethodError(
                    "nice: train_quality codes the training composites with the "
                    "track's codec: name one with codec="
                )
            if (
                isinstance(train_quality, bool)
                or not isinstance(train_quality, int)
                or not (1 <= train_quality <= 100)
            ):
                raise MethodError(
                    f"nice: train_quality must be an integer in [1, 100], got {train_quality!r}"
                )
        super().__init__(
            model, reference=reference, cell=cell, target=target, rank_window=rank_window
        )
        if generator not in GENERATORS:
            raise MethodError(f"nice: generator must be one of {GENERATORS}, got {generator!r}")
        if condition not in CONDITIONS:
            raise MethodError(f"nice: condition must be one of {CONDITIONS}, got {condition!r}")
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise MethodError(f"nice: factor must be an integer ≥ 1, got {factor!r}")
        if lam != "auto" and (isinstance(lam, bool) or not isinstance(lam, (int, float))):
            raise MethodError(f"nice: lam must be a number or 'auto', got {lam!r}")
        self.codec, self.factor = (None if codec is None else str(codec)), factor
        self.train_quality = train_quality
        self.n_holdout, self.auto_tolerance = int(n_holdout), float(auto_tolerance)
        self.lam = "auto" if lam == "auto" else float(lam)
        self.mu, self.generator, self.condition = float(mu), generator, condition
        self.epochs, self.lr, self.batch_size = int(epochs), float(lr), int(batch_size)
        self.n_train, self.seed = int(n_train), int(seed)
        self.net: MaskGenerator | None = None
        self.cell_px = 0
        self.train_info: dict[str, Any] = {}

    def reference_image(self, images: torch.Tensor) -> torch.Tensor:
        """The track's background (``factor``, :func:`~nicebench.compression.mixed.low_resolution`)
        when trained for a codec, else the gate methods' reference."""
        if self.codec is not None:
            return low_resolution(images, self.factor)
        return super().reference_image(images)

    # -- λ = "auto" ---------------------------------------------------------------------------
    def fit(self, dataset: Any) -> Nice:
        """Train (or load) the generator; with ``lam="auto"`` first choose λ (:data:`LAM_LADDER`)."""
        if self.lam != "auto":
            return super().fit(dataset)
        val = dataset.validation_split() if isinstance(dataset, BenchDataset) else None
        if val is not None:  # test-like images: the classifier never trained on them
            n_hold = min(self.n_holdout, len(val))
            held, source = Subset(val, range(n_hold)), "validation split"
        else:  # the split's last images, left out of the generator's training
            n_hold = min(self.n_holdout, len(dataset) // 5)
            held = Subset(dataset, range(len(dataset) - n_hold, len(dataset)))
            source = "training split"
            self.n_train = min(self.n_train, len(dataset) - n_hold)
        if n_hold < 1:
            raise MethodError("nice: lam='auto' needs held-out images (n_holdout ≥ 1)")
        held.registered_name = getattr(dataset, "registered_name", "dataset")
        x_u8, y = materialise(held)
        x = x_u8.float().div_(255).to(self.device)
        y = y.to(self.device)
        base = float((predict(self.model, self.coded(x)) == y.cpu()).float().mean())
        tried: dict[float, dict[str, float]] = {}

        def masked(lam: float) -> dict[str, float]:
            self.lam = lam
            super(Nice, self).fit(dataset)
            keep = self.binary_mask(x, y)
            shown = self.coded(self.composite(x, keep))
            acc = float((predict(self.model, shown) == y.cpu()).float().mean())
            tried[lam] = {"masked_accuracy": acc, "mask_share": float(keep.float().mean())}
            return tried[lam]

        bar = base - self.auto_tolerance - 1e-12
        chosen = largest_passing(LAM_LADDER, lambda lam: masked(lam)["masked_accuracy"] >= bar)
        if chosen not in tried or self.lam != chosen:
            masked(chosen)
        self.train_info = {
            **self.train_info,
            "lam_auto": {
                "chosen": chosen,
                "accuracy_original": base,
                "quality": self.train_quality,
                "n_holdout": n_hold,
                "held_out": source,
                "tried": {str(k): v for k, v in sorted(tried.items())},
            },
        }
        return self

    @torch.no_grad()
    def coded(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` coded and decoded by the track's codec at ``train_quality`` (unchanged
        without one), on the images' device (:meth:`nicebench.Codec.roundtrip_tensor`)."""
        if self.train_quality is None:
            return images
        return create_codec(str(self.codec)).roundtrip_tensor(images, int(self.train_quality))

    # -- training ---------------------------------------------------------------------------
    def prepare(self, dataset: Any) -> None:
        size = int(getattr(dataset, "size", 0) or dataset[0][0].shape[-1])
        self.cell_px = auto_cell(size) if self.cell == "auto" else int(self.cell)

    def training_params(self) -> dict[str, Any]:
        """As the base, less the compression parameters when they change nothing (so generators
        cached before they existed are found again): ``codec``/``factor`` without a codec,
        ``condition`` when ``"none"`` and ``n_holdout`` always (its effect is the number of
        training images, in the identity)."""
        params = super().training_params()
        params.pop("n_holdout", None)
        if self.codec is None:
            params.pop("codec", None)
            params.pop("factor", None)
        if self.train_quality is None:
            params.pop("train_quality", None)
        if self.condition == "none":
            params.pop("condition", None)
        return params

    def cache_identity(self, dataset: Any, n: int) -> dict[str, Any]:
        identity = super().cache_identity(dataset, n)
        identity["params"] = {
            **identity["params"],
            "cell": self.cell_px,
            "n_train": n,
        }  # as trained
        return identity

    def build_module(self, dataset: Any) -> MaskGenerator:
        channels = int(getattr(dataset, "channels", 0) or dataset[0][0].shape[0])
        mean = getattr(self.model, "mean", torch.full((1, channels, 1, 1), 0.5))
        std = getattr(self.model, "std", torch.full((1, channels, 1, 1), 0.25))
        n_classes = self.n_classes(dataset) if self.condition == "class" else 0
        return MaskGenerator(
            channels, self.cell_px, self.generator, mean.cpu(), std.cpu(), n_classes=n_classes
        )

    def n_classes(self, dataset: Any) -> int:
        """The classifier's number of classes (its ``num_classes``, else the width of its output
        on one image of ``dataset``)."""
        n = getattr(self.model, "num_classes", None)
        if isinstance(n, int) and n > 0:
            return n
        with torch.no_grad():
            x = torch.as_tensor(dataset[0][0])[None].to(self.device, torch.float32)  # in [0, 1]
            return int(self.model(x).shape[1])

    def training_targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return predict(self.model, images) if self.target == "pred" else labels

    def training_loss(self, module, x, y, gen):
        log_alpha = module(x, y if self.condition == "class" else None)
        u = torch.rand(log_alpha.shape, generator=gen).to(x.device)
        z = sample(log_alpha, u)
        zu = upsample_cells(z, self.cell_px, tuple(x.shape[-2:]))
        mixed = zu * x + (1 - zu) * self.reference_image(x)
        if self.train_quality is not None:  # the codec in the loop, straight through
            mixed = mixed + (self.coded(mixed.detach()) - mixed).detach()
        ce = F.cross_entropy(self.model(mixed), y)
        l0 = expected_l0(log_alpha).mean()
        tv = total_variation(z).mean()
        loss = ce + self.lam * l0 + self.mu * tv
        return loss, {"ce": ce.item(), "l0": l0.item(), "tv": tv.item()}

    def train_module(self, module: nn.Module, dataset: Any, n: int) -> dict[str, Any]:
        return {**super().train_module(module, dataset, n), "cell": self.cell_px}

    def use_module(self, module: nn.Module, dataset: Any) -> None:
        self.net = module.for_inference(channels_last=self.device.type == "cpu")

    # -- explaining -------------------------------------------------------------------------
    def cell_size(self, height: int, width: int) -> int:
        """The cell the generator was trained with (``fit`` first)."""
        return self.cell_px or super().cell_size(height, width)

    @torch.no_grad()
    def gate_logits(self, images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The generator's gate logits; class-conditioned, for :meth:`targets_for` (``targets``,
        else the classifier's prediction); else class-agnostic (``targets`` are not used)."""
        if self.net is None:
            raise MethodError("nice: call fit(train_dataset) first")
        if self.condition == "class":
            return self.net(images, self.targets_for(images, targets))
        return self.net(images)

    def log_alpha(self, images: torch.Tensor) -> torch.Tensor:
        """Gate logits ``[B,1,h,w]`` on the cell grid."""
        return self._logits(images, None)
