"""The recurrent attention models against slow float64 references written from the papers' equations.

Each reference reads the model's parameters by name and recomputes every score pair by pair and every softmax
row by row with plain Python loops; it shares no attention code with attnlab.
"""

from __future__ import annotations

import math

import pytest
import torch
from seq_helpers import make_batch, one_thread, rnn

from attnlab.seq import LSTMNLayer


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(a - top) for a in logits]
    return [e / sum(exps) for e in exps]


def _additive(score, q: torch.Tensor, k: torch.Tensor) -> float:
    """``v^T tanh(W q + U k)`` for head 0."""
    w, u, v = (t.detach() for t in (score.query_weight[0], score.key_weight[0], score.v[0]))
    q, k = q.detach(), k.detach()
    return float(v @ torch.tanh(q @ w + k @ u))


# -- LSTMN (Cheng et al. 2016, eqs. 4-7) -------------------------------------------------------------------------
def lstmn_reference(layer: LSTMNLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence ``x [T, In]``: hidden states ``[T, H]`` and intra-attention weights ``[T, T]``."""
    hidden = layer.hidden
    gates_w, gates_b = layer.gates.weight.detach(), layer.gates.bias.detach()
    hs, cs, weights = [], [], torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64)
    h_tilde = torch.zeros(hidden, dtype=torch.float64)
    for t in range(x.shape[0]):
        query = torch.cat((x[t], h_tilde))  # [x_t; h~_{t-1}]
        if t == 0:
            h_sum = c_sum = torch.zeros(hidden, dtype=torch.float64)
        else:
            s = _softmax([_additive(layer.attention.score, query, hs[i]) for i in range(t)])
            weights[t, :t] = torch.tensor(s, dtype=torch.float64)
            h_sum = sum(s[i] * hs[i] for i in range(t))
            c_sum = sum(s[i] * cs[i] for i in range(t))
        h_tilde = h_sum
        z = gates_w @ torch.cat((h_sum, x[t])) + gates_b
        i, f, o, g = (z[k * hidden : (k + 1) * hidden] for k in range(4))
        c = torch.sigmoid(f) * c_sum + torch.sigmoid(i) * torch.tanh(g)
        hs.append(torch.sigmoid(o) * torch.tanh(c))
        cs.append(c)
    return torch.stack(hs), weights


def test_lstmn_layer_matches_the_paper_equations():
    layer = LSTMNLayer(3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    states, weights = layer(x, return_weights=True)
    assert states.shape == (2, 5, 4) and weights.shape == (2, 1, 5, 5)
    for b in range(2):
        want_states, want_weights = lstmn_reference(layer, x[b].detach())
        torch.testing.assert_close(states[b].detach(), want_states, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(weights[b, 0].detach(), want_weights, rtol=1e-7, atol=1e-7)


def test_lstmn_gradcheck():
    layer = LSTMNLayer(2, 3).double()
    x = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp)[0], (x,))


def test_bidirectional_lstmn_backward_direction_reads_right_to_left():
    model = rnn("bahdanau", encoder="lstmn").double().eval()
    batch = make_batch()
    encoded = model.encoder(batch.src, batch.src_lengths, return_weights=True)
    backward = encoded.weights["encoder.0.backward"]  # (B, 1, S, S) in source positions
    # position t of the backward pass attends only to later real positions; the last real token to none
    for b, length in enumerate(batch.src_lengths.tolist()):
        w = backward[b, 0, :length, :length]
        assert (w.tril() == 0).all()
        torch.testing.assert_close(w[: length - 1].sum(-1), torch.ones(length - 1, dtype=torch.float64))
    # and it equals a forward layer run on the reversed row
    layer = model.encoder.layers[0][1]
    embedded = model.encoder.embed(batch.src[0].flip(0))[None]  # item 0 has no padding
    states, _ = layer(embedded)
    torch.testing.assert_close(encoded.states[0, :, model.config.hidden :], states[0].flip(0))


# -- RNN decoders (Bahdanau et al. 2014; Luong et al. 2015) -------------------------------------------------------
def decoder_reference(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits ``[B, T, V]`` and attention ``[B, T, S]`` of a one-layer GRU decoder, per item."""
    decoder, style = model.decoder, model.config.attention
    encoded = model.encoder(batch.src, batch.src_lengths)
    batch_size, steps = batch.tgt_in.shape
    logits = torch.zeros(batch_size, steps, model.config.tgt_vocab, dtype=torch.float64)
    attention = torch.zeros(batch_size, steps, batch.src.shape[1], dtype=torch.float64)
    score = decoder.attention.score
    for b in range(batch_size):
        length = int(batch.src_lengths[b])
        h = encoded.states[b, :length]  # annotations h_j
        s = torch.tanh(decoder.bridge(encoded.final[b]))  # s_0
        h_tilde = torch.zeros_like(s)
        for i in range(steps):
            e = decoder.embed(batch.tgt_in[b, i])
            if style == "bahdanau":  # e_ij = v^T tanh(W s_{i-1} + U h_j); c_i enters the cell; readout from s_i
                p = _softmax([_additive(score, s, h[j]) for j in range(length)])
                c = sum(p[j] * h[j] for j in range(length))
                s = decoder.cell.cells[0](torch.cat((e, c))[None], s[None])[0]
                out = decoder.out(torch.tanh(decoder.readout(torch.cat((s, c, e)))))
            else:  # h_t from [E y; h~_{t-1}]; e_ts = h_t^T W h_s (general); h~_t = tanh(W_c [c_t; h_t])
                s = decoder.cell.cells[0](torch.cat((e, h_tilde))[None], s[None])[0]
                w = score.weight[0].detach()
                p = _softmax([float(s @ w @ h[j]) for j in range(length)])
                c = sum(p[j] * h[j] for j in range(length))
                h_tilde = torch.tanh(decoder.combine(torch.cat((c, s))))
                out = decoder.out(h_tilde)
            logits[b, i] = out.detach()
            attention[b, i, :length] = torch.tensor(p, dtype=torch.float64)
    return logits, attention


@pytest.mark.parametrize(("style", "score"), [("bahdanau", "additive"), ("luong", "general")])
def test_rnn_decoder_matches_the_paper_equations(style, score):
    model = rnn(style, score, cell="gru").double().eval()
    batch = make_batch()
    with torch.no_grad():
        out = model(batch, return_weights=True)
        want_logits, want_attention = decoder_reference(model, batch)
    torch.testing.assert_close(out.logits, want_logits, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(out.weights["decoder.cross"][:, 0], want_attention, rtol=1e-7, atol=1e-7)


def test_no_attention_decoder_ignores_encoder_states_beyond_the_final_one():
    """Cho/Sutskever: the decoder's only view of the source is ``final``; changing per-position encoder states
    (with ``final`` fixed) changes nothing."""
    model = rnn(None, cell="gru").double().eval()
    batch = make_batch()
    encoded = model.encoder(batch.src, batch.src_lengths)
    state = model.decoder.start(encoded)
    other = model.decoder.start(type(encoded)(torch.randn_like(encoded.states), encoded.mask, encoded.final))
    logits, _, _ = model.decoder.step(batch.tgt_in[:, 0], state)
    again, _, _ = model.decoder.step(batch.tgt_in[:, 0], other)
    torch.testing.assert_close(logits, again)
    assert model.attention_sites() == []
