"""Sequence models built on the attention core, every attention site an ``attnlab.CrossAttention`` or
``attnlab.SelfAttention``:

=============================  ==============================================  ======================
model                          attention sites                                 paper
=============================  ==============================================  ======================
RNNSeq2Seq, attention=None     none: the decoder sees the final encoder state  Cho 2014, Sutskever 2014
RNNSeq2Seq, "bahdanau"         1 cross (query s_(i-1), context into the cell)  Bahdanau 2014
RNNSeq2Seq, "luong"            1 cross (query h_t, h~ = tanh(W_c[c; h]))       Luong 2015
LSTMNEncoder (encoder="lstmn") 1 self per layer and direction (tape history)   Cheng 2016
Transformer                    N + M self, M cross                             Vaswani 2017
TransformerClassifier          N self, no cross                                Devlin 2018 (BERT)
DecoderOnlyTransformer         N self over [source; SEP; target], prefix mask  Raffel 2020 (prefix LM)
Ensemble of the above          every member's, named members.I.SITE            Sutskever 2014 (mean p)
=============================  ==============================================  ======================

Every model has ``attention_sites()`` (from its config alone: works on the ``meta`` device),
``forward(batch, return_weights=False)`` returning logits (or a :class:`ModelOutput` with every site's weights
``[B, H, Tq, Tk]``), and the seq2seq models implement the decoding protocol of :mod:`attnlab.seq.decode`.
"""

from .base import ClassifyInputs, Encoded, ModelOutput, Seq2SeqInputs, Site, as_head_weights, reorder_batch
from .decode import Decodable, Decoded, beam_search, greedy
from .ensemble import Ensemble
from .loss import TokenLoss, token_cross_entropy
from .lstmn import LSTMNEncoder, LSTMNLayer
from .positions import LearnedPositions, SinusoidalPositions, get_positions
from .rnn import (
    BahdanauDecoder,
    LuongDecoder,
    PlainDecoder,
    RNNConfig,
    RNNDecoder,
    RNNEncoder,
    RNNSeq2Seq,
    RNNState,
    StackedCell,
)
from .transformer import (
    BlockConfig,
    DecoderLayer,
    DecoderOnlyConfig,
    DecoderOnlyState,
    DecoderOnlyTransformer,
    EncoderConfig,
    EncoderLayer,
    FeedForward,
    SelfAttentionStack,
    Transformer,
    TransformerClassifier,
    TransformerConfig,
    TransformerState,
)

__all__ = [
    "BahdanauDecoder",
    "BlockConfig",
    "ClassifyInputs",
    "Decodable",
    "Decoded",
    "DecoderLayer",
    "DecoderOnlyConfig",
    "DecoderOnlyState",
    "DecoderOnlyTransformer",
    "Encoded",
    "EncoderConfig",
    "EncoderLayer",
    "Ensemble",
    "FeedForward",
    "LSTMNEncoder",
    "LSTMNLayer",
    "LearnedPositions",
    "LuongDecoder",
    "ModelOutput",
    "PlainDecoder",
    "RNNConfig",
    "RNNDecoder",
    "RNNEncoder",
    "RNNSeq2Seq",
    "RNNState",
    "SelfAttentionStack",
    "Seq2SeqInputs",
    "SinusoidalPositions",
    "Site",
    "StackedCell",
    "TokenLoss",
    "Transformer",
    "TransformerClassifier",
    "TransformerConfig",
    "TransformerState",
    "as_head_weights",
    "beam_search",
    "get_positions",
    "greedy",
    "reorder_batch",
    "token_cross_entropy",
]
