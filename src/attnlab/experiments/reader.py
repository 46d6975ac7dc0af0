"""Reading digit strings from images (DESIGN claim 5): text attends over image features, two ways, same data.

=====================  =======================================================================================
name                   what it trains
=====================  =======================================================================================
reader-cross           CNN features + GRU decoder with cross-attention over them (Show, Attend and Tell; AT)
reader-single          CNN features and text tokens in one self-attention stream, prefix mask (SA across
                       modalities, as in SimVLM)
=====================  =======================================================================================

Data (:class:`ReaderTask`): ``digit_strings`` canvases, 12 x 64 pixels, 3-5 digits. Training canvases draw
only train-pool digit images (``train_seed``); the evaluation canvases (``digit_strings(test_size, "test",
test_seed)``) draw only test-pool images, so every test digit is an image the model has never seen.

Metric: ``exact_reads``, the fraction (in [0, 1]) of canvases whose greedy read equals the label string exactly;
also ``token_accuracy``, the fraction of target tokens (digits and the closing EOS) that the read has at the
same position. The Trainer's dev evaluation uses these test canvases (there is no third pool of digit images),
with no early stopping; report the final weights (``model.safetensors``), not the best ones.

Budgets (both readers share them, so the tour compares the two on the same data and schedule):
``smoke`` a few steps of a tiny model; ``quick`` 600 steps (on 2 threads of a quiet machine 124 s for the cross
reader with scaled_dot attention and 261 s for the single stream; 85.0% exact reads for the additive cross
reader, 94.3% for the single stream, seed 0); ``full`` the recipe
that reads >= 95% of 1,000 test strings exactly (see the measured numbers below each plan).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.data import Canvases, digit_strings
from attnlab.seq.decode import greedy
from attnlab.seq.loss import TokenLoss, token_cross_entropy
from attnlab.train.trainer import TrainConfig, TrainData, Validation
from attnlab.vision.reader import (
    BOS,
    EOS,
    PAD,
    CrossReader,
    SingleStreamReader,
    pixel_tokens,
    strings,
    targets,
)

from .base import Budget, Experiment, register

__all__ = [
    "CrossReaderConfig",
    "CrossReaderModel",
    "ReaderBatch",
    "ReaderTask",
    "SingleStreamConfig",
    "SingleStreamReaderModel",
    "read_strings",
    "reader_loss",
    "score_reads",
]

LEVELS = 16  # canvases hold multiples of 1/16 (load_digits pixels are 0..16): stored exactly as uint8 levels


# -- models that carry their config (so a weight file rebuilds them: attnlab.experiments.models) ----------------
def _as_pair(name: str, value: Any) -> tuple[int, int]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name}: expected a pair of ints, received {value!r}")
    return tuple(value)  # JSON gives lists; the models take tuples


@dataclass(frozen=True)
class CrossReaderConfig:
    """The constructor arguments of :class:`~attnlab.vision.reader.CrossReader`, as plain JSON-able data."""

    dim: int = 64
    widths: tuple[int, int] = (32, 64)
    heads: int = 1
    score: str = "additive"
    dropout: float = 0.0
    image_size: tuple[int, int] = (12, 64)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _as_pair("widths", self.widths))
        object.__setattr__(self, "image_size", _as_pair("image_size", self.image_size))


@dataclass(frozen=True)
class SingleStreamConfig:
    """The constructor arguments of :class:`~attnlab.vision.reader.SingleStreamReader`."""

    dim: int = 64
    widths: tuple[int, int] = (32, 64)
    layers: int = 2
    heads: int = 2
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    image_size: tuple[int, int] = (12, 64)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _as_pair("widths", self.widths))
        object.__setattr__(self, "image_size", _as_pair("image_size", self.image_size))


class CrossReaderModel(CrossReader):
    """A :class:`CrossReader` built from a :class:`CrossReaderConfig` (kept as ``.config``); nothing else."""

    def __init__(self, config: CrossReaderConfig) -> None:
        if not isinstance(config, CrossReaderConfig):
            raise TypeError(f"config: expected a CrossReaderConfig, received {type(config).__name__}")
        super().__init__(**dataclasses.asdict(config))
        self.config = config


class SingleStreamReaderModel(SingleStreamReader):
    """A :class:`SingleStreamReader` built from a :class:`SingleStreamConfig` (kept as ``.config``)."""

    def __init__(self, config: SingleStreamConfig) -> None:
        if not isinstance(config, SingleStreamConfig):
            raise TypeError(f"config: expected a SingleStreamConfig, received {type(config).__name__}")
        super().__init__(**dataclasses.asdict(config))
        self.config = config


# -- batches, loss, reading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReaderBatch:
    """Canvases and their strings for teacher forcing: ``tgt_in = BOS d_1 .. d_n``, ``tgt_out = d_1 .. d_n EOS``."""

    images: Tensor  # (B, 1, H, W) float32 in [0, 1]
    tgt_in: Tensor  # (B, T) long
    tgt_out: Tensor  # (B, T) long, PAD = 0 after EOS

    def to(self, device: torch.device | str) -> ReaderBatch:
        return ReaderBatch(self.images.to(device), self.tgt_in.to(device), self.tgt_out.to(device))


def reader_loss(model: nn.Module, batch: ReaderBatch, *, label_smoothing: float = 0.0) -> TokenLoss:
    """Summed token cross-entropy of a reader on ``batch`` (teacher forcing; PAD counts for nothing)."""
    logits = model(batch.images, batch.tgt_in)  # (B, T, V)
    return token_cross_entropy(logits, batch.tgt_out, pad_id=PAD, label_smoothing=label_smoothing)


def distort(images: Tensor, pixels: float, spacing: int = 4) -> Tensor:
    """Elastic distortion (Simard et al. 2003), one random field per image: ``images [B, C, H, W]`` resampled at
    ``p + d(p)``, where ``d`` is uniform noise in ``[-pixels, pixels]`` on a grid of control points ``spacing``
    pixels apart, interpolated bicubically: neighbouring pixels move together, so each digit is bent, sheared
    and scaled a little on its own while the string stays in place. Draws from torch's global RNG (the Trainer
    saves and restores it, so resumed runs see the same distortions)."""
    batch, _, height, width = images.shape
    coarse = (height // spacing + 2, width // spacing + 2)
    field = (torch.rand(batch, 2, *coarse, device=images.device) * 2 - 1) * pixels  # (B, 2, h, w): dx, dy in pixels
    field = nn.functional.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)  # (B,2,H,W)
    ys = torch.linspace(-1, 1, height, device=images.device)
    xs = torch.linspace(-1, 1, width, device=images.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2): (x, y), as grid_sample wants
    scale = torch.tensor([2 / (width - 1), 2 / (height - 1)], device=images.device)  # pixels -> [-1, 1] units
    grid = base + field.permute(0, 2, 3, 1) * scale  # (B, H, W, 2)
    return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _collate(
    indices: list[int], levels: Tensor, labels: Sequence[Sequence[int]], distortion: float = 0.0
) -> ReaderBatch:
    rows = torch.as_tensor(indices, dtype=torch.long)
    tgt_in, tgt_out = targets([labels[i] for i in indices])
    images = levels[rows].float() / LEVELS  # (B, 1, H, W)
    if distortion > 0:
        images = distort(images, distortion)
    return ReaderBatch(images, tgt_in, tgt_out)  # (B, 1, H, W), (B, T), (B, T)


@torch.no_grad()
def read_strings(model: nn.Module, images: Tensor, *, max_digits: int = 5, batch_size: int = 250) -> list[list[int]]:
    """Greedy reads of ``images [N, 1, H, W]`` (digit canvases) as digit lists; the model should be in eval mode.

    Decoding stops after ``max_digits + 1`` tokens (digits and EOS); an unfinished read is whatever came out."""
    device = next(model.parameters()).device
    reads: list[list[int]] = []
    for start in range(0, images.shape[0], batch_size):
        src, lengths = pixel_tokens(images[start : start + batch_size].to(device))  # (B, H*W), (B,)
        decoded = greedy(model, src, lengths, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=max_digits + 1)
        reads += strings(decoded.tokens.cpu())
    return reads


def score_reads(reads: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> dict[str, float | int]:
    """``exact_reads``: fraction of reads equal to their label; ``token_accuracy``: fraction of target tokens
    (each label's digits, then EOS) matched at the same position by the read (its digits, then its end);
    ``strings``: how many. Both fractions are in [0, 1]."""
    if len(reads) != len(labels):
        raise ValueError(f"reads: expected one read per label ({len(labels)}), received {len(reads)}")
    exact = tokens = matched = 0
    for read, label in zip(reads, labels, strict=True):
        read, label = list(read), list(label)
        exact += read == label
        tokens += len(label) + 1
        matched += sum(r == t for r, t in zip(read, label, strict=False)) + (len(read) == len(label))
    count = len(labels)
    return {"exact_reads": exact / max(count, 1), "token_accuracy": matched / max(tokens, 1), "strings": count}


# -- the task ----------------------------------------------------------------------------------------------------
@functools.cache
def _canvases(n: int, split: str, seed: int, min_digits: int, max_digits: int) -> Canvases:
    """``digit_strings`` once per process per argument set (100,000 canvases take ~20 s to paint)."""
    return digit_strings(n, split, min_digits=min_digits, max_digits=max_digits, seed=seed)


class ReaderTask:
    """Read the digit string on a 12 x 64 canvas. ``train_size`` canvases from the train pool (seed
    ``train_seed``); evaluation on ``test_size`` canvases from the test pool (seed ``test_seed``). With
    ``distortion > 0`` every training batch is freshly bent by :func:`distort` (up to that many pixels):
    the readers otherwise memorize the 1,438 training digit images and stop improving on new ones.

    Dev metric: ``exact_reads`` (fraction read exactly, higher is better), greedy decoding."""

    name = "digit-strings"

    def __init__(
        self,
        train_size: int = 20000,
        test_size: int = 1000,
        *,
        min_digits: int = 3,
        max_digits: int = 5,
        train_seed: int = 1,
        test_seed: int = 0,
        distortion: float = 0.0,
    ) -> None:
        for key, value, low in (("train_size", train_size, 1), ("test_size", test_size, 1),
                                ("min_digits", min_digits, 1), ("max_digits", max_digits, min_digits),
                                ("train_seed", train_seed, 0), ("test_seed", test_seed, 0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key}: expected an int >= {low}, received {value!r}")
        self.train_size, self.test_size = train_size, test_size
        self.min_digits, self.max_digits = min_digits, max_digits
        self.train_seed, self.test_seed = train_seed, test_seed
        if isinstance(distortion, bool) or not isinstance(distortion, int | float) or not 0 <= distortion <= 4:
            raise ValueError(f"distortion: expected a number of pixels in [0, 4], received {distortion!r}")
        self.distortion = float(distortion)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "train_size": self.train_size, "test_size": self.test_size,
                "min_digits": self.min_digits, "max_digits": self.max_digits, "train_seed": self.train_seed,
                "test_seed": self.test_seed, "distortion": self.distortion}  # fmt: skip

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ReaderTask:
        if spec.get("name") != cls.name:
            raise ValueError(f"spec: expected task {cls.name!r}, received {spec.get('name')!r}")
        return cls(**{key: value for key, value in spec.items() if key != "name"})

    def canvases(self, split: str) -> Canvases:
        """The training (``"train"``) or evaluation (``"test"``) canvases."""
        if split == "train":
            return _canvases(self.train_size, "train", self.train_seed, self.min_digits, self.max_digits)
        if split == "test":
            return _canvases(self.test_size, "test", self.test_seed, self.min_digits, self.max_digits)
        raise ValueError(f"split: expected 'train' or 'test', received {split!r}")

    def train_data(self) -> TrainData:
        data = self.canvases("train")
        levels = (data.images * LEVELS).round().to(torch.uint8)  # (N, 1, H, W): exact, 4x smaller than float32
        # One length for all: the CNN dominates the cost, so bucketing by string length would save nothing, and
        # batches of one length (3-digit canvases hold less ink) would skew BatchNorm's batch statistics.
        lengths = [self.max_digits + 1] * len(data.labels)
        collate = functools.partial(_collate, levels=levels, labels=data.labels, distortion=self.distortion)
        return TrainData(range(len(lengths)), lengths, collate, loss_fn=reader_loss)

    def evaluate(self, model: nn.Module, canvases: Canvases | None = None) -> dict[str, float | int]:
        """:func:`score_reads` of the model's greedy reads of ``canvases`` (default: the test canvases)."""
        canvases = canvases if canvases is not None else self.canvases("test")
        reads = read_strings(model, canvases.images, max_digits=self.max_digits)
        return score_reads(reads, canvases.labels)

    def validation(self) -> Validation:
        return Validation(self.evaluate, metric="exact_reads", higher_is_better=True)


# -- budgets -----------------------------------------------------------------------------------------------------
_DATA = {
    "smoke": {"train_size": 128, "test_size": 32},
    "quick": {"train_size": 20000, "test_size": 1000},
    "full": {"train_size": 60000, "test_size": 1000, "distortion": 0.8},
}
_CROSS_SIZES = {
    "smoke": {"dim": 16, "widths": (8, 16)},
    "quick": {"dim": 64, "widths": (32, 64), "dropout": 0.1},
    "full": {"dim": 64, "widths": (32, 64), "dropout": 0.1},
}
_SINGLE_SIZES = {
    "smoke": {"dim": 16, "widths": (8, 16), "layers": 1, "heads": 2},
    "quick": {"dim": 64, "widths": (32, 64), "layers": 2, "heads": 2, "dropout": 0.1},
    "full": {"dim": 64, "widths": (32, 64), "layers": 2, "heads": 2, "dropout": 0.1},
}
_TRAIN = {
    "smoke": TrainConfig(max_steps=12, batch_size=16, lr=3e-3, warmup_steps=2, weight_decay=1e-4, eval_every=6,
                         checkpoint_every=6),
    "quick": TrainConfig(max_steps=600, batch_size=64, lr=2e-3, warmup_steps=100, weight_decay=1e-4,
                         label_smoothing=0.05, eval_every=300, checkpoint_every=300),
    "full": TrainConfig(max_steps=3000, batch_size=64, lr=2e-3, warmup_steps=100, weight_decay=1e-4,
                        label_smoothing=0.05, eval_every=500, checkpoint_every=500),
}  # fmt: skip


def _budgets(sizes: dict[str, dict[str, Any]]) -> dict[str, Budget]:
    return {name: Budget(train=_TRAIN[name], model=sizes[name], data=_DATA[name]) for name in _TRAIN}


def _cross(task: ReaderTask, **size: Any) -> nn.Module:
    return CrossReaderModel(CrossReaderConfig(**size))


def _single(task: ReaderTask, **size: Any) -> nn.Module:
    return SingleStreamReaderModel(SingleStreamConfig(**size))


register(
    Experiment(
        "reader-cross",
        "Read digit strings from images: GRU decoder with cross-attention over CNN features (AT across modalities)",
        ReaderTask,
        _cross,
        _budgets(_CROSS_SIZES),
    )
)
register(Experiment(
    "reader-single",
    "Read digit strings from images: one self-attention stream over [image features; text], prefix mask",
    ReaderTask, _single, _budgets(_SINGLE_SIZES),
))  # fmt: skip
