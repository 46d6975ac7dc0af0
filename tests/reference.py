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
