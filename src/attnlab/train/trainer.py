"""One trainer for every model: AdamW, warmup + decay, gradient clipping, early stopping on a dev metric,
checkpoints that resume bit-identically (RELIABILITY promises 8-10), and data-parallel runs under ``torchrun``.

A training step, with ``N`` the number of target tokens in the *global* batch::

    loss_sum, tokens = loss_fn(model, my slice of the batch)     # summed cross-entropy and its token count
    grad = all_reduce_sum(d loss_sum / d theta) / all_reduce_sum(tokens)   # = d(mean loss)/d theta of one process
    clip(grad); AdamW.step(); LambdaLR.step()

Run directory (written by rank 0 only; create it with :func:`attnlab.train.rundir.prepare_run_dir`)::

    DIR/
      checkpoint/         model, AdamW, LambdaLR and RNG state + ``extra``: step, epoch, batch (position within the
                          epoch), best dev metric, patience counter, config (see attnlab.train.checkpoint)
      train.jsonl         one line per optimizer step: step, epoch, batch, loss, tokens, lr, grad_norm. Nothing
                          time-dependent, so a resumed run's log is byte-identical to an uninterrupted one's.
      eval.jsonl          one line per dev evaluation: step, the metrics, best so far, train seconds, tokens/s
      best.safetensors    the weights with the best dev metric so far (metadata: ``metadata`` + step + dev metrics)
      model.safetensors   the final weights, same metadata (the model config in it rebuilds the model)
      weights/            with ``keep_weights=K``: the weights at each checkpoint, ``step-0001000.safetensors``
                          and so on (same metadata; ``dev`` is None unless the step was also evaluated), the newest
                          K kept: material for checkpoint averaging. The last one is the final step's, which may
                          be closer to the one before it when ``max_steps`` is not a multiple of the interval
      summary.json        how the run ended: steps, stop reason, best metric and step, timings, tokens/s

Order within a step: train, log, evaluate (maybe write ``best.safetensors``), checkpoint. A fresh run commits a
checkpoint at step 0, so ``resume`` works as soon as the run has started.

Resume (``fit(resume=True)``) restores weights, optimizer, scheduler and every RNG, regenerates the epoch's batch
order from ``(seed, epoch)`` and skips the batches already consumed, and cuts ``train.jsonl``/``eval.jsonl``
back to the checkpoint's step (a kill can land after steps that were logged but never checkpointed): the
resumed run then repeats those steps exactly and ends with bit-identical weights and logs on CPU. A
``best.safetensors`` written after the last checkpoint is rewritten when the resumed run gets there again.

Non-finite values: a NaN/Inf loss (or gradient norm) raises :class:`NonFiniteLossError` naming the step before
anything is updated or saved, so the last checkpoint and ``best.safetensors`` stay as they were.

Evaluation runs on rank 0 (other ranks wait for its metric) with the RNG states saved around it, so evaluating
more or less often never changes the training trajectory. With ``bf16=True`` training *and* dev evaluation run
under ``torch.autocast(dtype=torch.bfloat16)``: 1.2-1.6x faster for the lab's full-size models on this project's
AVX512 CPU, no gain for tiny ones (the smoke and quick budgets leave it off). Resume is bit-identical either way,
given the same thread count (``OMP_NUM_THREADS``): CPU kernels may split reductions by thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from attnlab.data.batching import bucket_batches
from attnlab.seq.loss import TokenLoss, token_cross_entropy
from attnlab.train.checkpoint import (
    atomic_write_bytes,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_tensors,
)
from attnlab.train.distributed import (
    SINGLE,
    DistContext,
    all_gather_tensor,
    broadcast_parameters,
    local_share,
    sync_gradients,
)
from attnlab.train.rundir import append_jsonl, checkpoint_dir, lock_run_dir

__all__ = [
    "BEST_FILE",
    "EVAL_LOG",
    "MODEL_FILE",
    "SUMMARY_FILE",
    "TRAIN_LOG",
    "WEIGHTS_DIR",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "Trainer",
    "Validation",
    "WarmupDecay",
    "check_keep_weights",
    "make_batches",
    "seq2seq_loss",
]

TRAIN_LOG = "train.jsonl"
EVAL_LOG = "eval.jsonl"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
WEIGHTS_DIR = "weights"
SUMMARY_FILE = "summary.json"

SCHEDULES = ("constant", "linear", "cosine", "inverse_sqrt")
BATCH_UNITS = ("sentences", "tokens")
TOKEN_CHUNK = 16  # token batches are cut from chunks of this many batches' worth of similar-length sentences


class NonFiniteLossError(FloatingPointError):
    """The training loss (or gradient norm) became NaN/Inf at ``step``; nothing was updated or saved after it."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(message)
        self.step = step


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


def _check_number(name: str, value: Any, *, minimum: float, integer: bool = False, below: float | None = None) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        what = "an int" if integer else "a finite number"
        raise TypeError(f"{name}: expected {what}, received {type(value).__name__} {value!r}")
    if value < minimum or (below is not None and value >= below):
        bound = f"in [{minimum}, {below})" if below is not None else f">= {minimum}"
        raise ValueError(f"{name}: expected a value {bound}, received {value!r}")


def check_keep_weights(keep_weights: Any) -> None:
    """``keep_weights`` (how many checkpoints' weights to keep): an int >= 0."""
    _check_number("keep_weights", keep_weights, minimum=0, integer=True)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train (not what): the same config type drives every model.

    ``batch_size`` counts sentences, or with ``batch_unit="tokens"`` it is a budget of padded tokens per batch
    (see :func:`make_batches`); it is the *global* batch, split across data-parallel ranks. The learning rate
    rises linearly over ``warmup_steps`` and then follows ``schedule`` to ``lr * min_lr_ratio`` at ``max_steps``
    (``inverse_sqrt``: Vaswani et al.'s ``sqrt(warmup / step)``, no floor). Weight decay applies to matrices only
    (not biases, norms or vectors). ``clip_norm=None`` disables clipping. Every ``eval_every`` steps (and at the
    end) the dev metric is computed; ``patience`` evaluations in a row without improvement stop the run (None:
    never). ``checkpoint_every`` steps a checkpoint is committed (and at the end).
    """

    max_steps: int = 1000
    batch_size: int = 64
    batch_unit: str = "sentences"
    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    clip_norm: float | None = 1.0
    label_smoothing: float = 0.0
    eval_every: int = 500
    checkpoint_every: int = 500
    patience: int | None = None
    seed: int = 0
    bf16: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_every", "checkpoint_every"):
            _check_number(name, getattr(self, name), minimum=1, integer=True)
        _check_number("warmup_steps", self.warmup_steps, minimum=0, integer=True)
        _check_number("seed", self.seed, minimum=0, integer=True)
        if self.patience is not None:
            _check_number("patience", self.patience, minimum=1, integer=True)
        if self.batch_unit not in BATCH_UNITS:
            raise ValueError(f"batch_unit: expected one of {BATCH_UNITS}, received {self.batch_unit!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, received {self.schedule!r}")
        _check_number("lr", self.lr, minimum=0.0)
        if self.lr == 0.0:
            raise ValueError("lr: expected a positive learning rate, received 0.0")
        _check_number("min_lr_ratio", self.min_lr_ratio, minimum=0.0)
        if self.min_lr_ratio > 1.0:
            raise ValueError(f"min_lr_ratio: expected a value in [0, 1], received {self.min_lr_ratio!r}")
        _check_number("weight_decay", self.weight_decay, minimum=0.0)
        _check_number("label_smoothing", self.label_smoothing, minimum=0.0, below=1.0)
        if self.clip_norm is not None:
            _check_number("clip_norm", self.clip_norm, minimum=0.0)
            if self.clip_norm == 0.0:
                raise ValueError("clip_norm: expected a positive norm or None (no clipping), received 0.0")
        if not isinstance(self.betas, tuple | list) or len(self.betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), received {self.betas!r}")
        for i, beta in enumerate(self.betas):
            _check_number(f"betas[{i}]", beta, minimum=0.0, below=1.0)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not isinstance(self.bf16, bool):
            raise TypeError(f"bf16: expected a bool, received {type(self.bf16).__name__} {self.bf16!r}")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (``betas`` as a list); :meth:`from_json` inverts it."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"TrainConfig: unknown fields {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


class WarmupDecay:
    """The LR multiplier of :class:`torch.optim.lr_scheduler.LambdaLR`: linear warmup, then a decay.

    A plain object, not a lambda: LambdaLR stores a callable object's ``__dict__`` in its state (here ints, a str
    and a float: JSON), so the schedule survives a checkpoint. ``LambdaLR`` calls it with the number of updates
    already done, so update ``k`` (1-based) uses ``factor(k - 1)``.
    """

    def __init__(self, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float = 0.0) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, received {schedule!r}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.schedule = schedule
        self.min_ratio = float(min_ratio)

    def __call__(self, done: int) -> float:
        step = done + 1  # the update this LR is for, 1-based
        warmup = self.warmup_steps
        if warmup and step <= warmup:
            return step / warmup
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "inverse_sqrt":
            return math.sqrt(max(warmup, 1) / step)
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        shape = 1.0 - progress if self.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: matrices (decayed) and vectors/scalars (biases, norms: not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, foreach=False)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = WarmupDecay(config.warmup_steps, config.max_steps, config.schedule, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainData:
    """The training set as the trainer sees it: ``examples`` (indexable), their ``lengths`` in tokens (for
    bucketing and token budgets), and ``collate(list of examples) -> batch`` (a batch with ``.to(device)``,
    e.g. :class:`attnlab.data.Seq2SeqBatch`). ``loss_fn(model, batch, *, label_smoothing)`` turns such a batch
    into a :class:`~attnlab.seq.TokenLoss` when the model is not called as ``model(batch)`` (None:
    :func:`seq2seq_loss`); the Trainer's own ``loss_fn`` argument overrides it."""

    examples: Sequence[Any]
    lengths: Sequence[int]
    collate: Callable[[list[Any]], Any]
    loss_fn: Callable[..., TokenLoss] | None = None

    def __post_init__(self) -> None:
        if len(self.examples) == 0:
            raise ValueError("examples: expected at least one training example, received none")
        if len(self.lengths) != len(self.examples):
            raise ValueError(
                f"lengths: expected one length per example ({len(self.examples)}), received {len(self.lengths)}"
            )
        if not callable(self.collate):
            raise TypeError(f"collate: expected a callable, received {type(self.collate).__name__}")
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(f"loss_fn: expected a callable or None, received {type(self.loss_fn).__name__}")


def make_batches(lengths: Sequence[int] | np.ndarray, config: TrainConfig, epoch: int) -> list[list[int]]:
    """The global batches of ``epoch``: a pure function of ``(lengths, config.seed, epoch)``.

    ``batch_unit="sentences"``: :func:`attnlab.data.bucket_batches` with ``batch_size`` sentences.
    ``batch_unit="tokens"``: ``bucket_batches`` cuts the shuffled, length-sorted pools into chunks of
    ``TOKEN_CHUNK`` times ``batch_size // mean length`` sentences; each chunk (similar lengths, sorted) is cut
    greedily where ``sentences x longest length`` would pass ``batch_size`` tokens, and the pieces are shuffled
    (seeded by ``(seed, epoch)``). A single example longer than the budget forms a batch of its own.
    """
    lengths = np.asarray(lengths)
    if config.batch_unit == "sentences":
        return bucket_batches(lengths, config.batch_size, config.seed, epoch)
    per_batch = max(1, config.batch_size // max(1, round(float(lengths.mean()))))
    pieces: list[list[int]] = []
    for chunk in bucket_batches(lengths, TOKEN_CHUNK * per_batch, config.seed, epoch):
        piece: list[int] = []
        longest = 0
        for index in chunk:
            length = int(lengths[index])
            if piece and max(longest, length) * (len(piece) + 1) > config.batch_size:
                pieces.append(piece)
                piece, longest = [], 0
            piece.append(index)
            longest = max(longest, length)
        pieces.append(piece)
    order = np.random.default_rng([config.seed, epoch, 1]).permutation(len(pieces))
    return [pieces[i] for i in order]


def seq2seq_loss(model: nn.Module, batch: Any, *, label_smoothing: float = 0.0) -> TokenLoss:
    """Summed token cross-entropy of a sequence-to-sequence model on a :class:`~attnlab.data.Seq2SeqBatch`
    (teacher forcing: the model reads ``tgt_in`` and predicts ``tgt_out``; padding, id 0, counts for nothing)."""
    return token_cross_entropy(model(batch), batch.tgt_out, pad_id=0, label_smoothing=label_smoothing)


@dataclass(frozen=True)
class Validation:
    """Dev evaluation: ``evaluate(model) -> {metric: value}`` (called in eval mode under ``no_grad``, on rank 0);
    ``metric`` is the one early stopping and ``best.safetensors`` follow; ``higher_is_better`` its direction."""

    evaluate: Callable[[nn.Module], Mapping[str, float]]
    metric: str
    higher_is_better: bool = False


# ----------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _State:
    """Everything about the loop's progress; saved in the checkpoint's ``extra["trainer"]``."""

    step: int = 0  # optimizer updates done
    epoch: int = 0
    batch: int = 0  # batches of ``epoch`` consumed
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations in a row without improvement
    last_eval_step: int | None = None
    metrics: dict[str, Any] | None = None  # the last dev metrics
    tokens: int = 0  # target tokens trained on (global)
    examples: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    done: bool = False
    stop_reason: str | None = None


@dataclass(frozen=True)
class TrainResult:
    """How a run ended (also written to ``summary.json``)."""

    run_dir: Path
    step: int
    epoch: int
    stop_reason: str
    metric: str | None
    best: float | None
    best_step: int | None
    metrics: dict[str, Any] | None
    tokens: int
    train_seconds: float
    eval_seconds: float
    tokens_per_s: float
    model_path: Path
    best_path: Path | None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("run_dir", "model_path", "best_path"):
            data[key] = None if data[key] is None else str(data[key])
        return data


def _finite_or_none(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}


class Trainer:
    """Train ``model`` on ``data`` with ``config`` into ``run_dir``; :meth:`fit` runs (or resumes) the loop.

    Args:
        model: any module; ``loss_fn(model, batch)`` must return a :class:`~attnlab.seq.TokenLoss` (sum, count).
        config: the :class:`TrainConfig`.
        data: the :class:`TrainData`.
        run_dir: an existing run directory (see :func:`~attnlab.train.rundir.prepare_run_dir`).
        loss_fn: defaults to ``data.loss_fn`` (or :func:`seq2seq_loss`) with ``config.label_smoothing``.
        validation: dev evaluation for early stopping and ``best.safetensors``; None: neither.
        metadata: plain JSON stored in the weight files (e.g. the model config, so the model can be rebuilt).
        dist: the data-parallel context (:func:`~attnlab.train.distributed.init_from_env`); one process by default.
        progress: show a tqdm bar (None: only when stderr is a terminal); ``verbose``: one line per evaluation.
        keep_weights: also write the weights at every checkpoint (after step 0) to ``weights/step-<step>.safetensors``
            and keep the newest ``keep_weights`` of them (0: none), for averaging with ``attnlab export``; their
            ``dev`` metadata is None unless the step was evaluated. Output only: not part of the config, so a run
            may be resumed with another value.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        data: TrainData,
        run_dir: str | Path,
        *,
        loss_fn: Callable[[nn.Module, Any], TokenLoss] | None = None,
        validation: Validation | None = None,
        metadata: Mapping[str, Any] | None = None,
        dist: DistContext = SINGLE,
        progress: bool | None = None,
        verbose: bool = True,
        keep_weights: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, received {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, received {type(config).__name__}")
        if not isinstance(data, TrainData):
            raise TypeError(f"data: expected a TrainData, received {type(data).__name__}")
        if validation is not None and not isinstance(validation, Validation):
            raise TypeError(f"validation: expected a Validation or None, received {type(validation).__name__}")
        check_keep_weights(keep_weights)
        self.model = model
        self.config = config
        self.data = data
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"run_dir: {self.run_dir} does not exist; create it with prepare_run_dir()")
        default = data.loss_fn or seq2seq_loss
        self.loss_fn = loss_fn or functools.partial(default, label_smoothing=config.label_smoothing)
        self.validation = validation
        self.metadata = dict(metadata or {})
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata: expected plain JSON, received a value that is not: {exc}") from None
        self.dist = dist
        self.device = dist.device
        self.progress = progress
        self.verbose = verbose
        self.keep_weights = keep_weights
        self._lengths = np.asarray(data.lengths)

    # -- paths ---------------------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.run_dir)

    # -- main loop -----------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train until ``max_steps`` or early stopping; with ``resume`` continue from the run's checkpoint.

        The writing process (rank 0) holds the run directory's lock (:func:`~attnlab.train.rundir.lock_run_dir`)
        from before the first read to after the last write, so a second writer is refused instead of corrupting
        this run's checkpoints; it is released when ``fit`` returns or raises.

        Raises:
            NonFiniteLossError: the loss or gradient norm became NaN/Inf (the message names the step).
            CheckpointError / CheckpointNotFoundError: ``resume`` with a damaged or missing checkpoint.
            ValueError: ``resume`` with a different config or world size than the run was started with; a fresh
                run into a directory that already holds a training log.
            RunDirLockedError: another process is writing ``run_dir``.
        """
        with contextlib.ExitStack() as held:  # only rank 0 writes the run directory, so only it locks
            self.dist.on_main(lambda: held.enter_context(lock_run_dir(self.run_dir)), f"lock {self.run_dir}")
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        config, ctx = self.config, self.dist
        model = self.model.to(self.device)
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config)
        if resume:
            state = self._restore(model, optimizer, scheduler)
        else:
            for name in (TRAIN_LOG, EVAL_LOG):
                if (self.run_dir / name).exists():
                    raise ValueError(
                        f"run_dir: {self.run_dir} already has {name}; resume the run or start in an empty directory"
                    )
            broadcast_parameters(model, ctx)
            torch.manual_seed(config.seed + ctx.rank)  # dropout masks differ across ranks
            state = _State()
            self._checkpoint(model, optimizer, scheduler, state)

        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = tqdm(
            total=config.max_steps,
            initial=state.step,
            disable=not (show and ctx.is_main),
            desc=self.run_dir.name,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        try:
            batches = make_batches(self._lengths, config, state.epoch)
            while not state.done:
                if state.batch >= len(batches):
                    state.epoch, state.batch = state.epoch + 1, 0
                    batches = make_batches(self._lengths, config, state.epoch)
                started = time.perf_counter()
                record = self._step(model, optimizer, scheduler, batches[state.batch], state)
                state.train_seconds += time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
                if state.step >= config.max_steps:
                    state.done, state.stop_reason = True, "max_steps"
                eval_due = self.validation is not None and (state.step % config.eval_every == 0 or state.done)
                if eval_due and self._evaluate(model, state, bar) and not state.done:
                    state.done, state.stop_reason = True, "early_stopping"
                if state.step % config.checkpoint_every == 0 or state.done:
                    self._checkpoint(model, optimizer, scheduler, state)
        finally:
            bar.close()
        return self._finish(model, state)

    def _step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        indices: list[int],
        state: _State,
    ) -> dict[str, Any]:
        """One optimizer update on the global batch ``indices``; appends its line to ``train.jsonl``."""
        ctx, config = self.dist, self.config
        mine = local_share(indices, ctx)
        model.train()
        local = torch.zeros(3, dtype=torch.float64)  # loss sum, tokens, examples
        if mine:
            batch = self.data.collate([self.data.examples[i] for i in mine])
            if hasattr(batch, "to"):
                batch = batch.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss = self.loss_fn(model, batch)
            if not isinstance(loss, TokenLoss):
                raise TypeError(f"loss_fn: expected a TokenLoss (total, tokens), received {type(loss).__name__}")
            loss.total.backward()
            local[0], local[1], local[2] = float(loss.total.detach()), float(loss.tokens), float(len(mine))
        loss_sum, tokens, examples = ctx.all_reduce_sum(local).tolist()
        step, position = state.step + 1, state.batch
        loss_value = loss_sum / max(tokens, 1.0)
        lr = optimizer.param_groups[0]["lr"]
        record = {"step": step, "epoch": state.epoch, "batch": position, "loss": loss_value,
                  "tokens": int(tokens), "lr": lr}  # fmt: skip
        if not math.isfinite(loss_value):
            self._log(TRAIN_LOG, {**record, "grad_norm": None})
            self._raise_non_finite(step, f"the training loss is {loss_value}", state)
        params = [p for p in model.parameters() if p.requires_grad]
        sync_gradients(params, tokens, ctx)
        max_norm = config.clip_norm if config.clip_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False))
        record["grad_norm"] = grad_norm
        if not math.isfinite(grad_norm):
            self._log(TRAIN_LOG, record)
            self._raise_non_finite(step, f"the gradient norm is {grad_norm} (loss {loss_value})", state)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step, state.batch = step, position + 1
        state.tokens += int(tokens)
        state.examples += int(examples)
        self._log(TRAIN_LOG, record)
        return record

    def _raise_non_finite(self, step: int, what: str, state: _State) -> None:
        best = (f"best.safetensors (step {state.best_step}) is kept"
                if state.best_step is not None else "no best.safetensors was written yet")  # fmt: skip
        raise NonFiniteLossError(
            step,
            f"step {step}: {what}; stopped before updating the weights. The last checkpoint is kept and {best}. "
            "Lower the learning rate, enable clipping or disable bf16, then start over with --force",
        )

    def _evaluate(self, model: nn.Module, state: _State, bar: Any) -> bool:
        """Dev evaluation on rank 0; returns whether patience ran out."""
        ctx, validation = self.dist, self.validation
        if validation is None:
            raise ValueError("validation: expected a Validation to evaluate with, received None")
        started = time.perf_counter()
        rng = capture_rng_state()  # evaluation must not move any RNG the training loop draws from
        metrics: dict[str, Any] = {}
        value = torch.zeros(1, dtype=torch.float64)
        if ctx.is_main:
            model.eval()
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
                metrics = dict(validation.evaluate(model))
            model.train()
            if validation.metric not in metrics:
                raise KeyError(
                    f"validation.metric: {validation.metric!r} is not among the metrics evaluate() returned: "
                    f"{sorted(metrics)}"
                )
            value[0] = float(metrics[validation.metric])
        restore_rng_state(rng)
        value = float(ctx.broadcast(value)[0])
        state.eval_seconds += time.perf_counter() - started
        state.last_eval_step = state.step
        if state.best is None or (value > state.best if validation.higher_is_better else value < state.best):
            state.best, state.best_step, state.bad_evals = value, state.step, 0
            if ctx.is_main:
                save_tensors(self.run_dir / BEST_FILE, model.state_dict(), self._weights_metadata(state, metrics))
        else:
            state.bad_evals += 1
        if ctx.is_main:
            state.metrics = _finite_or_none(metrics)
            rate = state.tokens / state.train_seconds if state.train_seconds > 0 else 0.0
            self._log(
                EVAL_LOG,
                {
                    "step": state.step,
                    **state.metrics,
                    "best": state.best,
                    "best_step": state.best_step,
                    "train_seconds": round(state.train_seconds, 3),
                    "tokens_per_s": round(rate, 1),
                },
            )
            if self.verbose:
                shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
                line = (
                    f"step {state.step}/{self.config.max_steps}  dev {shown}  (best {validation.metric} "
                    f"{state.best:.4g} @ {state.best_step})  {rate:,.0f} tok/s"
                )
                if bar.disable:
                    print(line, file=sys.stderr, flush=True)
                else:
                    bar.write(line, file=sys.stderr)
        patience = self.config.patience
        return patience is not None and state.bad_evals >= patience

    # -- checkpoints and files -----------------------------------------------------------------------------------
    def _rank_rng(self) -> dict[str, Any] | None:
        """Every rank's torch RNG states (rank 0 saves them; rank r restores entry r), for world > 1."""
        ctx = self.dist
        if not ctx.distributed:
            return None
        states = {"cpu": all_gather_tensor(torch.get_rng_state(), ctx)}
        if self.device.type == "cuda":
            states["cuda"] = all_gather_tensor(torch.cuda.get_rng_state(self.device), ctx)
        return states

    def _checkpoint(self, model: nn.Module, optimizer: Any, scheduler: Any, state: _State) -> None:
        rank_rng = self._rank_rng()  # a collective: every rank takes part
        if self.dist.is_main:
            extra = {
                "trainer": dataclasses.asdict(state),
                "config": self.config.to_json(),
                "world": self.dist.world,
                "rank_rng": rank_rng,
            }
            if self.keep_weights and state.step > 0:
                self._keep_weights(model, state)  # before the commit: a kill in between repeats this step's write
            save_checkpoint(self.checkpoint_dir, model_state=model.state_dict(), optimizer=optimizer,
                            scheduler=scheduler, extra=extra)  # fmt: skip

    def _keep_weights(self, model: nn.Module, state: _State) -> None:
        folder = self.run_dir / WEIGHTS_DIR
        folder.mkdir(exist_ok=True)
        metrics = state.metrics if state.last_eval_step == state.step else None  # dev scores of these weights only
        save_tensors(folder / f"step-{state.step:07d}.safetensors", model.state_dict(),
                     self._weights_metadata(state, metrics))  # fmt: skip
        kept = _kept_weights(folder)
        for step in sorted(kept)[: -self.keep_weights]:
            kept[step].unlink(missing_ok=True)

    def _restore(self, model: nn.Module, optimizer: Any, scheduler: Any) -> _State:
        ctx = self.dist
        extra = load_checkpoint(self.checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler)
        try:
            saved = TrainConfig.from_json(extra["config"])
            state = _State(**extra["trainer"])
            world = extra["world"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.checkpoint_dir}: not a checkpoint written by Trainer ({exc})") from None
        if saved != self.config:
            old, new = saved.to_json(), self.config.to_json()
            diff = [f"{name}={old[name]!r} (now {new[name]!r})" for name in old if old[name] != new[name]]
            raise ValueError(
                f"resume: the run in {self.run_dir} was started with a different TrainConfig: {', '.join(diff)}; "
                "resume with the original settings, or start a new run"
            )
        if world != ctx.world:
            raise ValueError(
                f"resume: the run in {self.run_dir} was trained by {world} process(es), this launch has {ctx.world}; "
                "resume with the same number of processes (the per-rank RNG streams are part of the state)"
            )
        if ctx.distributed:
            rank_rng = extra["rank_rng"]
            torch.set_rng_state(rank_rng["cpu"][ctx.rank])
            if "cuda" in rank_rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rank_rng["cuda"][ctx.rank], self.device)
        if ctx.is_main:
            for name in (TRAIN_LOG, EVAL_LOG):
                _truncate_log(self.run_dir / name, state.step)
            weights = self.run_dir / WEIGHTS_DIR
            for leftover in [*self.run_dir.glob(".*.tmp-*"), *weights.glob(".*.tmp-*")]:  # temp files of a killed write
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
            for step, path in _kept_weights(weights).items():  # written after this checkpoint by a killed attempt
                if step > state.step:
                    path.unlink(missing_ok=True)
        return state

    def _weights_metadata(self, state: _State, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**self.metadata, "step": state.step, "dev": _finite_or_none(metrics),
                "train_config": self.config.to_json()}  # fmt: skip

    def _finish(self, model: nn.Module, state: _State) -> TrainResult:
        model_path = self.run_dir / MODEL_FILE
        best_path = self.run_dir / BEST_FILE
        rate = state.tokens / state.train_seconds if state.train_seconds > 0 else 0.0
        result = TrainResult(
            run_dir=self.run_dir,
            step=state.step,
            epoch=state.epoch,
            stop_reason=state.stop_reason or "max_steps",
            metric=self.validation.metric if self.validation else None,
            best=state.best,
            best_step=state.best_step,
            metrics=state.metrics,
            tokens=state.tokens,
            train_seconds=state.train_seconds,
            eval_seconds=state.eval_seconds,
            tokens_per_s=rate,
            model_path=model_path,
            best_path=best_path if state.best_step is not None else None,
        )
        if self.dist.is_main:
            save_tensors(model_path, model.state_dict(), self._weights_metadata(state, state.metrics))
            summary = json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
            atomic_write_bytes(self.run_dir / SUMMARY_FILE, summary.encode())
        self.dist.barrier()
        return result

    def _log(self, name: str, record: Mapping[str, Any]) -> None:
        if self.dist.is_main:
            append_jsonl(self.run_dir / name, record)


def _kept_weights(folder: Path) -> dict[int, Path]:
    """``{step: path}`` of the ``step-<n>.safetensors`` files in ``folder`` (numeric steps, whatever their width)."""
    found = {}
    for path in folder.glob("step-*.safetensors"):
        digits = path.name[len("step-") : -len(".safetensors")]
        if digits.isdigit():
            found[int(digits)] = path
    return found


def _truncate_log(path: Path, step: int) -> None:
    """Keep the lines of a JSON-lines log whose ``step`` is at most ``step`` (and drop a torn last line)."""
    if not path.exists():
        return
    data = path.read_bytes()
    kept = []
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is empty or a torn line
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path}: a line other than the last is not valid JSON; cannot resume its log") from None
        if record.get("step", 0) <= step:
            kept.append(raw + b"\n")
    new = b"".join(kept)
    if new != data:
        atomic_write_bytes(path, new)
    if path.name == TRAIN_LOG and len(kept) != step:
        warnings.warn(f"{path}: {len(kept)} logged steps for a checkpoint at step {step}", RuntimeWarning, stacklevel=3)
