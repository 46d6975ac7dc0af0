"""Several sequence-to-sequence models of one task, decoding as one: a mixture of their predictions.

At every step each member predicts the next token and the ensemble emits the mean of their distributions,
``p(y_t | y_<t, x) = (1/M) sum_m p_m(y_t | y_<t, x)`` (the ensembles of Sutskever et al. 2014 and of most NMT
systems since), or with ``weights`` the weighted mean ``sum_m w_m p_m`` (weights normalised to sum to 1; chosen on
dev, say, so that a weaker member counts for less). The members may differ in everything (an RNN with Bahdanau
attention beside a Transformer) as long as they share the source and target vocabularies; all of them read the same
prefix ``y_<t``, so the ensemble is itself causal and :class:`~attnlab.seq.decode.Decodable`: greedy and beam search
decode it unchanged.

Attention sites are the members' own, named ``members.I.SITE`` (``members.0.decoder.cross``); ``forward(batch,
return_weights=True)`` returns each member's weights under those names and, as ``logits``, the log of the mean
distribution (log-probabilities are valid logits: softmax gives the mean back).

Status: complete.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import ModelOutput, Seq2SeqInputs, Site

__all__ = ["Ensemble", "normalised_weights"]


def _mean_distribution(log_probs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``log(sum_m w_m exp(log_softmax(l_m)))`` over the members' logits or log-probabilities (``weights`` sum to
    1), in float32 or the members' wider dtype."""
    dtype = torch.float32
    for lp in log_probs:
        dtype = torch.promote_types(dtype, lp.dtype)
    stacked = torch.stack([torch.log_softmax(lp.to(dtype), dim=-1) + math.log(w)
                           for lp, w in zip(log_probs, weights, strict=True)])  # fmt: skip
    return torch.logsumexp(stacked, dim=0)


def normalised_weights(weights: Sequence[float] | None, members: int) -> tuple[float, ...]:
    """``weights`` scaled to sum to 1 (None: uniform); refuses a wrong count or a weight that is not positive."""
    if weights is None:
        return (1.0 / members,) * members
    if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != members:
        raise ValueError(f"weights: expected one weight per member ({members}), received {weights!r}")
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"weights[{i}]: expected a positive finite number, received {w!r}")
    total = float(sum(weights))
    return tuple(float(w) / total for w in weights)


class Ensemble(nn.Module):
    """``members``: sequence-to-sequence models with ``encode``/``step``/``reorder`` and ``forward(batch)``,
    trained for the same vocabularies (checked on their output size at each call). ``weights``: one positive number
    per member (normalised; None: uniform); ``self.weights`` holds the normalised ones."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if isinstance(members, nn.Module) or not isinstance(members, Sequence):
            raise TypeError(f"members: expected a list of models, received {type(members).__name__}")
        if not members:
            raise ValueError("members: expected at least one model, received an empty list")
        for i, member in enumerate(members):
            missing = [name for name in ("encode", "step", "reorder", "attention_sites") if not hasattr(member, name)]
            if not isinstance(member, nn.Module) or missing:
                raise TypeError(f"members[{i}]: expected a sequence-to-sequence model with encode, step, reorder and "
                                f"attention_sites; {type(member).__name__} lacks {missing or 'nn.Module'}")  # fmt: skip
        self.members = nn.ModuleList(members)
        self.weights = normalised_weights(weights, len(members))

    def attention_sites(self) -> list[Site]:
        return [dataclasses.replace(site, name=f"members.{i}.{site.name}")
                for i, member in enumerate(self.members) for site in member.attention_sites()]  # fmt: skip

    def _check_vocab(self, outputs: Sequence[Tensor]) -> None:
        sizes = [out.shape[-1] for out in outputs]
        if len(set(sizes)) != 1:
            raise ValueError(f"members predict over different vocabularies (output sizes {sizes}); an ensemble needs "
                             "members trained on the same target vocabulary")  # fmt: skip

    def forward(self, batch: Seq2SeqInputs, *, return_weights: bool = False) -> Tensor | ModelOutput:
        outputs = [member(batch, return_weights=return_weights) for member in self.members]
        logits = [out.logits if return_weights else out for out in outputs]
        self._check_vocab(logits)
        mean = _mean_distribution(logits, self.weights)
        if not return_weights:
            return mean
        weights = {f"members.{i}.{name}": w for i, out in enumerate(outputs) for name, w in out.weights.items()}
        return ModelOutput(mean, weights)

    # -- decoding (attnlab.seq.decode protocol) --------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Any, ...]:
        return tuple(member.encode(src, src_lengths) for member in self.members)

    def step(self, state: tuple[Any, ...], tokens: Tensor) -> tuple[Tensor, tuple[Any, ...]]:
        stepped = [member.step(s, tokens) for member, s in zip(self.members, state, strict=True)]
        log_probs = [lp for lp, _ in stepped]
        self._check_vocab(log_probs)
        return _mean_distribution(log_probs, self.weights), tuple(s for _, s in stepped)

    def reorder(self, state: tuple[Any, ...], index: Tensor) -> tuple[Any, ...]:
        return tuple(member.reorder(s, index) for member, s in zip(self.members, state, strict=True))
