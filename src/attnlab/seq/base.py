"""What every sequence model of attnlab shares: attention sites, typed outputs, encoder results, batch protocols,
state reordering for beam search, and argument checks.

An *attention site* is one place in a model where ``context = E_p[V]`` is computed: a Transformer layer's
self-attention, an RNN decoder's cross-attention over the encoder, an LSTMN step over its own history. Every model
lists its sites with ``attention_sites()``, computed from its config alone (no forward pass, so it works for a
model built on the ``meta`` device), and returns the weights of each site when asked:
``model(batch, return_weights=True)`` gives a :class:`ModelOutput` whose ``weights`` maps each site name to a
``[B, H, Tq, Tk]`` tensor, the same names as ``attention_sites()``.

Status: complete.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..attention import KVCache, Memory
from ..scores import score_class
from ..tracing import eager_on_cpu

__all__ = [
    "ClassifyInputs",
    "Encoded",
    "ModelOutput",
    "Seq2SeqInputs",
    "Site",
    "as_head_weights",
    "reorder_batch",
]

SITE_KINDS = ("self", "cross")


@dataclass(frozen=True)
class Site:
    """One attention site of a model: who attends (``query_from``) to what (``keys_from``), and how.

    ``kind`` is ``"self"`` when queries and keys come from the same component's own states (one stream reads
    itself) and ``"cross"`` when they come from two components (a decoder reads an encoder). ``mask`` names the
    structure of what may be attended (``"padding"``, ``"causal"``, ``"prefix"``, ``"history"``...).
    """

    name: str
    kind: str  # "self" | "cross"
    query_from: str
    keys_from: str
    heads: int
    score: str
    mask: str = "padding"

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ValueError(f"Site.kind must be one of {SITE_KINDS}; received {self.kind!r}")
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
            raise ValueError(f"Site.heads must be a positive int; received {self.heads!r}")


class ModelOutput(NamedTuple):
    """``forward(batch, return_weights=True)``: the logits and every site's weights ``[B, H, Tq, Tk]`` by name."""

    logits: Tensor
    weights: dict[str, Tensor]


@dataclass(frozen=True)
class Encoded:
    """An encoder's result: per-position states, which positions are real, and (recurrent encoders) a summary."""

    states: Tensor  # [B, S, D]
    mask: Tensor  # [B, 1, S] bool, True = real token (a key-padding mask, see attnlab.masks.padding)
    final: Tensor | None = None  # [B, Df]: the last state(s) of a recurrent encoder; None for Transformers
    weights: Mapping[str, Tensor] = field(default_factory=dict)  # site name -> [B, H, S, S], when asked


@runtime_checkable
class Seq2SeqInputs(Protocol):
    """What a sequence-to-sequence ``forward`` reads (``attnlab.data.Seq2SeqBatch`` has these and more)."""

    src: Tensor  # [B, S] source ids, right-padded
    src_lengths: Tensor  # [B]
    tgt_in: Tensor  # [B, T] BOS + target, right-padded (teacher forcing)


@runtime_checkable
class ClassifyInputs(Protocol):
    """What a sequence classifier's ``forward`` reads."""

    tokens: Tensor  # [B, T] ids, right-padded
    lengths: Tensor  # [B]


def as_head_weights(weights: Tensor) -> Tensor:
    """Attention weights as ``[B, H, Tq, Tk]``: a single-head module returns ``[B, Tq, Tk]``."""
    return weights.unsqueeze(1) if weights.dim() == 3 else weights


def log_probs_of(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last axis, in float32 at least (half-precision logits are upcast, float64 kept)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.log_softmax(dim=-1)


def score_options(score: str, max_len: int) -> dict[str, Any]:
    """Constructor options a score name needs beyond its dims: ``max_len`` for position-based scores."""
    takes = inspect.signature(score_class(score).__init__).parameters
    return {"max_len": max_len} if "max_len" in takes else {}


def reorder_batch(obj: Any, index: Tensor) -> Any:
    """``obj`` with batch rows ``index`` (axis 0 of every tensor): beam search follows surviving hypotheses.

    Handles tensors, :class:`~attnlab.Memory`, :class:`~attnlab.KVCache` (reordered in place), dataclasses,
    lists, tuples and dicts of those; other values (ints, None) pass unchanged.
    """
    if isinstance(obj, Tensor):
        return obj.index_select(0, index)
    if isinstance(obj, Memory):
        return Memory(obj.key.index_select(0, index), obj.value.index_select(0, index))
    if isinstance(obj, KVCache):
        obj.reorder(index)
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: reorder_batch(getattr(obj, f.name), index) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, list | tuple):
        return type(obj)(reorder_batch(item, index) for item in obj)
    if isinstance(obj, dict):
        return {key: reorder_batch(value, index) for key, value in obj.items()}
    return obj


# -- argument checks shared by the models ------------------------------------------------------------------------
def check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; received {value!r}")
    return value


def check_dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1); received {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; received {value!r}")


def check_score(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a registered score name (str); received {type(value).__name__}")
    score_class(value)  # KeyError listing the registered names


def check_tokens(tokens: Any, lengths: Any, name: str, *, min_length: int = 0) -> None:
    """``tokens [B, T]`` integer ids and ``lengths [B]`` in ``[min_length, T]``, on one device."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.is_complex():
        got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
        raise TypeError(f"{name} must be an integer tensor [B, T]; received {got}")
    if lengths is None:
        return
    lengths_name = f"{name}_lengths" if name != "tokens" else "lengths"
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.dtype.is_floating_point:
        got = f"{tuple(lengths.shape)} {lengths.dtype}" if isinstance(lengths, Tensor) else type(lengths).__name__
        raise TypeError(f"{lengths_name} must be an integer tensor [B]; received {got}")
    if lengths.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"{lengths_name} must have one entry per row of {name} {tuple(tokens.shape)}; "
            f"received {tuple(lengths.shape)}"
        )
    if eager_on_cpu(lengths) and lengths.numel():  # value checks: eager on CPU only (no graph break, no sync)
        low, high = int(lengths.min()), int(lengths.max())
        if low < min_length or high > tokens.shape[1]:
            raise ValueError(
                f"{lengths_name} must lie in [{min_length}, {tokens.shape[1]}] for {name} of shape "
                f"{tuple(tokens.shape)}; received [{low}, {high}]"
            )


def check_batch_size(name: str, tensor: Tensor, batch: int) -> None:
    if tensor.shape[0] != batch:
        raise ValueError(f"{name} must have batch size {batch} like src; received shape {tuple(tensor.shape)}")


def seq2seq_inputs(batch: Seq2SeqInputs) -> tuple[Tensor, Tensor, Tensor]:
    """``(src, src_lengths, tgt_in)`` of a batch, checked."""
    src, src_lengths, tgt_in = (getattr(batch, name, None) for name in ("src", "src_lengths", "tgt_in"))
    if src is None or src_lengths is None or tgt_in is None:
        raise TypeError(
            f"batch must have src, src_lengths and tgt_in (like attnlab.data.Seq2SeqBatch); "
            f"received {type(batch).__name__}"
        )
    check_tokens(src, src_lengths, "src")
    check_tokens(tgt_in, None, "tgt_in")
    check_batch_size("tgt_in", tgt_in, src.shape[0])
    return src, src_lengths, tgt_in
