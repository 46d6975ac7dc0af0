"""Synthetic reversal, for the length study (Bahdanau et al. 2014, Fig. 2): a GRU encoder-decoder without and
with additive attention, trained on sequences of length 1..``max_len`` and scored per length.

Full budget: lengths 1-100 over 20 symbols, 100,000 training sequences, the quick budget's GRU (width 128), 5,000
steps of 64 sequences. Keeping the quick sizes keeps the lab's equal-size partners (reverse-transformer,
reverse-decoder-only, see :mod:`attnlab.experiments.lab`) equal at the full budget too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from attnlab.seq import RNNConfig, RNNSeq2Seq
from attnlab.train.trainer import TrainConfig

from .base import Budget, Experiment, register
from .tasks import ReverseTask

_DATA = {
    "smoke": {"train_size": 256, "dev_size": 32, "min_len": 1, "max_len": 8, "test_size": 64},
    "quick": {"train_size": 10000, "dev_size": 200, "min_len": 1, "max_len": 20, "test_size": 600},
    "full": {"train_size": 100000, "dev_size": 500, "min_len": 1, "max_len": 100, "test_size": 5000},
}
_SIZES = {
    "smoke": {"embed_dim": 16, "hidden": 32, "dropout": 0.0},
    "quick": {"embed_dim": 32, "hidden": 128, "dropout": 0.0},
    "full": {"embed_dim": 32, "hidden": 128, "dropout": 0.0},
}
_TRAIN = {
    "smoke": TrainConfig(max_steps=20, batch_size=32, lr=3e-3, warmup_steps=2, eval_every=10, checkpoint_every=5),
    "quick": TrainConfig(max_steps=600, batch_size=64, lr=3e-3, warmup_steps=60, min_lr_ratio=0.05,
                         clip_norm=1.0, eval_every=100, checkpoint_every=200),
    "full": TrainConfig(max_steps=5000, batch_size=64, lr=3e-3, warmup_steps=300, min_lr_ratio=0.05, clip_norm=1.0,
                        eval_every=500, checkpoint_every=500, patience=5, bf16=True),
}  # fmt: skip
_BUDGETS = {name: Budget(train=_TRAIN[name], model=_SIZES[name], data=_DATA[name]) for name in _DATA}


def _gru(**fixed: Any):
    def make(task: ReverseTask, **size: Any) -> nn.Module:
        return RNNSeq2Seq(RNNConfig(src_vocab=len(task.src_vocab), tgt_vocab=len(task.tgt_vocab), cell="gru",
                                    max_len=max(256, task.max_len), **fixed, **size))  # fmt: skip

    return make


register(
    Experiment(
        "reverse-rnn",
        "Reverse a sequence (length study), GRU encoder-decoder without attention: accuracy falls with length",
        ReverseTask,
        _gru(attention=None),
        _BUDGETS,
    )
)
register(Experiment(
    "reverse-bahdanau",
    "Reverse a sequence (length study), GRU encoder-decoder with Bahdanau additive attention",
    ReverseTask, _gru(attention="bahdanau", score="additive"), _BUDGETS,
))  # fmt: skip
