"""LSTMN: Long Short-Term Memory-Network (Cheng, Dong & Lapata 2016, "Long Short-Term Memory-Networks for Machine
Reading", arXiv 1601.06733). An LSTM whose memory is a tape of all previous states, read by intra-attention:

    a_i^t = v^T tanh(W_h h_i + W_x x_t + W_h~ h~_{t-1}),  s^t = softmax(a^t) over i < t
    [h~_t; c~_t] = sum_{i<t} s_i^t [h_i; c_i]                               (adaptive memory summary)
    [i, f, o, c^] = [sigma, sigma, sigma, tanh](W [h~_t; x_t] + b)
    c_t = f * c~_t + i * c^_t,   h_t = o * tanh(c_t)

Self-attention before the Transformer: the sequence reads its own earlier states, one step at a time. The score is
the additive one with query ``[x_t; h~_{t-1}]`` (so ``W_q = [W_x; W_h~]``) and key ``h_i``; the values are the
hidden and memory tapes ``[h_i; c_i]``. The attention is an :class:`attnlab.CrossAttention` without projections
called once per step with a :class:`attnlab.Memory` of the tapes, whose keys are prepared (``W_h h_i``) once per
position as the tape grows, never recomputed. At ``t = 0`` the tape is empty and the summary is 0, the core's
result for "nothing to attend to".

:class:`LSTMNEncoder` stacks layers (optionally bidirectional: a second LSTMN reads each row reversed) and returns
an :class:`~attnlab.seq.base.Encoded`, so it is the encoder of :class:`attnlab.seq.rnn.RNNSeq2Seq` with
``encoder="lstmn"``: *shallow fusion*, the decoder's inter-attention reads the LSTMN states. Deep fusion (the
decoder also an LSTMN) is not implemented.

Status: complete for the encoder. The step loop is Python (``T`` steps per layer and direction); no fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import masks
from ..attention import CrossAttention, Memory, context_and_weights
from .base import Encoded, Site, check_dropout, check_positive, check_score, check_tokens, score_options

__all__ = ["LSTMNEncoder", "LSTMNLayer"]


class LSTMNLayer(nn.Module):
    """One left-to-right LSTMN layer over ``x [B, T, input_dim]``."""

    def __init__(self, input_dim: int, hidden: int, score: str = "additive", *, max_len: int = 512) -> None:
        super().__init__()
        self.input_dim, self.hidden = check_positive("input_dim", input_dim), check_positive("hidden", hidden)
        check_score("score", score)
        # query [x_t; h~_{t-1}], key h_i, value [h_i; c_i]; no projections: the score owns W_x, W_h~, W_h and v.
        self.attention = CrossAttention(
            input_dim + hidden, hidden, 1, score, project=False, score_options=score_options(score, max_len)
        )
        self.gates = nn.Linear(hidden + input_dim, 4 * hidden)  # W [h~_t; x_t] + b -> i, f, o, c^
        with torch.no_grad():
            self.gates.bias[hidden : 2 * hidden].fill_(1.0)  # forget gate starts open

    def forward(self, x: Tensor, *, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Hidden states ``[B, T, hidden]`` and, if asked, weights ``[B, 1, T, T]`` (row t over positions < t)."""
        batch, length, _ = x.shape
        hidden_summary = x.new_zeros(batch, self.hidden)  # h~_{t-1}
        keys: list[Tensor] = []  # prepared W_h h_i, each (B, 1, 1, A)
        values: list[Tensor] = []  # [h_i; c_i], each (B, 1, 1, 2*hidden)
        outputs, rows = [], []
        for t in range(length):
            query = torch.cat((x[:, t], hidden_summary), dim=-1)[:, None]  # (B, 1, In+H)
            if t == 0:  # empty tape: nothing to attend to, the summary is 0
                summary = x.new_zeros(batch, 2 * self.hidden)
                step_weights = x.new_zeros(batch, 0)
            else:
                tape = Memory(torch.cat(keys, dim=2), torch.cat(values, dim=2))  # (B, 1, t, A), (B, 1, t, 2H)
                summary, step_weights = context_and_weights(self.attention(query, tape, return_weights=return_weights))
                summary = summary[:, 0]  # (B, 2H)
                step_weights = step_weights[:, 0] if return_weights else None  # (B, t)
            hidden_summary, cell_summary = summary.split(self.hidden, dim=-1)  # h~_t, c~_t: (B, H) each
            i, f, o, g = self.gates(torch.cat((hidden_summary, x[:, t]), dim=-1)).chunk(4, dim=-1)
            cell = torch.sigmoid(f) * cell_summary + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
            h = torch.sigmoid(o) * torch.tanh(cell)  # (B, H)
            keys.append(self.attention.precompute(h[:, None]).key)  # W_h h_t once: (B, 1, 1, A)
            values.append(torch.cat((h, cell), dim=-1)[:, None, None])  # (B, 1, 1, 2H)
            outputs.append(h)
            if return_weights:
                rows.append(F.pad(step_weights, (0, length - t)))  # (B, T): zeros from position t on
        states = torch.stack(outputs, dim=1)  # (B, T, H)
        weights = torch.stack(rows, dim=1)[:, None] if return_weights else None  # (B, 1, T, T)
        return states, weights


class LSTMNEncoder(nn.Module):
    """Embedding and ``layers`` LSTMN layers (bidirectional: a forward and a backward layer, outputs joined).

    ``forward(src, src_lengths)`` gives states ``[B, S, output_dim]`` and ``final [B, final_dim]`` (the last
    layer's state at the last real token, forward, and at the first token, backward).
    """

    def __init__(
        self,
        vocab: int,
        embed_dim: int,
        hidden: int,
        layers: int = 1,
        *,
        bidirectional: bool = True,
        dropout: float = 0.0,
        score: str = "additive",
        max_len: int = 512,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        check_positive("vocab", vocab)
        self.layers_count = check_positive("layers", layers)
        self.hidden = check_positive("hidden", hidden)
        self.score_name = score
        self.directions = 2 if bidirectional else 1
        self.embed = nn.Embedding(vocab, check_positive("embed_dim", embed_dim), padding_idx=pad_id)
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.layers = nn.ModuleList()
        for layer in range(layers):
            input_dim = embed_dim if layer == 0 else hidden * self.directions
            self.layers.append(
                nn.ModuleList(LSTMNLayer(input_dim, hidden, score, max_len=max_len) for _ in range(self.directions))
            )
        self.output_dim = self.final_dim = hidden * self.directions

    def sites(self) -> list[Site]:
        names = ("forward", "backward")[: self.directions]
        return [
            Site(
                f"encoder.{layer}.{direction}",
                "self",
                f"encoder LSTMN layer {layer} ({direction}), step t: [x_t; h~_(t-1)]",
                f"the same layer's hidden tape h_i, i < t ({direction})",
                1,
                self.score_name,
                "history (earlier positions only)",
            )
            for layer in range(self.layers_count)
            for direction in names
        ]

    def forward(self, src: Tensor, src_lengths: Tensor, *, return_weights: bool = False) -> Encoded:
        check_tokens(src, src_lengths, "src", min_length=1)
        lengths = src_lengths.to(src.device)
        x = self.dropout(self.embed(src))  # (B, S, E)
        reverse = _reverse_index(lengths, src.shape[1]) if self.directions == 2 else None  # (B, S)
        weights = {}
        for layer, directions in enumerate(self.layers):
            if layer:
                x = self.dropout(x)
            outputs = []
            for direction, module in zip(("forward", "backward"), directions, strict=False):
                if direction == "forward":
                    h, w = module(x, return_weights=return_weights)
                else:  # read each row right to left: reverse its real tokens, run, put them back
                    h, w = module(_gather_time(x, reverse), return_weights=return_weights)
                    h = _gather_time(h, reverse)
                    if w is not None:  # rows and columns back to source positions
                        w = _gather_time(_gather_time(w[:, 0], reverse).transpose(1, 2), reverse).transpose(1, 2)
                        w = w[:, None]
                outputs.append(h)
                if w is not None:
                    weights[f"encoder.{layer}.{direction}"] = w
            x = torch.cat(outputs, dim=-1)  # (B, S, H * directions)
        last = (lengths - 1).clamp(min=0)  # (B,)
        final = x[torch.arange(x.shape[0], device=x.device), last, : self.hidden]  # forward at the last token
        if self.directions == 2:
            final = torch.cat((final, x[:, 0, self.hidden :]), dim=-1)  # backward at the first token
        mask = masks.padding(lengths, src.shape[1])  # (B, 1, S)
        return Encoded(self.dropout(x), mask, final, weights)


def _reverse_index(lengths: Tensor, length: int) -> Tensor:
    """``[B, T]`` time index reversing each row's first ``lengths[b]`` positions (padding stays in place)."""
    positions = torch.arange(length, device=lengths.device)[None, :]  # (1, T)
    return torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)  # (B, T)


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, t]]`` for ``x [B, T, ...]`` (an involution when ``index`` reverses)."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, expanded)
