"""Canvas classification with self-attention in CNNs (claim 13): a plain CNN, the CNN with each registered block,
and a ViT, on digit canvases (:mod:`attnlab.data.digits`), plus the tips (placement, zero-init gate, key/value
downsampling) as ablations.

=======================================  ============================================================================
name                                     what it trains
=======================================  ============================================================================
canvas-pointer-cnn                       plain ResNet-style CNN (widths 16/32/70: widened so it is not the smaller)
canvas-pointer-BLOCK                     the CNN (widths 16/32/64) with BLOCK after stage3 (late: 1/4 resolution),
                                         every registered block: aa_conv, botnet, cbam, criss_cross, eca, nonlocal,
                                         sagan, sasa, se
canvas-pointer-vit                       ViT, 4x4 patches, width 48, 4 layers, 4 heads
canvas-pointer-sagan-stage1 / -stage2    placement: SAGAN after stage1 (full resolution: early) or stage2 (1/2)
canvas-pointer-sagan-gate1               SAGAN with its gate gamma initialised to 1 instead of 0 (still learned)
canvas-pointer-sagan-nogate              SAGAN with gamma fixed at 1: the ungated residual y = o + x
canvas-pointer-sagan-kv2                 keys/values max-pooled 2x2 (``kv_stride=2``) at stage3
canvas-pointer-sagan-stage2-kv2          the same at stage2, where it cuts the attention's cost 4x
canvas-relational-{cnn,se,nonlocal,      ``relational(question="same")``: are the two digits the same class?
sagan,vit}
canvas-cluttered-{cnn,se,cbam,nonlocal,  one digit among clutter on a 32x32 canvas (10 classes)
sagan,vit}
=======================================  ============================================================================

The long-range task is :func:`attnlab.data.digits.pointer`: two digits at the far ends of a 16x80 canvas and an
arrow in the middle; the label is the class of the digit the arrow points at. The plain CNN's last units see 25x25
pixels (stem 3 -> stage1 7 -> stage2 13 -> stage3 25) and more than 22 columns separate the arrow from either
digit; its head is linear on the global average of local features, which is the average of a per-position linear
head, so its logits are ``a(arrow) + g(left digit) + h(right digit)``: a sum cannot pick a digit by the arrow's
direction, and the plain CNN tops out near 55% (always read one side). What can solve it: a block that mixes
positions (non-local, SAGAN, criss-cross, AA, BoTNet, SASA only within its 7x7 window, ViT), or a channel gate
computed from the global average (SE, ECA, CBAM: a non-linear function of the bag of features, which can switch
off the channels of one side when the arrow's channels say so).

Why not ``relational``: its ``same`` question is long-range as well (no sum ``g(a) + g(b)`` separates same from
different), but learns from a one-bit label: in a pilot at 300 steps of 32 canvases, the plain CNN, SAGAN,
non-local and the ViT all stayed at chance (48-53% dev accuracy), so at our budgets it measures nothing. Its
``sum`` question is answered exactly by a sum of per-digit scores, i.e. by the plain CNN. The ``canvas-relational``
experiments stay registered for longer runs.

Splits: training canvases from the train pool (seed ``data_seed``), dev canvases from the train pool as well but
another seed (new compositions of training digits: for early stopping and model selection), test canvases from the
disjoint test pool (seed ``data_seed + 2``): no test canvas contains a pixel of a training image. The data seed is
fixed; the run seed changes the initial weights and the batch order only.

Budgets (one thread): ``smoke`` 4 steps of 16 on 64 canvases; ``quick`` 250 steps of 32 on 4,000 canvases (about a
minute on an idle core); ``full`` 700 steps of 32 (about 2.2 epochs of 10,000 canvases). Learning rate 2e-3 (CNNs)
and 1e-3 (ViT), warmup then cosine decay to 5%.

Measured (full budget, 3 seeds, test accuracy mean +- std): plain CNN 54.2 +- 0.5, SAGAN 53.5 +- 0.5, non-local
54.4 +- 0.6, BoTNet 54.0 +- 1.5, SAGAN at stage2 53.6 +- 1.1, SAGAN without gate 52.6 +- 0.8, ViT 16.5 +- 1.0: at
700 steps every CNN variant sits at the bag-of-features ceiling and no block has learned to follow the arrow yet.
BoTNet trained for 2,000 steps (``--max-steps 2000``, one seed) reaches 99.2% dev and 98.0% test: the relation is
learnable by self-attention with relative positions, but needs about 3x the full budget. Sweep:
``/root/attnlab-runs/vision-sweep`` (see :mod:`attnlab.experiments.sweep`).

Parameters (full budget, pointer task, 10 classes): plain CNN 87,006; CNN + se 78,334, eca 77,757, cbam 78,434,
sagan 82,875, criss_cross 82,955, botnet 81,282, nonlocal 86,234, sasa 90,154 (+3.6%), aa_conv 104,554 (+20%:
AA-conv is itself a 3x3 convolution over half the channels, plus attention); ViT 81,130.
``tests/experiments/test_vision_experiments.py`` checks every model stays within :data:`PARAMETER_TOLERANCE` of the
plain CNN (AA-conv within :data:`AA_CONV_LARGER`).

Models are saved and rebuilt through :mod:`attnlab.experiments.models` as :class:`CanvasCNN` (an
:class:`~attnlab.vision.AttentionResNet` built from a :class:`CanvasCNNConfig`) and :class:`CanvasViT` (a
:class:`~attnlab.vision.VisionTransformer` from a :class:`CanvasViTConfig`); their state dicts are those of the
wrapped classes. :mod:`attnlab.experiments.sweep` trains them over seeds and scores them on the test split.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data import digits
from attnlab.seq.loss import TokenLoss
from attnlab.train.trainer import TrainConfig, TrainData, Validation
from attnlab.vision import STAGES, AttentionResNet, VisionTransformer, available_blocks

from .base import Budget, Experiment, register

__all__ = [
    "BLOCKS",
    "PARAMETER_TOLERANCE",
    "CanvasCNN",
    "CanvasCNNConfig",
    "CanvasTask",
    "CanvasViT",
    "CanvasViTConfig",
    "ImageBatch",
    "canvas_experiments",
    "classification_loss",
]

#: every registered shape-preserving block (``vit`` is a model, trained on its own)
BLOCKS = tuple(name for name in available_blocks() if name != "vit")
#: block models may have at most this fraction more parameters than the plain CNN, and at most this fraction fewer
PARAMETER_TOLERANCE = {"larger": 0.05, "smaller": 0.15}
#: AA-conv is itself a 3x3 convolution (half the channels) plus attention: it is allowed to be this much larger
AA_CONV_LARGER = 0.25


# ----------------------------------------------------------------------------------------------------------
# Batches and loss
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageBatch:
    """``images [B, 1, H, W]`` float and ``labels [B]`` long."""

    images: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.images.to(device), self.labels.to(device))


def classification_loss(model: nn.Module, batch: ImageBatch, *, label_smoothing: float = 0.0) -> TokenLoss:
    """Summed cross-entropy of ``model(images) -> logits [B, classes]`` and the number of images (the trainer
    divides the sum by the global count, as it does with tokens)."""
    logits = model(batch.images)  # (B, classes)
    total = F.cross_entropy(logits.float(), batch.labels, reduction="sum", label_smoothing=label_smoothing)
    return TokenLoss(total, torch.tensor(batch.labels.numel()))


@functools.lru_cache(maxsize=6)
def _generate(kind: str, n: int, pool: str, seed: int, options: tuple[tuple[str, Any], ...]) -> digits.Canvases:
    """Canvases, kept for the process: a sweep trains many models on the same (pure-function) data."""
    return GENERATORS[kind](n, pool, seed=seed, **dict(options))


def _collate(indices: list[int], images: Tensor, labels: Tensor) -> ImageBatch:
    rows = torch.as_tensor(indices)
    return ImageBatch(images[rows], labels[rows])  # (B, 1, H, W), (B,)


# ----------------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------------

GENERATORS = {"pointer": digits.pointer, "relational": digits.relational, "cluttered": digits.cluttered}
RELATIONAL_CLASSES = {"same": 2, "sum": 19}  # classes per relational question
_SPLIT_POOL = {"train": ("train", 0), "dev": ("train", 1), "test": ("test", 2)}  # split -> (digit pool, seed offset)


class CanvasTask:
    """Classify digit canvases: ``kind`` is ``"relational"`` or ``"cluttered"``, ``options`` go to the generator
    (e.g. ``{"question": "same", "clutter": 2}``). Dev metric: ``accuracy`` (percent, higher is better).

    Canvases are generated on first use and kept; building the task (and a model for it) generates one canvas.
    """

    name = "canvas"

    def __init__(
        self,
        kind: str = "relational",
        train_size: int = 10000,
        dev_size: int = 1000,
        test_size: int = 2000,
        data_seed: int = 0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if kind not in GENERATORS:
            raise ValueError(f"kind: expected one of {sorted(GENERATORS)}, received {kind!r}")
        for name, value in (("train_size", train_size), ("dev_size", dev_size), ("test_size", test_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, received {value!r}")
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed: expected an int >= 0, received {data_seed!r}")
        self.kind, self.data_seed = kind, data_seed
        self.sizes = {"train": train_size, "dev": dev_size, "test": test_size}
        self.options = dict(options or {})
        probe = GENERATORS[kind](1, "train", seed=data_seed, **self.options)  # a bad option fails here
        self.image_size: tuple[int, int] = tuple(probe.images.shape[-2:])
        self.in_channels = int(probe.images.shape[1])

    @property
    def num_classes(self) -> int:
        if self.kind in ("cluttered", "pointer"):
            return 10
        return RELATIONAL_CLASSES[self.options.get("question", "same")]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "train_size": self.sizes["train"], "dev_size": self.sizes["dev"],
                "test_size": self.sizes["test"], "data_seed": self.data_seed, "options": self.options}  # fmt: skip

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> CanvasTask:
        if spec.get("name") != cls.name:
            raise ValueError(f"task spec: name: expected {cls.name!r}, received {spec.get('name')!r}")
        return cls(spec["kind"], spec["train_size"], spec["dev_size"], spec["test_size"], spec["data_seed"],
                   spec.get("options"))  # fmt: skip

    def canvases(self, split: str) -> digits.Canvases:
        """The ``split`` canvases (``"train"``, ``"dev"`` or ``"test"``)."""
        if split not in _SPLIT_POOL:
            raise ValueError(f"split: expected one of {list(_SPLIT_POOL)}, received {split!r}")
        pool, offset = _SPLIT_POOL[split]
        options = tuple(sorted(self.options.items()))
        return _generate(self.kind, self.sizes[split], pool, self.data_seed + offset, options)

    def train_data(self) -> TrainData:
        train = self.canvases("train")
        n = len(train.labels)
        collate = functools.partial(_collate, images=train.images, labels=train.labels)
        return TrainData(list(range(n)), [1] * n, collate, loss_fn=classification_loss)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "dev", *, batch_size: int = 500) -> dict[str, Any]:
        """``accuracy`` (percent) and ``examples`` of ``model`` (in eval mode) on ``split``."""
        canvases = self.canvases(split)
        device = next(model.parameters()).device
        correct = 0
        for start in range(0, len(canvases.labels), batch_size):
            images = canvases.images[start : start + batch_size].to(device)  # (b, 1, H, W)
            predicted = model(images).argmax(dim=-1).cpu()  # (b,)
            correct += int((predicted == canvases.labels[start : start + batch_size]).sum())
        count = len(canvases.labels)
        return {"accuracy": 100.0 * correct / count, "examples": count}

    def validation(self) -> Validation:
        return Validation(lambda model: self.evaluate(model, "dev"), metric="accuracy", higher_is_better=True)


# ----------------------------------------------------------------------------------------------------------
# Models with a config (so a weight file rebuilds them)
# ----------------------------------------------------------------------------------------------------------


def _blocks(blocks: Sequence[Any]) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """``(stage, name, options)`` triples from a JSON round trip (lists) or tuples."""
    if isinstance(blocks, str | bytes) or not isinstance(blocks, Sequence):
        raise TypeError(f"blocks: expected a sequence of (stage, name, options), received {blocks!r}")
    out = []
    for item in blocks:
        if not (isinstance(item, Sequence) and len(item) == 3 and isinstance(item[2], Mapping)):
            raise TypeError(f"blocks: expected (stage, name, options) triples, received {item!r}")
        stage, name, options = item
        if stage not in STAGES:
            raise ValueError(f"blocks: stage: expected one of {STAGES}, received {stage!r}")
        out.append((str(stage), str(name), dict(options)))
    return tuple(out)


@dataclass(frozen=True)
class CanvasCNNConfig:
    """An :class:`~attnlab.vision.AttentionResNet`: ``blocks`` are ``(stage, block name, options)``.

    ``gate_init`` (None: the block's own, 0) sets the residual gate ``gamma`` of the inserted blocks that have one
    (SAGAN, criss-cross); ``gate_trainable=False`` freezes it: ``gate_init=1.0, gate_trainable=False`` is the
    ungated residual ``y = o + x``."""

    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)
    depth: int = 1
    blocks: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    gate_init: float | None = None
    gate_trainable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "blocks", _blocks(self.blocks))
        if self.gate_init is not None and (isinstance(self.gate_init, bool) or not isinstance(self.gate_init, float)):
            raise TypeError(f"gate_init: expected a float or None, received {self.gate_init!r}")
        if not isinstance(self.gate_trainable, bool):
            raise TypeError(f"gate_trainable: expected a bool, received {self.gate_trainable!r}")


class CanvasCNN(AttentionResNet):
    """:class:`~attnlab.vision.AttentionResNet` built from a :class:`CanvasCNNConfig` (kept as ``.config``)."""

    def __init__(self, config: CanvasCNNConfig) -> None:
        super().__init__(config.in_channels, config.num_classes, config.widths, config.depth, list(config.blocks))
        self.config = config
        if config.gate_init is None and config.gate_trainable:
            return
        gates = [m.gamma for m in self.attention.modules() if isinstance(getattr(m, "gamma", None), nn.Parameter)]
        if not gates:
            names = [name for _, name, _ in config.blocks]
            raise ValueError(f"gate_init/gate_trainable: no inserted block has a gate gamma; blocks: {names}")
        with torch.no_grad():
            for gamma in gates:
                if config.gate_init is not None:
                    gamma.fill_(config.gate_init)
                gamma.requires_grad_(config.gate_trainable)


@dataclass(frozen=True)
class CanvasViTConfig:
    """A :class:`~attnlab.vision.VisionTransformer` (``image_size``: the grid its position embeddings are for)."""

    in_channels: int = 1
    num_classes: int = 10
    image_size: tuple[int, int] = (32, 32)
    dim: int = 48
    depth: int = 4
    heads: int = 4
    patch_size: int = 4
    mlp_ratio: float = 2.0
    class_token: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(self.image_size))


class CanvasViT(VisionTransformer):
    """:class:`~attnlab.vision.VisionTransformer` built from a :class:`CanvasViTConfig` (kept as ``.config``)."""

    def __init__(self, config: CanvasViTConfig) -> None:
        super().__init__(config.in_channels, config.num_classes, dim=config.dim, depth=config.depth,
                         heads=config.heads, patch_size=config.patch_size, mlp_ratio=config.mlp_ratio,
                         image_size=config.image_size, class_token=config.class_token,
                         dropout=config.dropout)  # fmt: skip
        self.config = config


# ----------------------------------------------------------------------------------------------------------
# Budgets
# ----------------------------------------------------------------------------------------------------------

# Canvases per split. Train canvases are compositions of the 1,438 train-pool digits, so more of them is new data.
_DATA = {
    "smoke": {"train_size": 64, "dev_size": 32, "test_size": 32},
    "quick": {"train_size": 4000, "dev_size": 500, "test_size": 1000},
    "full": {"train_size": 10000, "dev_size": 1000, "test_size": 2000},
}
# Stage widths: block models use ``blocks``; the plain CNN is widened (``plain``) so it is not the smaller model.
_WIDTHS = {
    "smoke": {"blocks": (8, 16, 16), "plain": (8, 16, 16)},
    "quick": {"blocks": (16, 32, 64), "plain": (16, 32, 70)},
    "full": {"blocks": (16, 32, 64), "plain": (16, 32, 70)},
}
_VIT = {
    "smoke": {"dim": 16, "depth": 1, "heads": 2},
    "quick": {"dim": 48, "depth": 4, "heads": 4},
    "full": {"dim": 48, "depth": 4, "heads": 4},
}
_TRAIN = {
    "smoke": TrainConfig(max_steps=4, batch_size=16, lr=2e-3, eval_every=2, checkpoint_every=2),
    "quick": TrainConfig(max_steps=250, batch_size=32, lr=2e-3, warmup_steps=25, min_lr_ratio=0.05, eval_every=125,
                         checkpoint_every=125),
    "full": TrainConfig(max_steps=2000, batch_size=32, lr=2e-3, warmup_steps=50, min_lr_ratio=0.05,
                        eval_every=250, checkpoint_every=250),
}  # fmt: skip
_VIT_TRAIN = {  # a Transformer wants a smaller learning rate and a longer warmup than the CNN
    "smoke": _TRAIN["smoke"],
    "quick": TrainConfig(max_steps=250, batch_size=32, lr=1e-3, warmup_steps=40, min_lr_ratio=0.05, eval_every=125,
                         checkpoint_every=125),
    "full": TrainConfig(max_steps=2000, batch_size=32, lr=1e-3, warmup_steps=80, min_lr_ratio=0.05,
                        eval_every=250, checkpoint_every=250),
}  # fmt: skip
_OPTIONS = {"pointer": {}, "relational": {"question": "same"}, "cluttered": {}}
_WHAT = {
    "pointer": "class of the digit the arrow points at (16x80)",
    "relational": "left and right digit the same class? (16x64)",
    "cluttered": "one digit among clutter (32x32)",
}


def _cnn(blocks: Sequence[tuple[str, str, dict[str, Any]]] = (), **fixed: Any):
    def make(task: CanvasTask, **size: Any) -> nn.Module:
        return CanvasCNN(CanvasCNNConfig(in_channels=task.in_channels, num_classes=task.num_classes,
                                         blocks=tuple(blocks), **fixed, **size))  # fmt: skip

    return make


def _vit(task: CanvasTask, **size: Any) -> nn.Module:
    return CanvasViT(CanvasViTConfig(in_channels=task.in_channels, num_classes=task.num_classes,
                                     image_size=task.image_size, **size))  # fmt: skip


def _budgets(kind: str, model: str) -> dict[str, Budget]:
    """``model``: ``"plain"``, ``"blocks"`` (a CNN with blocks) or ``"vit"``."""
    out = {}
    for budget in _DATA:
        data = {"kind": kind, **_DATA[budget], "options": _OPTIONS[kind]}
        if model == "vit":
            out[budget] = Budget(train=_VIT_TRAIN[budget], model=_VIT[budget], data=data)
        else:
            out[budget] = Budget(train=_TRAIN[budget], model={"widths": _WIDTHS[budget][model]}, data=data)
    return out


@dataclass(frozen=True)
class _Variant:
    suffix: str
    description: str
    blocks: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)


_LATE = {name: _Variant(name, f"{name} after stage3 (1/4 resolution)", (("stage3", name, {}),)) for name in BLOCKS}
_ABLATIONS = [
    _Variant("sagan-stage1", "SAGAN after stage1 (full resolution: early)", (("stage1", "sagan", {}),)),
    _Variant("sagan-stage2", "SAGAN after stage2 (1/2 resolution)", (("stage2", "sagan", {}),)),
    _Variant("sagan-gate1", "SAGAN with gate gamma initialised to 1 (learned)", (("stage3", "sagan", {}),),
             {"gate_init": 1.0}),
    _Variant("sagan-nogate", "SAGAN with gamma fixed at 1 (no gate: y = o + x)", (("stage3", "sagan", {}),),
             {"gate_init": 1.0, "gate_trainable": False}),
    _Variant("sagan-kv2", "SAGAN after stage3, keys/values max-pooled 2x2", (("stage3", "sagan", {"kv_stride": 2}),)),
    _Variant("sagan-stage2-kv2", "SAGAN after stage2, keys/values max-pooled 2x2",
             (("stage2", "sagan", {"kv_stride": 2}),)),
]  # fmt: skip
# Which variants each task gets: every block and every ablation on the long-range task, a few on the others.
_VARIANTS = {
    "pointer": [*_LATE.values(), *_ABLATIONS],
    "relational": [_LATE[name] for name in ("se", "nonlocal", "sagan")],
    "cluttered": [_LATE[name] for name in ("se", "cbam", "nonlocal", "sagan")],
}


def _register_all() -> list[str]:
    names = []
    for kind, variants in _VARIANTS.items():
        prefix, what = f"canvas-{kind}", _WHAT[kind]
        experiments = [
            Experiment(f"{prefix}-cnn", f"Canvas, {what}: plain CNN (widened to match)", CanvasTask, _cnn(),
                       _budgets(kind, "plain")),
            *(Experiment(f"{prefix}-{v.suffix}", f"Canvas, {what}: CNN + {v.description}", CanvasTask,
                         _cnn(v.blocks, **v.fixed), _budgets(kind, "blocks")) for v in variants),
            Experiment(f"{prefix}-vit", f"Canvas, {what}: ViT, 4x4 patches", CanvasTask, _vit, _budgets(kind, "vit")),
        ]  # fmt: skip
        for experiment in experiments:
            register(experiment)
            names.append(experiment.name)
    return names


_NAMES = _register_all()


def canvas_experiments(kind: str | None = None) -> list[str]:
    """The registered canvas experiments (of ``kind``: ``"pointer"``, ``"relational"`` or ``"cluttered"``)."""
    return [name for name in _NAMES if kind is None or name.startswith(f"canvas-{kind}-")]
