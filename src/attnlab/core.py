"""The one equation of attention: the context is an expectation of the values.

    context_i = E_{p_i}[V] = sum_j p_ij v_j,    p_i = softmax_j( mask( score(q_i, k_j) + bias_ij ) )

Attention ("cross") and self-attention are the same computation; they differ only in where ``query`` comes from.
``attend(x, memory, memory)`` is attention (the query reads another component's states), ``attend(x, x, x)`` is
self-attention (a layer's input reads itself). Every module of attnlab owns parameters and calls this function.

Axis glossary (batch-first everywhere):

    B   batch                          H   heads (absent for a single head: inputs may be 3-D)
    Tq  query positions                Tk  key/value positions
    Dq  query features (per head)      Dk  key features        Dv  value features
    C, Hs, Ws   channels, height, width of image features (vision blocks flatten Hs*Ws into T)

Shapes: ``query [B, (H,) Tq, Dq]``, ``key [B, (H,) Tk, Dk]``, ``value [B, (H,) Tk, Dv]`` ->
``context [B, (H,) Tq, Dv]``, ``weights [B, (H,) Tq, Tk]``.

Masks are bool, ``True`` = may attend, broadcastable to ``[B, (H,) Tq, Tk]`` (see :mod:`attnlab.masks`).
``bias`` is an optional float ``[B, (H,) Tq, Tk]``-broadcastable addition to the logits (relative positions,
ALiBi); ``-inf`` entries in it mask like ``False`` in ``mask``.

Guarantees (tested on every path):
- a query with nothing to attend to (fully masked row, all-padding item, ``Tk == 0``) gets context 0, weights 0
  and zero gradient, never NaN and never a silent average;
- keys/values that no query may read are zeroed before they are scored, so changing them, NaN included, changes
  nothing; a NaN query or key reaches exactly the rows that read it; a NaN value reaches every row of its batch
  item and head except where no query may read it (0 x NaN in the weighted sum);
- for float16/bfloat16 inputs, logits and softmax are computed in float32 (weights are returned in float32).

Every guarantee is computed branch-free (``torch.where``/``masked_fill`` on computed masks, never a Python ``if``
on a tensor's value), so ``torch.compile(fullgraph=True)`` and ``torch.export`` trace the core in one graph and
a GPU is never synchronized. In eager mode on CPU, where a reduction's value is free, shortcuts skip fills that
are not needed (:func:`attnlab.tracing.eager_on_cpu`); tests check both forms give identical results.

Two paths, one result (``Attended.path`` and ``.reason`` say which ran and why):
- ``"sdpa"``: dot-family scores without requested weights run through
  ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels; memory linear in Tk);
- ``"dense"``: explicit logits ``[B, H, Tq, Tk]`` when weights are requested or the score is not a dot product
  (additive, location). No ``[B, H, Tq, Tk, D]`` tensor is ever formed here; the additive score bounds its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import Tensor

from . import masks
from .scores import Score, score_class
from .scores.base import broadcast_sizes
from .tracing import eager_on_cpu

__all__ = [
    "Attended",
    "attend",
    "attend_prepared",
    "choose_path",
    "context_and_weights",
    "eager_on_cpu",
    "masked_softmax",
    "merge_causal",
    "resolve_score",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Attended:
    """What attention returns: the context, the weights when asked for, and which path computed them."""

    context: Tensor  # [B, (H,) Tq, Dv]
    weights: Tensor | None = None  # [B, (H,) Tq, Tk], None unless return_weights=True
    path: str = "dense"  # "sdpa" | "dense" | "empty"
    reason: str = ""


def _flatten_attended(attended: Attended) -> tuple[list[Tensor | None], tuple[str, str]]:
    return [attended.context, attended.weights], (attended.path, attended.reason)


def _unflatten_attended(tensors: list[Tensor | None], info: tuple[str, str]) -> Attended:
    return Attended(tensors[0], tensors[1], *info)


# A pytree node (tensors: context, weights; constants: path, reason), so that compiled and exported modules can
# return it with return_weights=True.
pytree.register_pytree_node(
    Attended,
    _flatten_attended,
    _unflatten_attended,
    serialized_type_name="attnlab.core.Attended",
    to_dumpable_context=list,
    from_dumpable_context=tuple,
)


def context_and_weights(out: Tensor | Attended) -> tuple[Tensor, Tensor | None]:
    """``(context, weights)`` from what an attention module returned: its context tensor (weights None), or the
    :class:`Attended` it returns with ``return_weights=True``. For models that pass ``return_weights`` through."""
    if isinstance(out, Attended):
        return out.context, out.weights
    return out, None


def resolve_score(score: str | Score) -> Score:
    """A :class:`Score` from a score object or the name of a parameter-free score."""
    if isinstance(score, Score):
        return score
    if not isinstance(score, str):
        raise TypeError(f"score must be a score name or a Score; received {type(score).__name__}")
    cls = score_class(score)
    try:
        return cls()
    except TypeError:
        raise ValueError(
            f"score {score!r} has learned parameters; build it with "
            f"attnlab.get_score({score!r}, query_dim=..., key_dim=...) and pass the object"
        ) from None


def choose_path(score: Score, return_weights: bool) -> tuple[str, str]:
    """Which path :func:`attend_prepared` takes for this score, and why."""
    if return_weights:
        return "dense", "weights requested: logits and weights are materialized"
    if not score.is_dot:
        return "dense", f"{type(score).__name__} is not a dot product: explicit logits [B, H, Tq, Tk]"
    return "sdpa", "dot-product score, no weights requested: fused scaled_dot_product_attention"


def masked_softmax(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last axis where ``mask`` allows; rows with nothing allowed give exactly 0.

    Rows whose logits are all ``-inf`` (masked, or from a ``-inf`` bias) are set to 0 with a zero gradient.
    NaN in an allowed logit propagates. Branch-free: the empty rows are filled before and after the softmax
    (``exp(-inf - -inf)`` would be NaN), with an eager CPU shortcut that skips both fills when no row is empty.
    """
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    empty = logits.amax(-1, keepdim=True) == float("-inf")  # (.., Tq, 1): nothing to attend to
    if eager_on_cpu(logits) and not bool(empty.any()):  # the common case: no extra full-size passes
        return logits.softmax(-1)
    return logits.masked_fill(empty, 0.0).softmax(-1).masked_fill(empty, 0.0)


def attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    score: str | Score = "scaled_dot",
    mask: Tensor | None = None,
    *,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout: float = 0.0,
    return_weights: bool = False,
) -> Attended:
    """``context = E_p[V]`` with ``p = softmax(mask(score(query, key) + bias))``.

    ``score`` is a registered name of a parameter-free score (``"dot"``, ``"scaled_dot"``, ``"cosine"``) or a
    :class:`~attnlab.scores.Score` object (``attnlab.get_score("additive", query_dim=...)``). ``causal=True``
    applies :func:`attnlab.masks.causal` (end-aligned when ``Tq != Tk``), and-ed with ``mask`` if one is given.
    ``dropout`` drops weights (pass 0 at evaluation).
    Self-attention is ``attend(x, x, x)``.
    """
    score = resolve_score(score)
    batch, heads, tq, tk, one_head = _check_inputs(query, key, value)
    mask = _as_4d(mask, "mask", batch, heads, tq, tk, query.device)
    bias = _as_4d(bias, "bias", batch, heads, tq, tk, query.device)
    if one_head:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)  # (B, 1, T, D)
    if mask is not None or bias is not None:
        allowed = mask if bias is None else ~torch.isneginf(bias) if mask is None else mask & ~torch.isneginf(bias)
        unreadable = ~allowed.any(-2).unsqueeze(-1)  # (B|1, H|1, Tk, 1): no query may read these keys
        key, value = key.masked_fill(unreadable, 0.0), value.masked_fill(unreadable, 0.0)
    result = attend_prepared(
        score.prepare_query(query),
        score.prepare_key(key),
        value,
        score,
        mask=mask,
        bias=bias,
        causal=causal,
        dropout=dropout,
        return_weights=return_weights,
    )
    if not one_head:
        return result
    weights = None if result.weights is None else result.weights.squeeze(1)
    return Attended(result.context.squeeze(1), weights, result.path, result.reason)


def attend_prepared(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    score: Score,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout: float = 0.0,
    return_weights: bool = False,
) -> Attended:
    """The core on already prepared 4-D inputs: ``query = score.prepare_query(q) [B, H, Tq, D']``,
    ``key = score.prepare_key(k) [B, H, Tk, D']``, ``value [B, H, Tk, Dv]``; ``mask``/``bias`` 4-D broadcastable.

    Modules call this after projecting (and caching prepared keys); :func:`attend` validates and calls it.
    """
    tq, tk = query.shape[-2], key.shape[-2]
    mask, causal = merge_causal(mask, causal, tq, tk, query.device)
    batch, heads = broadcast_sizes(query.shape[:2], key.shape[:2], value.shape[:2])
    if tq == 0 or tk == 0:
        context = value.new_zeros(batch, heads, tq, value.shape[-1])
        weights = query.new_zeros(batch, heads, tq, tk) if return_weights else None
        return Attended(context, weights, "empty", "no queries or no keys: nothing to attend to, context is 0")
    path, reason = choose_path(score, return_weights)
    if path == "sdpa":
        return Attended(_fused(query, key, value, score, mask, bias, causal, dropout), None, path, reason)
    context, weights = _dense(query, key, value, score, mask, bias, causal, dropout)
    return Attended(context, weights if return_weights else None, path, reason)


def merge_causal(
    mask: Tensor | None, causal: bool, tq: int, tk: int, device: torch.device
) -> tuple[Tensor | None, bool]:
    """The one place where ``causal=True`` meets a mask: ``(mask, causal)`` for the paths below.

    ``causal`` stays a flag only for a square problem without a mask (SDPA's ``is_causal``, no mask tensor);
    otherwise the end-aligned :func:`attnlab.masks.causal` is and-ed into ``mask``. One query over many keys
    (incremental decoding) may read them all, so it needs neither.
    """
    if not causal or tq <= 1:
        return mask, False
    if mask is None and tq == tk:
        return None, True
    allowed = masks.causal(tq, tk, device=device)  # (Tq, Tk)
    return (allowed if mask is None else mask & allowed), False


def _dense(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    score: Score,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    dropout: float,
) -> tuple[Tensor, Tensor]:
    if causal:
        mask = masks.causal(query.shape[-2], key.shape[-2], device=query.device)
    # Logits and softmax in float32 for half-precision inputs (fp16 logits overflow at 65504), autocast or not.
    with torch.autocast(query.device.type, enabled=False):
        if query.dtype in _LOW_PRECISION:
            query, key = query.float(), key.float()
        logits = score.combine(query, key)  # (B, H, Tq, Tk)
        if bias is not None:  # a -inf bias masks even a NaN logit, as a False mask entry does
            bias = bias.to(logits.dtype)
            logits = torch.where(torch.isneginf(bias), bias, logits + bias)
        # Without mask or bias no row can be empty: a plain softmax (inf/NaN inputs propagate as they should).
        weights = logits.softmax(-1) if mask is None and bias is None else masked_softmax(logits, mask)
    dropped = F.dropout(weights, dropout) if dropout > 0 else weights
    context = dropped.to(value.dtype) @ value  # (B, H, Tq, Tk) @ (B, H, Tk, Dv) -> (B, H, Tq, Dv)
    return context, weights


def _fused(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    score: Score,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    dropout: float,
) -> Tensor:
    attn_mask, empty = mask, None
    if bias is not None:
        attn_mask = bias.to(query.dtype)
        if mask is not None:
            attn_mask = attn_mask.masked_fill(~mask, float("-inf"))
        if causal:  # SDPA takes is_causal or a mask, not both
            later = ~masks.causal(query.shape[-2], key.shape[-2], device=query.device)  # (Tq, Tk)
            attn_mask = attn_mask.masked_fill(later, float("-inf"))
            causal = False
    if attn_mask is not None:
        # Rows with nothing to attend to: let them attend anywhere, then zero them (context and gradient).
        if attn_mask.dtype == torch.bool:
            empty = ~attn_mask.any(-1, keepdim=True)  # (.., Tq, 1)
            attn_mask = attn_mask | empty
        else:
            empty = torch.isneginf(attn_mask).all(-1, keepdim=True)
            attn_mask = attn_mask.masked_fill(empty, 0.0)
    # SDPA's fused kernels need the last dimension contiguous and equal query/key and value widths; otherwise it
    # silently falls back to the math path, which materializes [B, H, Tq, Tk]. Zero-padding the narrower side
    # changes no dot product and no weighted sum; the padding is cut from the result.
    qk_dim, v_dim = query.shape[-1], value.shape[-1]
    scale = score.scale(qk_dim)
    if qk_dim < v_dim:
        query, key = F.pad(query, (0, v_dim - qk_dim)), F.pad(key, (0, v_dim - qk_dim))
    elif v_dim < qk_dim:
        value = F.pad(value, (0, qk_dim - v_dim))
    key, nan_keys = _set_nan_keys_aside(key, restricted=attn_mask is not None or causal)
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout, is_causal=causal, scale=scale
    )  # (B, H, Tq, max(Dqk, Dv))
    if v_dim < qk_dim:  # only then: a slice's backward zero-fills and copies the whole gradient
        context = context[..., :v_dim]  # (B, H, Tq, Dv)
    context = _propagate_nan(query, nan_keys, attn_mask, causal, context)
    if empty is None or (eager_on_cpu(empty) and not bool(empty.any())):  # eager CPU: no empty row, no fill
        return context
    return context.masked_fill(empty, 0.0)


def _may_hold_nan(tensor: Tensor) -> bool:
    """Whether the NaN guards must run. Branch-free (always True) except in eager mode on CPU, where one reduction
    without a copy tells: a NaN anywhere makes the sum NaN (so does inf - inf, a false alarm that the exact masks
    after it clear). There it is about 40x cheaper than ``tensor.isnan().any()``; on a GPU asking would
    synchronize the host with the device, and under compile or export it would be a data-dependent branch."""
    return not eager_on_cpu(tensor) or bool(tensor.sum().isnan())


def _set_nan_keys_aside(key: Tensor, *, restricted: bool) -> tuple[Tensor, Tensor | None]:
    """A NaN key would reach rows that mask it (SDPA adds the mask to a NaN logit) and be dropped from a row whose
    only readable key it is (the fused CPU kernel reads a NaN row maximum as "fully masked"). So NaN keys are
    zeroed before SDPA, and :func:`_propagate_nan` gives NaN to exactly the rows that read one, as the dense
    path's softmax does. Without a mask (``restricted=False``) every row reads every key and is NaN-filled
    anyway, so the key is left as it is (one pass less). Returns the key and ``nan_keys [B, H, Tk]`` (None: the
    eager check found no NaN)."""
    if not _may_hold_nan(key):
        return key, None
    nan_keys = key.isnan().any(-1)  # (B, H, Tk)
    if not restricted:
        return key, nan_keys
    return key.masked_fill(nan_keys.unsqueeze(-1), 0.0), nan_keys


def _propagate_nan(
    query: Tensor, nan_keys: Tensor | None, attn_mask: Tensor | None, causal: bool, context: Tensor
) -> Tensor:
    """NaN in a query, or in a key its row may read (``nan_keys [B, H, Tk]``), must give NaN, as the softmax does;
    SDPA's fused CPU kernel instead returns 0 for a NaN query. The fill is unconditional except in eager mode on
    CPU, where one reduction per tensor tells whether there may be NaN. Keys a row may not read are ignored:
    ``attn_mask`` (bool, or float with ``-inf``) or ``causal`` (``Tq == Tk``) says which it may."""
    if nan_keys is None and not _may_hold_nan(query):
        return context
    nan_rows = query.isnan().any(-1, keepdim=True)  # (B, H, Tq, 1)
    if nan_keys is None:
        return context.masked_fill(nan_rows, float("nan"))
    if attn_mask is not None:
        readable = attn_mask if attn_mask.dtype == torch.bool else ~torch.isneginf(attn_mask)
        # (B|1, H|1, Tq, Tk) @ (B, H, Tk, 1): NaN keys read per row, without forming a [B, H, Tq, Tk] copy
        reads_nan = (readable.to(torch.float32) @ nan_keys.to(torch.float32).unsqueeze(-1)) > 0
    elif causal:  # Tq == Tk: row i reads keys 0..i
        reads_nan = nan_keys.to(torch.float32).cumsum(-1).gt(0).unsqueeze(-1)  # (B, H, Tq, 1)
    else:
        reads_nan = nan_keys.any(-1, keepdim=True).unsqueeze(-1)  # (B, H, 1, 1)
    return context.masked_fill(nan_rows | reads_nan, float("nan"))


# -- validation ------------------------------------------------------------------------------------------------
def _check_inputs(query: Tensor, key: Tensor, value: Tensor) -> tuple[int, int, int, int, bool]:
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; received {type(tensor).__name__}")
        if not tensor.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor; received dtype {tensor.dtype}")
    if query.dim() not in (3, 4):
        raise ValueError(f"query must be [B, Tq, D] or [B, H, Tq, D]; received shape {tuple(query.shape)}")
    layout = "[B, T, D]" if query.dim() == 3 else "[B, H, T, D]"
    for name, tensor in (("key", key), ("value", value)):
        if tensor.dim() != query.dim():
            raise ValueError(
                f"{name} must be {layout} like query {tuple(query.shape)}; received shape {tuple(tensor.shape)}"
            )
        if tensor.shape[: query.dim() - 2] != query.shape[: query.dim() - 2]:
            lead = "batch" if query.dim() == 3 else "batch and heads"
            raise ValueError(
                f"{name} must match query in {lead} {tuple(query.shape[:-2])}; received shape {tuple(tensor.shape)}"
            )
        if tensor.dtype != query.dtype:
            raise TypeError(f"{name} dtype must match query's {query.dtype}; received {tensor.dtype}")
        if tensor.device != query.device:
            raise ValueError(f"{name} must be on query's device {query.device}; received {tensor.device}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have the same length Tk; received key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    one_head = query.dim() == 3
    heads = 1 if one_head else query.shape[1]
    return query.shape[0], heads, query.shape[-2], key.shape[-2], one_head


def _as_4d(
    tensor: Tensor | None, name: str, batch: int, heads: int, tq: int, tk: int, device: torch.device
) -> Tensor | None:
    """A mask or bias as 4-D ``[B|1, H|1, Tq|1, Tk|1]``; up to 3-D inputs have no head axis."""
    if tensor is None:
        return None
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None; received {type(tensor).__name__}")
    if name == "mask" and tensor.dtype != torch.bool:
        hint = (
            "float masks are not accepted (0/1 or -inf conventions differ between libraries): use a bool mask, "
            "or pass additive logits as bias="
            if tensor.dtype.is_floating_point
            else "convert it with mask.bool() after checking that nonzero means 'may attend'"
        )
        raise TypeError(f"mask must be a bool tensor (True = may attend); received dtype {tensor.dtype}; {hint}")
    if name == "bias" and not tensor.dtype.is_floating_point:
        raise TypeError(f"bias must be a floating-point tensor (added to the logits); received dtype {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} must be on the inputs' device {device}; received {tensor.device}")
    if not 2 <= tensor.dim() <= 4:
        raise ValueError(
            f"{name} must have 2 to 4 dims ([Tq, Tk], [B, Tq, Tk] or [B, H, Tq, Tk]); "
            f"received shape {tuple(tensor.shape)}"
        )
    full = tensor if tensor.dim() == 4 else tensor.reshape((1,) * (3 - tensor.dim()) + tuple(tensor.shape)).unsqueeze(1)
    target = (batch, heads, tq, tk)
    if any(got not in (1, want) for got, want in zip(full.shape, target, strict=True)):
        raise ValueError(
            f"{name} of shape {tuple(tensor.shape)} does not broadcast to [B, H, Tq, Tk] = {list(target)} "
            "(masks of up to 3 dims have no head axis)"
        )
    return full
