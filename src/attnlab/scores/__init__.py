"""Score functions: one file per score, registered by name (see :mod:`attnlab.scores.base`).

=============  ===================================  ====================================  =========
name           logits                               paper                                 fused
=============  ===================================  ====================================  =========
dot            q . k                                Luong et al. 2015                     SDPA
scaled_dot     q . k / sqrt(d_k)                    Vaswani et al. 2017                   SDPA
general        q^T W k                              Luong et al. 2015                     SDPA
cosine         beta * cos(q, k)                     Graves et al. 2014 (NTM)              SDPA
additive       v^T tanh(W q + U k)                  Bahdanau et al. 2014                  chunked
location       (W_a q)[t], positions only           Luong et al. 2015                     explicit
=============  ===================================  ====================================  =========
"""

from .additive import Additive, additive_logits, naive_additive_logits
from .base import DotProductScore, Score, available_scores, get_score, register_score, score_class
from .cosine import Cosine
from .dot import Dot
from .general import General
from .location import Location
from .scaled_dot import ScaledDot

__all__ = [
    "Additive",
    "Cosine",
    "Dot",
    "DotProductScore",
    "General",
    "Location",
    "ScaledDot",
    "Score",
    "additive_logits",
    "available_scores",
    "get_score",
    "naive_additive_logits",
    "register_score",
    "score_class",
]
