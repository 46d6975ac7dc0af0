"""Independent float64 references for the vision blocks, written from the papers' equations.

Nothing here calls attnlab: parameters are read from the modules by name, 1x1 convolutions are einsums, batch
norm uses the batch statistics written out, max-pooling is a loop over windows, and every attention is a full
``[N, M]`` (or ``[H, N, N]``) matrix of logits, masked where the mechanism does not look, normalized explicitly.
Each function returns ``(output, attention)`` with ``attention`` the full matrix (None for the gates), so the
tests can also compare the one query row a block returns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def p(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().double()


def conv1x1(x: Tensor, conv) -> Tensor:
    out = torch.einsum("oc,bcyx->boyx", p(conv.weight)[:, :, 0, 0], x)
    return out if conv.bias is None else out + p(conv.bias)[None, :, None, None]


def linear(x: Tensor, layer) -> Tensor:
    out = torch.einsum("oi,...i->...o", p(layer.weight), x)
    return out if layer.bias is None else out + p(layer.bias)


def batch_norm(x: Tensor, bn) -> Tensor:
    """Training-mode batch norm: biased variance over (B, Hs, Ws)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * p(bn.weight)[None, :, None, None] + p(bn.bias)[None, :, None, None]


def layer_norm(x: Tensor, ln) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * p(ln.weight) + p(ln.bias)


def max_pool_ceil(x: Tensor, s: int) -> Tensor:
    """``s x s`` max-pooling keeping partial windows at the bottom/right edges, by loops."""
    if s == 1:
        return x
    height, width = x.shape[-2:]
    rows, cols = -(-height // s), -(-width // s)
    out = x.new_empty(*x.shape[:2], rows, cols)
    for i in range(rows):
        for j in range(cols):
            out[:, :, i, j] = x[:, :, i * s : (i + 1) * s, j * s : (j + 1) * s].amax(dim=(2, 3))
    return out


def tokens(x: Tensor) -> Tensor:
    return x.reshape(*x.shape[:2], -1).transpose(1, 2)  # (B, N, C)


def untokens(t: Tensor, height: int, width: int) -> Tensor:
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], height, width)


def softmax_rows(logits: Tensor, allowed: Tensor | None = None) -> Tensor:
    """exp(l - max) / sum over allowed entries; disallowed entries are exactly 0."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def sigmoid(t: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


# -- channel and spatial gates ----------------------------------------------------------------------------------
def se(block, x: Tensor):
    gate = sigmoid(linear(torch.relu(linear(x.mean(dim=(2, 3)), block.fc1)), block.fc2))
    return x * gate[:, :, None, None], None


def eca(block, x: Tensor):
    pooled = x.mean(dim=(2, 3))  # (B, C)
    w = p(block.conv.weight)[0, 0]  # (k,)
    k, channels = w.numel(), pooled.shape[1]
    pre = torch.zeros_like(pooled)
    for c in range(channels):
        for t in range(k):
            src = c + t - k // 2
            if 0 <= src < channels:
                pre[:, c] += w[t] * pooled[:, src]
    return x * sigmoid(pre)[:, :, None, None], None


def cbam(block, x: Tensor):
    def mlp(v):
        return linear(torch.relu(linear(v, block.mlp[0])), block.mlp[2])

    channel = sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    x = x * channel[:, :, None, None]
    pooled = torch.stack([x.mean(1), x.amax(1)], dim=1)
    k = block.spatial.kernel_size[0]
    spatial = sigmoid(batch_norm(F.conv2d(pooled, p(block.spatial.weight), padding=k // 2), block.spatial_norm))
    return x * spatial, None


# -- global self-attention --------------------------------------------------------------------------------------
def non_local(block, x: Tensor):
    height, width = x.shape[-2:]
    s, name = block.kv_stride, block.pairwise_name
    if name == "gaussian":
        theta, phi = x, x
    else:
        theta, phi = conv1x1(x, block.pairwise.theta), conv1x1(x, block.pairwise.phi)
    q, k = tokens(theta), tokens(max_pool_ceil(phi, s))  # (B, N, D), (B, M, D)
    g = tokens(max_pool_ceil(conv1x1(x, block.g), s))  # (B, M, C')
    m = k.shape[1]
    if name in ("embedded_gaussian", "gaussian"):
        attention = softmax_rows(block.scale * torch.einsum("bid,bjd->bij", q, k))
    elif name == "dot":
        attention = torch.einsum("bid,bjd->bij", q, k) / m
    else:  # concatenation: relu(w_f . [theta_i; phi_j]) / M, written on the concatenated vector
        w = p(block.pairwise.weight)
        pairs = torch.cat(
            [q[:, :, None, :].expand(-1, -1, m, -1), k[:, None, :, :].expand(-1, q.shape[1], -1, -1)], dim=-1
        )  # (B, N, M, 2D)
        attention = torch.relu(pairs @ w) / m
    y = untokens(attention @ g, height, width)
    return batch_norm(conv1x1(y, block.out), block.norm) + x, attention


def sagan(block, x: Tensor):
    height, width = x.shape[-2:]
    s = block.kv_stride
    q = tokens(conv1x1(x, block.query))
    k = tokens(max_pool_ceil(conv1x1(x, block.key), s))
    v = tokens(max_pool_ceil(conv1x1(x, block.value), s))
    attention = softmax_rows(torch.einsum("bid,bjd->bij", q, k))
    o = conv1x1(untokens(attention @ v, height, width), block.out)
    return p(block.gamma) * o + x, attention


def _heads(t: Tensor, heads: int) -> Tensor:
    """[B, H*D, Hs, Ws] -> [B, H, N, D], head h = channels h*D..(h+1)*D-1, by slicing."""
    d = t.shape[1] // heads
    return torch.stack([tokens(t[:, h * d : (h + 1) * d]) for h in range(heads)], dim=1)


def _unheads(t: Tensor, height: int, width: int) -> Tensor:
    return torch.cat([untokens(t[:, h], height, width) for h in range(t.shape[1])], dim=1)


def relative_mhsa(attention_module, q_map: Tensor, k_map: Tensor, v_map: Tensor):
    """Bello 2019 eq. (3): (q_i.k_j + q_i.r^H[y_j - y_i] + q_i.r^W[x_j - x_i]) / sqrt(d), offsets clipped at M."""
    heads, rel = attention_module.heads, attention_module.relative
    height, width = q_map.shape[-2:]
    q, k, v = _heads(q_map, heads), _heads(k_map, heads), _heads(v_map, heads)
    limit = rel.max_offset
    ys = torch.arange(height).repeat_interleave(width)
    xs = torch.arange(width).repeat(height)
    dy = (ys[None, :] - ys[:, None]).clamp(-limit, limit) + limit  # (N, N): key row - query row
    dx = (xs[None, :] - xs[:, None]).clamp(-limit, limit) + limit
    pair = p(rel.height)[dy] + p(rel.width)[dx]  # (N, N, D): r^H + r^W for every pair
    logits = torch.einsum("bhid,bhjd->bhij", q, k) + torch.einsum("bhid,ijd->bhij", q, pair)
    attention = softmax_rows(logits / math.sqrt(q.shape[-1]))
    return _unheads(attention @ v, height, width), attention


def aa_conv(block, x: Tensor):
    dv = block.attention_channels
    qkv = conv1x1(x, block.qkv)
    context, attention = relative_mhsa(block.attention, qkv[:, :dv], qkv[:, dv : 2 * dv], qkv[:, 2 * dv :])
    attended = conv1x1(context, block.attention_out)
    if block.conv is None:
        return attended, attention
    k = block.conv.kernel_size[0]
    conv = F.conv2d(x, p(block.conv.weight), p(block.conv.bias), padding=k // 2)
    return torch.cat([conv, attended], dim=1), attention


def botnet(block, x: Tensor):
    h = torch.relu(batch_norm(conv1x1(x, block.reduce), block.reduce_norm))
    mid = h.shape[1]
    qkv = conv1x1(h, block.qkv)
    context, attention = relative_mhsa(block.attention, qkv[:, :mid], qkv[:, mid : 2 * mid], qkv[:, 2 * mid :])
    h = torch.relu(batch_norm(context, block.attention_norm))
    return torch.relu(x + batch_norm(conv1x1(h, block.expand), block.expand_norm)), attention


def sasa(block, x: Tensor):
    """Full [H, N, N] logits, masked to each pixel's k x k window (inside the image)."""
    height, width = x.shape[-2:]
    heads, k = block.heads, block.kernel_size
    r = k // 2
    c = x.shape[1]
    qkv = conv1x1(x, block.qkv)
    q, key, v = _heads(qkv[:, :c], heads), _heads(qkv[:, c : 2 * c], heads), _heads(qkv[:, 2 * c :], heads)
    half = p(block.rows).shape[1]
    ys = torch.arange(height).repeat_interleave(width)
    xs = torch.arange(width).repeat(height)
    dy, dx = ys[None, :] - ys[:, None], xs[None, :] - xs[:, None]  # (N, N): key - query
    window = (dy.abs() <= r) & (dx.abs() <= r)
    row_emb = p(block.rows)[dy.clamp(-r, r) + r]  # (N, N, D/2), meaningful inside the window
    col_emb = p(block.cols)[dx.clamp(-r, r) + r]
    logits = (
        torch.einsum("bhid,bhjd->bhij", q, key)
        + torch.einsum("bhid,ijd->bhij", q[..., :half], row_emb)
        + torch.einsum("bhid,ijd->bhij", q[..., half:], col_emb)
    )
    attention = softmax_rows(logits, window)
    return _unheads(attention @ v, height, width), attention


def criss_cross(block, x: Tensor):
    """Full [N, N] logits masked to each pixel's row and column (itself once), R passes with shared weights."""
    height, width = x.shape[-2:]
    ys = torch.arange(height).repeat_interleave(width)
    xs = torch.arange(width).repeat(height)
    cross = (ys[None, :] == ys[:, None]) | (xs[None, :] == xs[:, None])  # (N, N)
    attentions = []
    for _ in range(block.recurrence):
        q, k, v = tokens(conv1x1(x, block.query)), tokens(conv1x1(x, block.key)), tokens(conv1x1(x, block.value))
        attention = softmax_rows(torch.einsum("bid,bjd->bij", q, k), cross)
        x = p(block.gamma) * untokens(attention @ v, height, width) + x
        attentions.append(attention)
    return x, torch.stack(attentions, dim=1)  # (B, R, N, N)


# -- ViT ----------------------------------------------------------------------------------------------------------
def gelu(t: Tensor) -> Tensor:
    return 0.5 * t * (1.0 + torch.erf(t / math.sqrt(2.0)))


def vit(encoder, x: Tensor):
    """Pooled features [B, dim] and each layer's attention [B, H, T, T]."""
    ps = encoder.patch_size
    batch, _, height, width = x.shape
    rows, cols = -(-height // ps), -(-width // ps)
    padded = x.new_zeros(batch, x.shape[1], rows * ps, cols * ps)
    padded[:, :, :height, :width] = x
    w, b = p(encoder.patch.weight), p(encoder.patch.bias)  # (dim, C, ps, ps)
    patches = padded.reshape(batch, x.shape[1], rows, ps, cols, ps)
    embedded = torch.einsum("dcij,bcyixj->bdyx", w, patches) + b[None, :, None, None]  # (B, dim, rows, cols)
    position = p(encoder.position)
    if (rows, cols) != tuple(position.shape[-2:]):
        position = F.interpolate(position, size=(rows, cols), mode="bilinear", align_corners=False)
    z = tokens(embedded + position)
    if encoder.class_token is not None:
        z = torch.cat([p(encoder.class_token).expand(batch, 1, -1), z], dim=1)
    attentions = []
    for layer in encoder.layers:
        attn = layer.attention
        heads = attn.heads
        h = layer_norm(z, layer.attention_norm)

        def project(which, t, attn=attn):
            weight, bias = attn.projection(which)
            return torch.einsum("oi,bti->bto", p(weight), t) + p(bias)

        d = h.shape[-1] // heads
        q, k, v = (
            project(which, h).reshape(batch, -1, heads, d).transpose(1, 2) for which in ("query", "key", "value")
        )
        attention = softmax_rows(torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d))
        context = (attention @ v).transpose(1, 2).reshape(batch, -1, heads * d)
        z = z + project("output", context)
        z = z + linear(gelu(linear(layer_norm(z, layer.mlp_norm), layer.mlp[0])), layer.mlp[3])
        attentions.append(attention)
    z = layer_norm(z, encoder.norm)
    pooled = z[:, 0] if encoder.class_token is not None else z.mean(1)
    return pooled, attentions


REFERENCES = {
    "se": se,
    "eca": eca,
    "cbam": cbam,
    "nonlocal": non_local,
    "sagan": sagan,
    "aa_conv": aa_conv,
    "botnet": botnet,
    "sasa": sasa,
    "criss_cross": criss_cross,
}
