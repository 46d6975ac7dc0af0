"""The sequence experiments behind the lab's claims, all on sequence reversal so that each runs in about a minute
at the quick budget and differs from its partner in one thing only.

=============================  ================================================================================
name                           compared with, for which claim
=============================  ================================================================================
reverse-bahdanau-4heads        reverse-bahdanau: multi-head applies to attention (AT) too (claim 7)
reverse-bahdanau-projected     reverse-bahdanau: key/query/value projections apply to AT too (claim 9)
reverse-transformer            reverse-bahdanau at equal size: self-attention trains faster (claim 11)
reverse-decoder-only           reverse-transformer at equal size: SA over [source; SEP; target] simulates AT (6)
scores-rnn-SCORE               every score as AT in a GRU decoder (claim 8), short sequences
scores-transformer-SCORE       every score as SA in a Transformer's self-attention layers (claim 8)
=============================  ================================================================================

Sizes: reverse-bahdanau (quick) has 425k parameters (GRU width 128); the Transformer (width 96, 2 + 2 layers,
FFN 256) 431k and the decoder-only model (width 96, 5 layers, FFN 240) 428k: equal size within 2%.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from attnlab.seq import DecoderOnlyConfig, DecoderOnlyTransformer, RNNConfig, RNNSeq2Seq, Transformer, TransformerConfig
from attnlab.train.trainer import TrainConfig

from .base import GRID_SCORES, Budget, Experiment, register
from .synthetic import _DATA, _SIZES, _TRAIN, _gru
from .tasks import ReverseTask

__all__ = ["GRID_SCORES"]

_RNN_BUDGETS = {name: Budget(train=_TRAIN[name], model=_SIZES[name], data=_DATA[name]) for name in _DATA}

_TRANSFORMER_SIZES = {
    "smoke": {"dim": 32, "heads": 2, "ffn_dim": 64, "dropout": 0.0},
    "quick": {"dim": 96, "heads": 4, "ffn_dim": 256, "dropout": 0.0},
    "full": {"dim": 96, "heads": 4, "ffn_dim": 256, "dropout": 0.0},  # the quick size: see synthetic.py
}
_TRANSFORMER_TRAIN = {
    "smoke": _TRAIN["smoke"],
    "quick": TrainConfig(
        max_steps=600,
        batch_size=64,
        lr=1e-3,
        warmup_steps=100,
        min_lr_ratio=0.05,
        betas=(0.9, 0.98),
        clip_norm=1.0,
        eval_every=100,
        checkpoint_every=200,
    ),
    "full": TrainConfig(
        max_steps=5000,
        batch_size=64,
        lr=5e-4,
        warmup_steps=500,
        min_lr_ratio=0.05,
        betas=(0.9, 0.98),
        clip_norm=1.0,
        eval_every=1000,
        checkpoint_every=1000,
        patience=5,
        bf16=True,
    ),
}
_TRANSFORMER_BUDGETS = {
    name: Budget(train=_TRANSFORMER_TRAIN[name], model=_TRANSFORMER_SIZES[name], data=_DATA[name]) for name in _DATA
}


def _transformer(task: ReverseTask, **size: Any) -> nn.Module:
    return Transformer(
        TransformerConfig(
            src_vocab=len(task.src_vocab),
            tgt_vocab=len(task.tgt_vocab),
            encoder_layers=2,
            decoder_layers=2,
            max_len=256,
            **size,
        )
    )


def _decoder_only(task: ReverseTask, **size: Any) -> nn.Module:
    # One more layer than the encoder-decoder's 2 + 2 and a slightly narrower FFN: equal parameters (a decoder layer
    # also carries cross-attention).
    size = {**size, "ffn_dim": size["ffn_dim"] * 15 // 16}
    return DecoderOnlyTransformer(
        DecoderOnlyConfig(src_vocab=len(task.src_vocab), tgt_vocab=len(task.tgt_vocab), layers=5, max_len=512, **size)
    )


register(
    Experiment(
        "reverse-bahdanau-4heads",
        "Reverse, GRU encoder-decoder with 4-head Bahdanau additive cross-attention (multi-head applies to AT too)",
        ReverseTask,
        _gru(attention="bahdanau", score="additive", heads=4),
        _RNN_BUDGETS,
    )
)
register(
    Experiment(
        "reverse-bahdanau-projected",
        "Reverse, GRU encoder-decoder with Bahdanau attention behind learned query/key/value projections",
        ReverseTask,
        _gru(attention="bahdanau", score="additive", project=True),
        _RNN_BUDGETS,
    )
)
register(
    Experiment(
        "reverse-transformer",
        "Reverse, Transformer encoder-decoder (2 + 2 layers) at the size of reverse-bahdanau",
        ReverseTask,
        _transformer,
        _TRANSFORMER_BUDGETS,
    )
)
register(
    Experiment(
        "reverse-decoder-only",
        "Reverse, decoder-only Transformer over [source; SEP; target] with a prefix mask, size of reverse-transformer",
        ReverseTask,
        _decoder_only,
        _TRANSFORMER_BUDGETS,
    )
)

# -- the score grid: short sequences, small models, a few hundred steps ------------------------------------------
_GRID_DATA = {
    "smoke": {"train_size": 256, "dev_size": 32, "min_len": 1, "max_len": 8, "test_size": 64},
    "quick": {"train_size": 5000, "dev_size": 200, "min_len": 1, "max_len": 10, "test_size": 300},
    "full": {"train_size": 20000, "dev_size": 500, "min_len": 1, "max_len": 20, "test_size": 1000},
}
_GRID_RNN = {
    "smoke": _SIZES["smoke"],
    "quick": {"embed_dim": 32, "hidden": 64, "dropout": 0.0},
    "full": {"embed_dim": 32, "hidden": 128, "dropout": 0.0},
}
_GRID_TRANSFORMER = {
    "smoke": _TRANSFORMER_SIZES["smoke"],
    "quick": {"dim": 64, "heads": 4, "ffn_dim": 128, "dropout": 0.0},
    "full": {"dim": 96, "heads": 4, "ffn_dim": 256, "dropout": 0.0},
}
_GRID_TRAIN = {
    "smoke": _TRAIN["smoke"],
    "quick": TrainConfig(
        max_steps=600,
        batch_size=64,
        lr=2e-3,
        warmup_steps=60,
        min_lr_ratio=0.05,
        betas=(0.9, 0.98),
        clip_norm=1.0,
        eval_every=300,
        checkpoint_every=300,
    ),
    "full": TrainConfig(
        max_steps=4000,
        batch_size=64,
        lr=1e-3,
        warmup_steps=300,
        min_lr_ratio=0.05,
        betas=(0.9, 0.98),
        clip_norm=1.0,
        eval_every=1000,
        checkpoint_every=1000,
    ),
}


def _grid_budgets(sizes: dict[str, dict[str, Any]]) -> dict[str, Budget]:
    return {name: Budget(train=_GRID_TRAIN[name], model=sizes[name], data=_GRID_DATA[name]) for name in _GRID_DATA}


def _grid_rnn(score: str):
    def make(task: ReverseTask, **size: Any) -> nn.Module:
        return RNNSeq2Seq(
            RNNConfig(
                src_vocab=len(task.src_vocab),
                tgt_vocab=len(task.tgt_vocab),
                cell="gru",
                bidirectional=False,  # decoder and encoder states equally wide, so dot/cosine need no projection
                attention="bahdanau",
                score=score,
                max_len=64,
                **size,
            )
        )

    return make


def _grid_transformer(score: str):
    def make(task: ReverseTask, **size: Any) -> nn.Module:
        return Transformer(
            TransformerConfig(
                src_vocab=len(task.src_vocab),
                tgt_vocab=len(task.tgt_vocab),
                encoder_layers=1,
                decoder_layers=1,
                score=score,
                max_len=64,
                **size,
            )
        )

    return make


for _score in GRID_SCORES:
    register(
        Experiment(
            f"scores-rnn-{_score}",
            f"Score grid: '{_score}' as cross-attention (AT) from a GRU decoder over its encoder, short reversal",
            ReverseTask,
            _grid_rnn(_score),
            _grid_budgets(_GRID_RNN),
        )
    )
    register(
        Experiment(
            f"scores-transformer-{_score}",
            f"Score grid: '{_score}' as self-attention (SA) in a 1 + 1 layer Transformer's both stacks, short reversal",
            ReverseTask,
            _grid_transformer(_score),
            _grid_budgets(_GRID_TRANSFORMER),
        )
    )
