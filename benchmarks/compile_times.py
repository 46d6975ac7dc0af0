"""How long ``torch.compile`` (Inductor, ``fullgraph=True``) takes for each attnlab module, forward and backward.

Each module is compiled in a fresh Dynamo state and called once on a small input with a backward pass: the
time of that first call is the compile time (Dynamo + AOT autograd + Inductor code generation and the C++
compile of its kernels, plus one tiny step). The goal is under 60 s for every module on 2 cores; the additive
score is also compiled at B=4, T=512, A=128, where its former chunk loop was unrolled and did not finish.

    python benchmarks/compile_times.py [--out compile_times.json] [--only SUBSTRING]

Inductor caches compiled kernels on disk (``/tmp/torchinductor_$USER``); this script points the cache at a new
temporary directory so every module is compiled from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable

import torch

from attnlab import CrossAttention, SelfAttention, available_scores, masks
from attnlab.scores import score_class
from attnlab.seq import BlockConfig, DecoderLayer, EncoderLayer, RNNConfig, RNNSeq2Seq, Transformer, TransformerConfig
from attnlab.seq.base import Encoded
from attnlab.vision import available_blocks, get_block

OPTIONS = {"location": {"max_len": 1024}}


class _Padded(torch.nn.Module):
    def __init__(self, attn: torch.nn.Module, cross: bool) -> None:
        super().__init__()
        self.attn, self.cross = attn, cross

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mask = keep[:, None, :]  # (B, 1, Tk)
        return self.attn(x, context, mask=mask) if self.cross else self.attn(x, mask=mask)


def _attention(score: str, cross: bool, batch: int = 2, length: int = 16, dim: int = 32):
    options = OPTIONS.get(score)
    attn = (
        CrossAttention(dim, dim, 4, score, score_options=options)
        if cross
        else SelfAttention(dim, 4, score, score_options=options)
    )
    x = torch.randn(batch, length, dim)
    keep = masks.padding([length] + [length // 2] * (batch - 1), length)[:, 0]  # (B, T)
    return _Padded(attn, cross), (x, torch.randn(batch, length, dim), keep)


def _additive_large():
    attn = CrossAttention(128, 128, 1, "additive", project=False)
    keep = torch.ones(4, 512, dtype=torch.bool)
    return _Padded(attn, True), (torch.randn(4, 512, 128), torch.randn(4, 512, 128), keep)


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = EncoderLayer(BlockConfig(dim=64, heads=4, ffn_dim=128, score="scaled_dot", dropout=0.0))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.layer(x, mask=keep[:, None, :])[0]


class _Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = DecoderLayer(BlockConfig(dim=64, heads=4, ffn_dim=128, score="scaled_dot", dropout=0.0))

    def forward(self, x: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        memory = self.layer.cross_attn.precompute(source, mask=keep[:, None, :])
        return self.layer(x, memory, memory_mask=keep[:, None, :])[0]


class _RNNStep(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = RNNSeq2Seq(RNNConfig(src_vocab=30, tgt_vocab=40, embed_dim=32, hidden=64, attention="bahdanau"))

    def forward(self, states: torch.Tensor, keep: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        decoder = self.model.decoder
        state = decoder.start(Encoded(states, keep[:, None, :], final))
        logits, state, _ = decoder.step(torch.ones(states.shape[0], dtype=torch.long), state)
        return logits


class _Seq2Seq(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = TransformerConfig(src_vocab=30, tgt_vocab=40, dim=64, heads=4, ffn_dim=128, encoder_layers=2,
                                   decoder_layers=2, max_len=64, dropout=0.0)  # fmt: skip
        self.model = Transformer(config)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        from attnlab.data import Seq2SeqBatch

        return self.model(Seq2SeqBatch(src, src_lengths, tgt_in, tgt_in, src_lengths))


def cases() -> dict[str, Callable[[], tuple[torch.nn.Module, tuple]]]:
    names = sorted({score_class(name).__name__: name for name in available_scores()}.values())
    out: dict[str, Callable] = {}
    for score in names:
        for cross in (False, True):
            out[f"{'CrossAttention' if cross else 'SelfAttention'}-{score}"] = lambda s=score, c=cross: _attention(s, c)
    out["CrossAttention-additive-B4-T512-A128"] = _additive_large
    for name in available_blocks():
        out[f"vision-{name}"] = lambda n=name: (get_block(n, 32), (torch.randn(2, 32, 8, 8),))
    rnn = RNNSeq2Seq(RNNConfig(src_vocab=30, tgt_vocab=40, embed_dim=32, hidden=64, attention="bahdanau"))
    out["EncoderLayer"] = lambda: (_Encoder(), (torch.randn(2, 16, 64), torch.ones(2, 16, dtype=torch.bool)))
    out["DecoderLayer"] = lambda: (
        _Decoder(),
        (torch.randn(2, 12, 64), torch.randn(2, 16, 64), torch.ones(2, 16, dtype=torch.bool)),
    )
    out["RNN-Bahdanau-step"] = lambda: (
        _RNNStep(),
        (
            torch.randn(2, 16, rnn.encoder.config.hidden * rnn.encoder.directions),
            torch.ones(2, 16, dtype=torch.bool),
            torch.randn(2, rnn.encoder.final_dim),
        ),
    )
    out["Transformer-forward"] = lambda: (
        _Seq2Seq(),
        (torch.randint(3, 30, (2, 12)), torch.tensor([12, 9]), torch.randint(3, 40, (2, 10))),
    )
    return out


def measure(factory: Callable[[], tuple[torch.nn.Module, tuple]]) -> dict[str, float]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    module, inputs = factory()
    inputs = tuple(t.requires_grad_() if t.dtype.is_floating_point else t for t in inputs)
    compiled = torch.compile(module, fullgraph=True)
    start = time.perf_counter()
    compiled(*inputs).float().square().sum().backward()
    first = time.perf_counter() - start
    start = time.perf_counter()
    compiled(*inputs).float().square().sum().backward()
    return {"first_call_s": round(first, 2), "second_call_s": round(time.perf_counter() - start, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="attnlab-inductor-")
    with open("/proc/cpuinfo") as cpuinfo:
        flags = sorted({f for f in cpuinfo.read().split() if f in ("avx2", "avx512f", "avx512_bf16")})
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_flags": flags, "cases": {}}
    for name, factory in cases().items():
        if args.only not in name:
            continue
        results["cases"][name] = measure(factory)
        print(f"{name:40s} compile+first step {results['cases'][name]['first_call_s']:7.2f} s", flush=True)
    slowest = max(results["cases"].items(), key=lambda item: item[1]["first_call_s"])
    print(f"slowest: {slowest[0]} {slowest[1]['first_call_s']} s ({len(results['cases'])} modules)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
