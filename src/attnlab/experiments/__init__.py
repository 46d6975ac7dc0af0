"""Named experiments: each claim of the lab as a task + model factory + training plan per budget.

=====================  =======================================================================================
name                   what it trains
=====================  =======================================================================================
g2p-rnn                LSTM encoder-decoder, no attention (Cho / Sutskever 2014)
g2p-bahdanau           + Bahdanau additive cross-attention (2014)
g2p-luong              + Luong global general attention with input feeding (2015)
g2p-lstmn              LSTMN intra-attention encoder (Cheng 2016) + Bahdanau decoder
g2p-transformer        Transformer encoder-decoder (Vaswani 2017)
g2p-decoder-only       decoder-only Transformer over [source; SEP; target], prefix mask
g2p-bahdanau-4heads    Bahdanau attention with 4 heads (multi-head vs single-head cross-attention)
g2p-scores-FAMILY-S    the score grid on G2P: score S as AT in an LSTM decoder (rnn) or as SA in a Transformer
reverse-rnn            sequence reversal up to length 100, GRU without attention (length study)
reverse-bahdanau       the same with Bahdanau attention
reader-cross           digit strings from images: GRU decoder with cross-attention over CNN features
reader-single          the same data through one self-attention stream [image; text] with a prefix mask
canvas-KIND-MODEL      digit canvases: plain CNN, CNN + each attention block, ViT, placement/gate/kv ablations
=====================  =======================================================================================

Budgets: ``smoke`` (seconds), ``quick`` (minutes), ``full`` (hours) on a 2-core CPU; see
:mod:`attnlab.experiments.g2p` and :mod:`attnlab.experiments.synthetic` for the exact plans.
:mod:`attnlab.experiments.export` writes a shippable weight file (float16, optionally averaged over checkpoints).
:mod:`attnlab.experiments.sweep` trains experiments over seeds, resumably, and tabulates them.
"""

from . import g2p, lab, reader, synthetic, vision  # noqa: F401  (registers the experiments)
from .base import BUDGETS, Budget, Experiment, Task, available_experiments, experiment_table, get_experiment, register
from .export import export_model
from .models import MODELS, LoadedModel, build_model, load_model, model_spec, parameter_count
from .run import SHIPPED_G2P_MODEL, evaluate_model, resolve_model_path, train_experiment
from .tasks import G2PTask, ReverseTask, decode, task_from_spec

__all__ = [
    "BUDGETS",
    "MODELS",
    "SHIPPED_G2P_MODEL",
    "Budget",
    "Experiment",
    "G2PTask",
    "LoadedModel",
    "ReverseTask",
    "Task",
    "available_experiments",
    "build_model",
    "decode",
    "evaluate_model",
    "experiment_table",
    "export_model",
    "get_experiment",
    "load_model",
    "model_spec",
    "parameter_count",
    "register",
    "resolve_model_path",
    "task_from_spec",
    "train_experiment",
]
