"""Compile- and export-clean models: every vision block, the Transformer encoder and decoder layers, a recurrent
attention decoder's step and a full encoder-decoder forward trace in one graph (``torch._dynamo.explain``),
compile with ``fullgraph=True`` to what eager computes (forward and backward, ``aot_eager``), and export with a
dynamic length (``torch.export.Dim``) to a program that equals eager at two other lengths."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from attnlab.seq import BlockConfig, DecoderLayer, EncoderLayer, RNNState
from attnlab.seq.base import Encoded
from attnlab.vision import available_blocks, get_block
from seq.seq_helpers import Batch, make_batch, rnn, transformer

CHANNELS = 16


class _Block(torch.nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.block = get_block(name, CHANNELS).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _EncoderLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = EncoderLayer(BlockConfig(dim=12, heads=2, ffn_dim=16, score="scaled_dot", dropout=0.0))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.layer(x, mask=keep[:, None, :])[0]


class _DecoderLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = DecoderLayer(BlockConfig(dim=12, heads=2, ffn_dim=16, score="scaled_dot", dropout=0.0), "additive")

    def forward(self, x: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mask = keep[:, None, :]  # (B, 1, S)
        memory = self.layer.cross_attn.precompute(source, mask=mask)
        return self.layer(x, memory, memory_mask=mask)[0]


class _RNNStep(torch.nn.Module):
    """One step of a recurrent attention decoder over encoder states (the per-token work of RNNsearch)."""

    def __init__(self, attention: str, score: str) -> None:
        super().__init__()
        self.model = rnn(attention, score).eval()

    def forward(self, states: torch.Tensor, keep: torch.Tensor, final: torch.Tensor, tokens: torch.Tensor):
        decoder = self.model.decoder
        state: RNNState = decoder.start(Encoded(states, keep[:, None, :], final))
        logits, state, weights = decoder.step(tokens, state, return_weights=True)
        return logits, state.hidden, weights


class _Seq2Seq(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = transformer().eval()

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.model(Batch(src, src_lengths, tgt_in))


def _keep(batch: int, length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor([length, max(1, length - 2), 1][:batch])[:, None]


def _rnn_inputs(length: int):
    model = rnn("bahdanau")  # only for the sizes
    source_dim = model.encoder.config.hidden * model.encoder.directions
    return (
        torch.randn(3, length, source_dim),
        _keep(3, length),
        torch.randn(3, model.encoder.final_dim),
        torch.tensor([5, 6, 7]),
    )


def _seq2seq_inputs(length: int):
    batch = make_batch(src_lengths=(length, max(1, length - 2), 1), tgt_len=max(2, length - 1))
    return batch.src, batch.src_lengths, batch.tgt_in


# name -> (module factory, inputs at a length, dynamic_shapes for export)
LENGTH = Dim("length", min=2, max=30)
CASES = {
    **{
        f"vision-{name}": (lambda name=name: _Block(name), lambda n: (torch.randn(2, CHANNELS, n, n + 1),), None)
        for name in available_blocks()
    },
    "encoder-layer": (_EncoderLayer, lambda n: (torch.randn(3, n, 12), _keep(3, n)), ({1: LENGTH}, {1: LENGTH})),
    "decoder-layer": (
        _DecoderLayer,
        lambda n: (torch.randn(3, n, 12), torch.randn(3, n + 2, 12), _keep(3, n + 2)),
        ({1: LENGTH}, {1: Dim("source", min=2, max=32)}, {1: Dim("source", min=2, max=32)}),
    ),
    "rnn-bahdanau-step": (
        lambda: _RNNStep("bahdanau", "additive"),
        _rnn_inputs,
        ({1: LENGTH}, {1: LENGTH}, None, None),
    ),
    "rnn-luong-step": (lambda: _RNNStep("luong", "general"), _rnn_inputs, ({1: LENGTH}, {1: LENGTH}, None, None)),
    "transformer-forward": (
        _Seq2Seq,
        _seq2seq_inputs,
        ({1: LENGTH}, None, {1: Dim("target", min=2, max=30)}),
    ),
}


def _leaves(inputs):
    return [t.clone().requires_grad_() if t.dtype.is_floating_point else t for t in inputs]


def _flat(out):
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_traces_in_one_graph_and_compiles_to_eager(name):
    factory, make_inputs, _ = CASES[name]
    torch.manual_seed(0)
    module = factory().eval()
    inputs = make_inputs(7)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(module)(*inputs)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager", dynamic=False)
    got_inputs, want_inputs = _leaves(inputs), _leaves(inputs)
    got, want = _flat(compiled(*got_inputs)), _flat(module(*want_inputs))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1.3e-6, atol=1e-5)
    sum(g.float().square().sum() for g in got if g.requires_grad).backward()
    sum(w.float().square().sum() for w in want if w.requires_grad).backward()
    for g, w in zip(got_inputs, want_inputs, strict=True):
        if isinstance(w, torch.Tensor) and w.grad is not None:
            torch.testing.assert_close(g.grad, w.grad, rtol=1.3e-6, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_exports_with_a_dynamic_length(name):
    factory, make_inputs, shapes = CASES[name]
    torch.manual_seed(0)
    module = factory().eval()
    if shapes is None:  # images: height and width (Dim.DYNAMIC: named bounds trip an export bug on ceil(H / p))
        shapes = ({2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    program = torch.export.export(module, make_inputs(7), dynamic_shapes=shapes)
    assert program.range_constraints, "nothing stayed dynamic"
    for length in (5, 12):
        inputs = make_inputs(length)
        for got, want in zip(_flat(program.module()(*inputs)), _flat(module(*inputs)), strict=True):
            torch.testing.assert_close(got, want, rtol=1.3e-6, atol=1e-5)
