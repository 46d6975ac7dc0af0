"""Independent float64 reference for attention, written from the papers' equations with plain loops.

It shares no code with attnlab beyond reading a score's parameters by name: every logit is computed pair by
pair, every softmax row by row, so it can serve as the oracle for the fused and dense paths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def pair_logit(score, head: int, q: Tensor, k: Tensor, j: int) -> float:
    """One logit ``score(q, k_j)`` for head ``head``, from the formula of the score's paper (float64)."""
    name = type(score).__name__
    q, k = q.detach().double(), k.detach().double()
    if name == "Dot":
        return float(sum(q[d] * k[d] for d in range(q.numel())))
    if name == "ScaledDot":
        return float(sum(q[d] * k[d] for d in range(q.numel()))) / math.sqrt(k.numel())
    if name == "General":
        w = score.weight[head].detach().double()
        return float(sum(q[d] * w[d, e] * k[e] for d in range(q.numel()) for e in range(k.numel())))
    if name == "Additive":
        w, u, v = (
            score.query_weight[head].detach().double(),
            score.key_weight[head].detach().double(),
            score.v[head].detach().double(),
        )
        total = 0.0
        for a in range(v.numel()):
            pre = sum(q[d] * w[d, a] for d in range(q.numel())) + sum(k[e] * u[e, a] for e in range(k.numel()))
            total += float(v[a]) * math.tanh(float(pre))
        return total
    if name == "Cosine":
        beta = float(score.strength[head].detach())
        nq = max(math.sqrt(float((q * q).sum())), score.eps)
        nk = max(math.sqrt(float((k * k).sum())), score.eps)
        return beta * float((q * k).sum()) / (nq * nk)
    if name == "Location":
        w, b = score.weight[head].detach().double(), score.bias[head, 0].detach().double()
        return float(sum(q[d] * w[d, j] for d in range(q.numel())) + b[j])
    raise KeyError(f"no reference for {name}")


def _at(tensor: Tensor, *index: int):
    """``tensor[index]`` with broadcasting: size-1 axes are read at 0."""
    return tensor[tuple(min(i, size - 1) for i, size in zip(index, tensor.shape, strict=True))]


def reference_attend(query, key, value, score, mask=None, bias=None) -> tuple[Tensor, Tensor]:
    """``(context, weights)`` in float64 for 4-D ``[B, H, T, D]`` inputs; mask/bias 4-D broadcastable."""
    batch, heads, tq, _ = query.shape
    tk = key.shape[2]
    context = torch.zeros(batch, heads, tq, value.shape[-1], dtype=torch.float64)
    weights = torch.zeros(batch, heads, tq, tk, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for i in range(tq):
                logits = []
                for j in range(tk):
                    allowed = True if mask is None else bool(_at(mask, b, h, i, j))
                    extra = 0.0 if bias is None else float(_at(bias, b, h, i, j))
                    if allowed and extra != -math.inf:
                        logits.append((j, pair_logit(score, h, query[b, h, i], key[b, h, j], j) + extra))
                if not logits:
                    continue  # nothing to attend to: context and weights stay 0
                top = max(value for _, value in logits)
                exps = [(j, math.exp(value - top)) for j, value in logits]
                total = sum(e for _, e in exps)
                for j, e in exps:
                    weights[b, h, i, j] = e / total
                    context[b, h, i] += (e / total) * value[b, h, j].detach().double()
    return context, weights


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, T, H*D] -> [B, H, T, D]`` by slicing columns head by head."""
    size = x.shape[-1] // heads
    return torch.stack([x[..., h * size : (h + 1) * size] for h in range(heads)], dim=1)


def reference_module(module, x: Tensor, context: Tensor, mask=None, causal: bool = False) -> tuple[Tensor, Tensor]:
    """Reference output of a CrossAttention/SelfAttention: explicit projections, per-head loops, output proj."""
    x, context = x.double(), context.double()

    def linear(which, t):
        projection = module.projection(which)
        if projection is None:
            return t
        weight, bias = projection
        out = torch.einsum("btd,od->bto", t, weight.detach().double())
        return out if bias is None else out + bias.detach().double()

    heads = module.heads
    q = split_heads(linear("query", x), heads)
    k = split_heads(linear("key", context), heads)
    v = split_heads(linear("value", context), heads)
    tq, tk = x.shape[1], context.shape[1]
    if mask is not None and mask.dim() <= 3:
        mask = mask.reshape((1,) * (3 - mask.dim()) + tuple(mask.shape)).unsqueeze(1)
    if causal:
        lower = torch.tensor([[j <= i + tk - tq for j in range(tk)] for i in range(tq)])
        mask = lower[None, None] if mask is None else mask & lower
    ctx, weights = reference_attend(q, k, v, module.score, mask)
    merged = torch.cat([ctx[:, h] for h in range(heads)], dim=-1)  # (B, Tq, H*Dv)
    return linear("output", merged), weights


# -- Vectorized oracles -----------------------------------------------------------------------------------------
# The loops above are the primary oracle but take minutes at T = 97, D = 64. The functions below write the same
# equations with einsum, in whatever dtype their inputs have (float64 for the oracle; bfloat16/float16 for the
# "naive low-precision" yardstick of the FlashAttention rule), and stay differentiable so they also give reference
# gradients. tests/reliability/test_scorecard.py checks them against the loops above.


def reference_logits(score, q: Tensor, k: Tensor) -> Tensor:
    """``score(q_i, k_j)`` for ``q [B, H, Tq, Dq]``, ``k [B, H, Tk, Dk]`` -> ``[B, H, Tq, Tk]`` in ``q.dtype``.

    Parameters are read by name (as :func:`pair_logit` does) and cast to the inputs' dtype.
    """
    name, dtype = type(score).__name__, q.dtype

    def param(tensor: Tensor) -> Tensor:
        return tensor.detach().to(dtype)

    if name in ("Dot", "ScaledDot"):
        logits = torch.einsum("bhid,bhjd->bhij", q, k)
        return logits / math.sqrt(k.shape[-1]) if name == "ScaledDot" else logits
    if name == "General":
        return torch.einsum("bhid,hde,bhje->bhij", q, param(score.weight), k)
    if name == "Additive":
        wq = torch.einsum("bhid,hda->bhia", q, param(score.query_weight))  # (B, H, Tq, A)
        uk = torch.einsum("bhjd,hda->bhja", k, param(score.key_weight))  # (B, H, Tk, A)
        hidden = torch.tanh(wq[:, :, :, None, :] + uk[:, :, None, :, :])  # (B, H, Tq, Tk, A)
        return torch.einsum("bhija,ha->bhij", hidden, param(score.v))
    if name == "Cosine":
        beta = param(score.log_strength).exp()  # (H,)
        eps = max(score.eps, torch.finfo(dtype).tiny)  # an eps the dtype can hold (1e-8 is 0 in float16)
        qn = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(eps)
        kn = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(eps)
        return beta[None, :, None, None] * torch.einsum("bhid,bhjd->bhij", qn, kn)
    if name == "Location":
        logits = torch.einsum("bhid,hdl->bhil", q, param(score.weight)) + param(score.bias)[None]  # (B, H, Tq, L)
        return logits[..., : k.shape[-2]]
    raise KeyError(f"no reference for {name}")


def reference_softmax(logits: Tensor, allowed: Tensor | None) -> Tensor:
    """Softmax over the last axis restricted to ``allowed``; rows with nothing allowed are exactly 0."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)
    top = logits.detach().amax(-1, keepdim=True)  # the shift does not change the softmax or its gradient
    empty = top == -math.inf
    exps = torch.exp(logits - top.masked_fill(empty, 0.0))  # exp(-inf) = 0 at disallowed entries
    total = exps.sum(-1, keepdim=True)
    return exps / total.masked_fill(empty, 1.0)


def reference_attend_einsum(q: Tensor, k: Tensor, v: Tensor, score, allowed=None, bias=None) -> tuple[Tensor, Tensor]:
    """``(context, weights)`` for 4-D ``[B, H, T, D]`` inputs in their own dtype; ``allowed`` bool and ``bias``
    float broadcastable to ``[B, H, Tq, Tk]`` (``-inf`` in ``bias`` disallows)."""
    logits = reference_logits(score, q, k)  # (B, H, Tq, Tk)
    if bias is not None:
        finite = ~torch.isneginf(bias)
        logits = logits + bias.to(logits.dtype).masked_fill(~finite, 0.0)
        allowed = finite if allowed is None else allowed & finite
    weights = reference_softmax(logits, allowed)
    context = torch.einsum("bhij,bhjd->bhid", weights, v)  # (B, H, Tq, Dv)
    return context, weights


def reference_module_einsum(module, x: Tensor, context: Tensor, allowed=None, *, self_attention: bool = False):
    """Output ``[B, Tq, out_dim]`` and weights ``[B, H, Tq, Tk]`` of a CrossAttention/SelfAttention, in ``x.dtype``.

    ``allowed`` is a bool ``[B|1, H|1, Tq, Tk]``. As documented in attnlab.core, positions that no query may read
    are zeroed before anything reads them (in self-attention also as queries).
    """
    dtype = x.dtype
    if allowed is not None:
        readable = allowed.any(dim=2).any(dim=1)  # (B|1, Tk): some query of some head may read it
        context = torch.where(readable[..., None], context, torch.zeros((), dtype=dtype))
        if self_attention:
            x = context

    def linear(which: str, t: Tensor) -> Tensor:
        projection = module.projection(which)
        if projection is None:
            return t
        weight, bias = projection
        out = torch.einsum("btd,od->bto", t, weight.detach().to(dtype))
        return out if bias is None else out + bias.detach().to(dtype)

    heads = module.heads
    q = split_heads(linear("query", x), heads)  # (B, H, Tq, D)
    k = split_heads(linear("key", context), heads)  # (B, H, Tk, D)
    v = split_heads(linear("value", context), heads)  # (B, H, Tk, Dv)
    ctx, weights = reference_attend_einsum(q, k, v, module.score, allowed)
    merged = torch.cat([ctx[:, h] for h in range(heads)], dim=-1)  # (B, Tq, H*Dv)
    return linear("output", merged), weights
