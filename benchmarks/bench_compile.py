"""Speed on the paths users take: attnlab against what a user would write instead, eager and ``torch.compile``d.

Why: attnlab's other benchmarks measure eager PyTorch. Practitioners compile their models, train whole
Transformers and run on GPUs; this script measures those paths, every implementation of a cell side by side in
one run (rounds interleave the implementations, so a shared machine's drift hits all alike).

Sections (``--sections``; all by default):

- ``self``: self-attention forward+backward (``out.sum().backward()``), D=256, H=8, (B, T) = (8, 512) and
  (4, 2048), each without and with a key-padding mask (item lengths T down to about T/2). Implementations, each
  eager and compiled: ``attnlab`` (``attnlab.SelfAttention``); ``raw_sdpa``, the same ``q_proj`` / ``kv_proj``
  (``[W_k; W_v]``) / ``out_proj`` Linear layers around ``F.scaled_dot_product_attention`` with a bool
  ``attn_mask`` (loads attnlab's weights); ``torch_mha``, ``nn.MultiheadAttention(batch_first=True)`` with
  ``key_padding_mask`` (``to_torch()`` of the same module). Goal: attnlab / raw_sdpa <= 1.05 in every cell and
  mode.
- ``g2p``: one training step of the G2P Transformer at its full size (``g2p-transformer``: 3 + 3 pre-LN layers,
  width 256, 4 heads, FFN 688, dropout 0.1, 4,542,570 parameters) on a batch of the median shape of its training
  batches (192 words, source 10 and target 10 positions, 3,072-token budget): forward, label-smoothed (0.1)
  cross-entropy, backward, gradient clipping at 1.0, AdamW. ``attnlab`` (``attnlab.seq.Transformer``) against
  ``raw_sdpa``, the same model written on raw SDPA in this file (same module names and parameter count; it
  loads attnlab's weights and is checked equal in eval mode), each eager and compiled, float32 and bf16
  autocast (the recipe trains in bf16).
- ``additive``: Bahdanau attention ``softmax_k(v . tanh(W q_i + U k_k)) @ V``, B=4, T in {512, 1024},
  D=A=128, one head, forward+backward: ``attnlab`` (``attnlab.attend`` with the additive score) eager and
  compiled; ``naive``, the broadcast ``(tanh((q W)[:, :, None] + (k U)[:, None]) * v).sum(-1)`` a user writes,
  eager and compiled (same weights); ``keras``, Keras 3 ``AdditiveAttention(use_scale=True)`` on the torch
  backend (its score has no W and U: slightly less work; checked against attnlab with W = U = I). Baseline:
  compiled naive. Goal: attnlab faster at both lengths, >= 2x at T=1024, at most 1/10 of its peak memory.
  The floor of this kernel is the tanh rate: each row gives ``G tanh/s`` = (tanh evaluations of its forward +
  backward) / time, with the evaluations counted, in units of ``B*Tq*Tk*A`` (``tanh passes``), on the
  implementation itself at a tiny size: eagerly by a dispatch-mode counter of ATen ``tanh`` calls; compiled, as
  the ``tanh`` elements of the forward and backward graphs that AOTAutograd hands to Inductor (Inductor's
  decompositions and min-cut partition; Inductor may still evaluate two identical ``tanh`` of one fused kernel
  once). Next to it, two measured floors at each thread count used (``tanh floor`` table): plain eager
  ``torch.tanh`` over a large tensor, and a compiled fused reduction ``(tanh(q[:, :, None] + k[:, None]) *
  v).sum(-1)`` (forward only, nothing stored).
- ``sync`` (``--device cuda`` only): each attnlab module's forward (and backward) under
  ``torch.cuda.set_sync_debug_mode("error")``, pass or fail: SelfAttention without and with a padding mask,
  CrossAttention with the additive score (with a mask), the ``botnet`` vision block.

Method: compiled means ``torch.compile(module, fullgraph=True, dynamic=False)`` with the default Inductor backend,
compiled anew for each cell. Unless ``--warm-cache``, each compiled implementation starts from an empty Inductor
and Triton cache (a fresh folder, in-memory caches cleared), so none reuses a kernel that another compiled first,
and one tiny compile at start-up takes the one-time costs. The first call (compile plus one step) is timed on its
own (``first call s``) and excluded from step times. Before
timing, every implementation's output (eager and compiled) is checked against the cell's reference with
``torch.allclose`` (self: raw SDPA, on the real query rows of a padded batch; additive: naive eager; keras:
attnlab with W = U = I); a disagreement stops the script. Step time: median over interleaved rounds after warm-up
rounds (``benchmarks.common.interleaved_medians``). Peak extra memory: on CUDA ``torch.cuda.max_memory_allocated``
above the start; on CPU the resident-set high-water mark above the start of one step
(``benchmarks.common.peak_extra_bytes``, glibc's mmap threshold pinned): in this process for ``self`` and ``g2p``,
in a fresh subprocess per (case, implementation) for ``additive`` (as ``bench_attention`` does). The run record
(device, versions, CPU ISA flags, threads, load average) goes into the JSON file; results are written after every
cell, so an interrupted run keeps what it measured.

Usage: ``python -m benchmarks.bench_compile [--device cpu|cuda] [--quick] [--out FILE] [--sections ...]
[--rounds N] [--threads N] [--no-peak] [--no-keras] [--warm-cache]``. ``--quick`` runs tiny sizes (a smoke test
of every code path, about two and a half minutes on one thread; its times mean nothing). Prints one Markdown table per
section at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    interleaved_medians,
    markdown_table,
    measure_in_subprocess,
    peak_extra_bytes,
    pin_malloc,
    run_record,
    sync,
)

SECTIONS = ("self", "g2p", "additive", "sync")
GOAL_SELF_RATIO = 1.05  # attnlab / raw SDPA, every cell
GOAL_ADDITIVE_SPEEDUP = {512: 1.0, 1024: 2.0}  # compiled naive time / attnlab time must exceed this
GOAL_ADDITIVE_MEMORY = 0.1  # attnlab peak / compiled naive peak

# G2P vocabularies: len(attnlab.data.g2p.letter_vocab()), len(phoneme_vocab(stress=True)) (checked by the
# parameter count below, which g2p.py documents).
G2P_SRC_VOCAB, G2P_TGT_VOCAB, G2P_PARAMS = 32, 74, 4_542_570


@dataclass(frozen=True)
class Sizes:
    """Every size of a run; ``--quick`` shrinks them all."""

    self_dim: int = 256
    self_heads: int = 8
    self_shapes: tuple[tuple[int, int], ...] = ((8, 512), (4, 2048))  # (B, T)
    g2p_batch: tuple[int, int, int] = (192, 10, 10)  # (B, S, T): the median training batch of the full recipe
    g2p_size: dict = field(default_factory=dict)  # TransformerConfig sizes; empty: the full recipe's
    g2p_dtypes: tuple[str, ...] = ("float32", "bf16")
    additive_batch: int = 4
    additive_dim: int = 128  # D = A
    additive_lengths: tuple[int, ...] = (512, 1024)
    floor_eager_elements: int = 1 << 24  # plain tanh over 16M floats (64 MiB)
    floor_fused_shape: tuple[int, int, int, int] = (4, 256, 1024, 128)  # (B, Tq, Tk, A): 134M tanh
    rounds: dict = field(default_factory=lambda: {"self": 15, "g2p": 10, "additive": 5, "floor": 5})
    warmup: dict = field(default_factory=lambda: {"self": 2, "g2p": 2, "additive": 1, "floor": 1})


QUICK = Sizes(
    self_dim=64,
    self_heads=4,
    self_shapes=((2, 32),),
    g2p_batch=(8, 6, 6),
    g2p_size={"dim": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.1},
    g2p_dtypes=("float32",),
    additive_batch=1,
    additive_dim=16,
    additive_lengths=(32,),
    floor_eager_elements=1 << 16,
    floor_fused_shape=(1, 16, 32, 16),
    rounds={"self": 3, "g2p": 3, "additive": 3, "floor": 3},
    warmup={"self": 1, "g2p": 1, "additive": 1, "floor": 1},
)


# -- compile settings ----------------------------------------------------------------------------------------------
_COLD = {"root": None, "count": 0}  # where each compiled implementation gets a fresh cache folder


def configure_compile(warm_cache: bool) -> str | None:
    """Room for one compile per cell and (unless ``warm_cache``) cold caches: returns the temporary cache folder."""
    import torch._dynamo.config
    import torch._functorch.config
    import torch._inductor.config

    torch._dynamo.config.recompile_limit = 64  # every cell compiles its own modules; the caches reset per cell
    if warm_cache:
        return None
    _COLD["root"] = tempfile.mkdtemp(prefix="bench_compile_cache_")
    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    cold_compile_caches()
    return _COLD["root"]


def cold_compile_caches() -> None:
    """Point Inductor and Triton at a fresh cache folder and drop their in-memory caches, so that the next compile
    reuses no kernel compiled before (not even an identical one of another implementation). No-op with warm caches."""
    if _COLD["root"] is None:
        return
    from torch._inductor.utils import clear_caches

    _COLD["count"] += 1
    folder = os.path.join(_COLD["root"], str(_COLD["count"]))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder  # read at every compile
    os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
    clear_caches()


def warm_up_compiler(device: str) -> float:
    """Compile and run one tiny function (forward and backward) so that one-time costs (imports, compiler probes)
    are not charged to the first cell's compile time; returns its seconds."""
    start = time.perf_counter()
    layer = nn.Linear(8, 8).to(device)
    compiled = compile_module(layer)
    compiled(torch.randn(2, 8, device=device)).tanh().sum().backward()
    sync(device)
    _reset_compiled()
    return time.perf_counter() - start


def compile_module(module: nn.Module, backend: str | Callable = "inductor") -> nn.Module:
    return torch.compile(module, fullgraph=True, dynamic=False, backend=backend)


# -- one cell: implementations, agreement, interleaved timing, peak memory ------------------------------------------
@dataclass
class Impl:
    """One implementation of a cell: ``step()`` runs one timed step and returns an output to check (detached)."""

    name: str
    mode: str  # "eager" | "compiled"
    step: Callable[[], Tensor]
    optional: bool = False  # a failing first call drops it with a note instead of stopping the run

    @property
    def key(self) -> str:
        return f"{self.name}/{self.mode}"


def _fwd_bwd(forward: Callable[[], Tensor], leaves: list[Tensor]) -> Callable[[], Tensor]:
    def step() -> Tensor:
        for leaf in leaves:
            leaf.grad = None
        out = forward()
        out.sum().backward()
        return out.detach()

    return step


def _step_medians(impls: list[Impl], args: argparse.Namespace, sizes: Sizes, section: str) -> dict[str, float]:
    """Median step seconds of each implementation, interleaved, with the section's rounds and warm-up."""
    steps = {impl.key: impl.step for impl in impls}
    return interleaved_medians(steps, args.device, args.rounds or sizes.rounds[section], sizes.warmup[section])


def _first_calls(impls: list[Impl], device: str, notes: list[str], case: str) -> tuple[list[Impl], dict, dict]:
    """Call each implementation once (compiles the compiled ones): ``(kept, first-call seconds, outputs)``."""
    kept, first, outputs = [], {}, {}
    for impl in impls:
        if impl.mode == "compiled":
            cold_compile_caches()
        sync(device)
        start = time.perf_counter()
        try:
            out = impl.step()
            sync(device)
        except Exception as error:
            if not impl.optional:
                raise
            notes.append(f"{case}: {impl.key} dropped, first call failed: {type(error).__name__}: {_first_line(error)}")
            continue
        first[impl.key] = time.perf_counter() - start
        outputs[impl.key] = out
        kept.append(impl)
    return kept, first, outputs


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


def _check_agreement(
    outputs: dict[str, Tensor], reference: Tensor, region: Tensor | None, atol: float, rtol: float, case: str
) -> dict[str, float]:
    """Max |diff| of every output against ``reference`` (where ``region`` is True); raises if not allclose."""
    diffs = {}
    for key, out in outputs.items():
        got, want = out.float(), reference.float()
        if region is not None:
            got, want = got.masked_fill(~region, 0.0), want.masked_fill(~region, 0.0)
        diffs[key] = float((got - want).abs().max())
        if not torch.allclose(got, want, atol=atol, rtol=rtol):
            raise AssertionError(f"{case}: {key} disagrees with the reference by {diffs[key]:.3g} (atol {atol})")
    return diffs


def _peaks(impls: list[Impl], device: str, enabled: bool) -> dict[str, int | None]:
    if not enabled:
        return {impl.key: None for impl in impls}
    return {impl.key: peak_extra_bytes(impl.step, device) for impl in impls}


def _mib(value: int | None) -> float | str:
    return "" if value is None else round(value / 2**20, 1)


def _reset_compiled() -> None:
    import torch._dynamo

    torch._dynamo.reset()


# -- section self: attnlab SelfAttention vs raw SDPA vs nn.MultiheadAttention ---------------------------------------
class RawAttention(nn.Module):
    """What a user writes by hand: the same ``q_proj``, ``kv_proj`` (``[W_k; W_v]``) and ``out_proj`` layers as
    ``attnlab.CrossAttention`` around ``F.scaled_dot_product_attention``; bool ``attn_mask``, True = may attend."""

    def __init__(self, dim: int, context_dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(context_dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        batch, tq, _ = x.shape
        tk = context.shape[1]
        q = self.q_proj(x).view(batch, tq, self.heads, -1).transpose(1, 2)  # (B, H, Tq, Dh)
        k, v = (
            t.view(batch, tk, self.heads, -1).transpose(1, 2)  # (B, H, Tk, Dh)
            for t in self.kv_proj(context).chunk(2, dim=-1)
        )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )  # (B, H, Tq, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tq, -1))  # (B, Tq, D)


class RawSelfAttention(RawAttention):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, dim, heads)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x, x, attn_mask)


class MHASelf(nn.Module):
    """``nn.MultiheadAttention`` called as self-attention (a module, so that it compiles like the others)."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self.mha(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]


def padding_lengths(batch: int, length: int) -> Tensor:
    """Item lengths from ``length`` down to about ``length / 2`` (every item has real tokens)."""
    return torch.tensor([length - (i * length) // (2 * batch) for i in range(batch)])  # (B,)


def self_cell(batch: int, length: int, sizes: Sizes, masked: bool, device: str) -> tuple[list[Impl], Callable]:
    """Implementations of one self-attention cell and a function checking their outputs."""
    import attnlab

    torch.manual_seed(0)
    dim, heads = sizes.self_dim, sizes.self_heads
    ours = attnlab.SelfAttention(dim, heads).to(device)
    raw = RawSelfAttention(dim, heads).to(device)
    raw.load_state_dict(ours.state_dict())  # the same parameter names: identical weights
    mha = MHASelf(ours.to_torch())
    x = torch.randn(batch, length, dim, device=device, requires_grad=True)  # (B, T, D)
    mask = attnlab.masks.padding(padding_lengths(batch, length).to(device), length) if masked else None  # (B, 1, T)
    attn_mask = mask[:, None] if masked else None  # (B, 1, 1, T) for SDPA
    key_padding = ~mask[:, 0] if masked else None  # (B, T), True = padding, for MHA
    forwards = {
        "attnlab": (ours, lambda m: m(x, mask=mask)),
        "raw_sdpa": (raw, lambda m: m(x, attn_mask)),
        "torch_mha": (mha, lambda m: m(x, key_padding)),
    }
    impls = []
    for mode in ("eager", "compiled"):
        for name, (module, call) in forwards.items():
            runner = compile_module(module) if mode == "compiled" else module
            step = _fwd_bwd(lambda call=call, runner=runner: call(runner), [x, *module.parameters()])
            impls.append(Impl(name, mode, step, optional=name == "torch_mha" and mode == "compiled"))
    region = None if mask is None else mask[:, 0, :, None]  # (B, T, 1): attnlab zeroes padded queries' inputs

    def check(outputs: dict[str, Tensor], case: str) -> dict[str, float]:
        with torch.no_grad():
            reference = raw(x, attn_mask)
        return _check_agreement(outputs, reference, region, atol=1e-5, rtol=1e-4, case=case)

    return impls, check


def run_self(sizes: Sizes, args: argparse.Namespace, notes: list[str], save: Callable) -> list[dict]:
    rows: list[dict] = []
    for batch, length in sizes.self_shapes:
        for masked in (False, True):
            case = f"B{batch} T{length} {'padding mask' if masked else 'no mask'}"
            impls, check = self_cell(batch, length, sizes, masked, args.device)
            impls, first, outputs = _first_calls(impls, args.device, notes, case)
            diffs = check(outputs, case)
            del outputs
            medians = _step_medians(impls, args, sizes, "self")
            peaks = _peaks(impls, args.device, not args.no_peak)
            for impl in impls:
                base = medians.get(f"raw_sdpa/{impl.mode}")
                ratio = medians[impl.key] / base if base else None
                rows.append(
                    {
                        "case": case,
                        "impl": impl.name,
                        "mode": impl.mode,
                        "median_ms": round(medians[impl.key] * 1e3, 2),
                        "vs_raw_sdpa": "" if ratio is None else round(ratio, 3),
                        "goal": _verdict(impl.name == "attnlab", ratio is not None and ratio <= GOAL_SELF_RATIO),
                        "first_call_s": round(first[impl.key], 2) if impl.mode == "compiled" else "",
                        "peak_extra_mib": _mib(peaks[impl.key]),
                        "max_abs_diff": f"{diffs[impl.key]:.1e}",
                    }
                )
            del impls
            _reset_compiled()
            save("self", rows)
            print(f"self: {case} done", file=sys.stderr, flush=True)
    return rows


def _verdict(applies: bool, met: bool) -> str:
    return ("meets" if met else "MISSES") if applies else ""


# -- section g2p: a compiled Transformer training step, attnlab vs the same model on raw SDPA ------------------------
class Batch(NamedTuple):
    """What ``attnlab.seq.Transformer.forward`` reads (``attnlab.data.Seq2SeqBatch`` has these and more)."""

    src: Tensor  # (B, S) ids, right-padded with 0
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (B, T) BOS + target, right-padded


def sinusoids(length: int, dim: int, device: torch.device) -> Tensor:
    """``PE[p, 2i] = sin(p / 10000^(2i/D))``, ``PE[p, 2i+1] = cos(...)``: ``(T, D)``."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim * -math.log(10000.0))
    angles = torch.arange(length, device=device).float()[:, None] * inv_freq  # (T, D/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (T, D)


class RawFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.up, self.down, self.dropout = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.gelu(self.up(x))))


class RawEncoderLayer(nn.Module):
    """Pre-LN: ``x + SA(LN x)``, ``x + FFN(LN x)``."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RawAttention(dim, dim, heads, dropout)
        self.ffn = RawFeedForward(dim, ffn, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x (B, S, D), mask (B, 1, 1, S)
        h = self.attn_norm(x)
        x = x + self.dropout(self.attn(h, h, mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class RawEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(RawEncoderLayer(dim, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class RawDecoderLayer(nn.Module):
    """Pre-LN: causal ``SA``, cross-attention over the encoder output, FFN."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_norm, self.cross_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = RawAttention(dim, dim, heads, dropout)
        self.cross_attn = RawAttention(dim, dim, heads, dropout)
        self.ffn = RawFeedForward(dim, ffn, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor) -> Tensor:  # x (B, T, D), memory (B, S, D)
        h = self.self_norm(x)
        x = x + self.dropout(self.self_attn(h, h, is_causal=True))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory, mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class RawTransformer(nn.Module):
    """The G2P encoder-decoder written on raw SDPA, module for module as ``attnlab.seq.Transformer`` (same names,
    so ``load_state_dict`` of an attnlab model works): embeddings + sinusoids, pre-LN stacks, output layer."""

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.src_embed, self.tgt_embed = nn.Embedding(src_vocab, dim), nn.Embedding(tgt_vocab, dim)
        self.dropout = nn.Dropout(dropout)
        self.encoder = RawEncoder(dim, heads, ffn_dim, dropout, encoder_layers)
        self.decoder_layers = nn.ModuleList(
            RawDecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, tgt_vocab)

    def forward(self, batch: Batch) -> Tensor:
        src, src_lengths, tgt_in = batch
        length = src.shape[1]
        mask = (torch.arange(length, device=src.device) < src_lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
        x = self.dropout(self.src_embed(src) + sinusoids(length, self.dim, src.device))  # (B, S, D)
        memory = self.encoder(x, mask)
        y = self.dropout(self.tgt_embed(tgt_in) + sinusoids(tgt_in.shape[1], self.dim, src.device))  # (B, T, D)
        for layer in self.decoder_layers:
            y = layer(y, memory, mask)
        return self.out(self.decoder_norm(y))  # (B, T, V)


class TrainLoss(nn.Module):
    """``model(batch)`` and the label-smoothed token cross-entropy (padding, id 0, ignored); the compiled unit."""

    def __init__(self, model: nn.Module, bf16: bool, device_type: str) -> None:
        super().__init__()
        self.model, self.bf16, self.device_type = model, bf16, device_type

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(Batch(src, src_lengths, tgt_in))  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=0, label_smoothing=0.1)


def g2p_size(sizes: Sizes) -> dict:
    if sizes.g2p_size:
        return dict(sizes.g2p_size)
    from attnlab.experiments.g2p import _TRANSFORMER_SIZES

    return dict(_TRANSFORMER_SIZES["full"])


def g2p_batch(sizes: Sizes, device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A synthetic batch of the median training shape: ``(src, src_lengths, tgt_in, tgt_out)``."""
    generator = torch.Generator().manual_seed(0)
    batch, src_len, tgt_len = sizes.g2p_batch
    src_lengths = torch.randint(max(1, src_len - 4), src_len + 1, (batch,), generator=generator)
    src_lengths[0] = src_len
    tgt_lengths = torch.randint(max(1, tgt_len - 4), tgt_len, (batch,), generator=generator)  # phonemes, then EOS
    tgt_lengths[0] = tgt_len - 1
    src = torch.randint(4, G2P_SRC_VOCAB, (batch, src_len), generator=generator)
    src = src.masked_fill(torch.arange(src_len) >= src_lengths[:, None], 0)  # (B, S)
    phonemes = torch.randint(4, G2P_TGT_VOCAB, (batch, tgt_len), generator=generator)
    positions = torch.arange(tgt_len)
    tgt_in = torch.where(positions == 0, 1, torch.roll(phonemes, 1, dims=1))  # BOS = 1, then the phonemes
    tgt_in = tgt_in.masked_fill(positions > tgt_lengths[:, None], 0)  # (B, T)
    tgt_out = torch.where(positions == tgt_lengths[:, None], 2, phonemes)  # the phonemes, then EOS = 2
    tgt_out = tgt_out.masked_fill(positions > tgt_lengths[:, None], 0)  # (B, T)
    return tuple(t.to(device) for t in (src, src_lengths, tgt_in, tgt_out))


def g2p_models(sizes: Sizes, device: str) -> tuple[nn.Module, nn.Module]:
    """``(attnlab Transformer, raw-SDPA Transformer)`` with identical weights, checked to agree in eval mode."""
    from attnlab.seq import Transformer, TransformerConfig

    size = g2p_size(sizes)
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab=G2P_SRC_VOCAB, tgt_vocab=G2P_TGT_VOCAB, max_len=64, **size)
    ours = Transformer(config).to(device)
    raw = RawTransformer(G2P_SRC_VOCAB, G2P_TGT_VOCAB, **size).to(device)
    raw.load_state_dict(ours.state_dict())  # strict: the same parameters, name for name
    counts = [sum(p.numel() for p in model.parameters()) for model in (ours, raw)]
    if counts[0] != counts[1] or (not sizes.g2p_size and counts[0] != G2P_PARAMS):
        raise AssertionError(f"g2p: parameter counts differ: attnlab {counts[0]}, raw {counts[1]} ({G2P_PARAMS=})")
    src, src_lengths, tgt_in, _ = g2p_batch(sizes, device)
    ours.eval()
    raw.eval()
    with torch.no_grad():
        want, got = raw(Batch(src, src_lengths, tgt_in)), ours(Batch(src, src_lengths, tgt_in))
    if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        raise AssertionError(f"g2p: attnlab and raw-SDPA logits differ by {float((got - want).abs().max()):.3g}")
    return ours.train(), raw.train()


def g2p_impls(sizes: Sizes, dtype: str, device: str) -> tuple[list[Impl], int]:
    ours, raw = g2p_models(sizes, device)
    tensors = g2p_batch(sizes, device)
    impls = []
    for mode in ("eager", "compiled"):
        for name, model in (("attnlab", ours), ("raw_sdpa", raw)):
            loss = TrainLoss(copy.deepcopy(model), dtype == "bf16", torch.device(device).type)
            params = list(loss.parameters())
            optimizer = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.98))
            runner = compile_module(loss) if mode == "compiled" else loss

            def step(runner=runner, params=params, optimizer=optimizer) -> Tensor:
                optimizer.zero_grad(set_to_none=True)
                value = runner(*tensors)
                value.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                return value.detach()

            impls.append(Impl(name, mode, step))
    return impls, sum(p.numel() for p in ours.parameters())


def run_g2p(sizes: Sizes, args: argparse.Namespace, notes: list[str], save: Callable) -> list[dict]:
    rows: list[dict] = []
    batch, src_len, tgt_len = sizes.g2p_batch
    for dtype in sizes.g2p_dtypes:
        case = f"B{batch} S{src_len} T{tgt_len} {dtype}"
        impls, params = g2p_impls(sizes, dtype, args.device)
        impls, first, losses = _first_calls(impls, args.device, notes, case)
        for key, value in losses.items():  # the same weights, the same batch: only dropout differs
            if not torch.isfinite(value) or abs(float(value) - math.log(G2P_TGT_VOCAB)) > 1.5:
                raise AssertionError(f"g2p {case}: {key} first loss {float(value):.3f} is not near ln(V)")
        medians = _step_medians(impls, args, sizes, "g2p")
        peaks = _peaks(impls, args.device, not args.no_peak)
        for impl in impls:
            base = medians[f"raw_sdpa/{impl.mode}"]
            rows.append(
                {
                    "case": case,
                    "impl": impl.name,
                    "mode": impl.mode,
                    "params": params,
                    "median_ms": round(medians[impl.key] * 1e3, 2),
                    "vs_raw_sdpa": round(medians[impl.key] / base, 3),
                    "first_call_s": round(first[impl.key], 2) if impl.mode == "compiled" else "",
                    "peak_extra_mib": _mib(peaks[impl.key]),
                    "first_loss": round(float(losses[impl.key]), 4),
                }
            )
        del impls
        _reset_compiled()
        save("g2p", rows)
        print(f"g2p: {case} done", file=sys.stderr, flush=True)
    return rows


# -- section additive: attnlab's kernel vs the naive broadcast (eager, compiled) vs Keras -----------------------------
ADDITIVE_IMPLS = ("attnlab/eager", "attnlab/compiled", "naive/eager", "naive/compiled", "keras/eager")
ADDITIVE_BASELINE = "naive/compiled"


class AttnlabAdditive(nn.Module):
    """``attnlab.attend(q, k, v, score)`` with the additive score (one head, 3-D inputs)."""

    def __init__(self, score: nn.Module) -> None:
        super().__init__()
        self.score = score

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        import attnlab

        return attnlab.attend(query, key, value, self.score).context  # (B, Tq, D)


class NaiveAdditive(nn.Module):
    """The broadcast a user writes: holds ``[B, Tq, Tk, A]`` unless a compiler fuses it away."""

    def __init__(self, w: Tensor, u: Tensor, v: Tensor) -> None:
        super().__init__()
        self.w, self.u, self.v = nn.Parameter(w), nn.Parameter(u), nn.Parameter(v)  # (D, A), (D, A), (A,)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        q, k = query @ self.w, key @ self.u  # (B, Tq, A), (B, Tk, A)
        logits = (torch.tanh(q[:, :, None] + k[:, None]) * self.v).sum(-1)  # (B, Tq, Tk, A) -> (B, Tq, Tk)
        return logits.softmax(-1) @ value  # (B, Tq, D)


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras runs on the {keras.backend.backend()!r} backend; set KERAS_BACKEND=torch")
    return keras


def additive_cell(
    batch: int, length: int, dim: int, device: str, names: tuple[str, ...], backend: str | Callable = "inductor"
) -> tuple[list[Impl], Callable]:
    """Implementations ``names`` of one additive cell (``backend`` compiles the compiled ones) and a checker."""
    import attnlab

    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, length, dim, device=device, requires_grad=True) for _ in range(3))  # (B, T, D)
    score = attnlab.get_score("additive", query_dim=dim, key_dim=dim, heads=1).to(device)  # A = D
    ours = AttnlabAdditive(score)
    naive = NaiveAdditive(*(p[0].detach().clone() for p in (score.query_weight, score.key_weight, score.v)))
    impls, keras_layer = [], None
    for key_name in names:
        name, mode = key_name.split("/")
        if name == "keras":
            keras_layer = _keras().layers.AdditiveAttention(use_scale=True)
            forward, params = (lambda layer=keras_layer: layer([q, v, k])), []  # Keras: [query, value, key]
        else:
            module = ours if name == "attnlab" else naive
            runner = compile_module(module, backend) if mode == "compiled" else module
            forward, params = (lambda runner=runner: runner(q, k, v)), list(module.parameters())
        impls.append(Impl(name, mode, _fwd_bwd(forward, [q, k, v, *params]), optional=name == "keras"))

    def check(outputs: dict[str, Tensor], case: str) -> dict[str, float]:
        with torch.no_grad():
            reference = naive(q, k, v)
        ours_and_naive = {key: out for key, out in outputs.items() if not key.startswith("keras")}
        diffs = _check_agreement(ours_and_naive, reference, None, atol=1e-5, rtol=1e-4, case=case)
        if "keras/eager" in outputs:  # Keras's score is scale . tanh(q + k): attnlab with W = U = I, v = scale
            scale = torch.as_tensor(_keras().ops.convert_to_numpy(keras_layer.scale), device=device)
            diffs.update(_check_keras(outputs["keras/eager"], q, k, v, scale, case))
        return diffs

    return impls, check


def _check_keras(out: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: Tensor, case: str) -> dict[str, float]:
    import attnlab

    dim = q.shape[-1]
    score = attnlab.get_score("additive", query_dim=dim, key_dim=dim, heads=1).to(q.device)
    with torch.no_grad():
        eye = torch.eye(dim, device=q.device)
        score.query_weight.copy_(eye), score.key_weight.copy_(eye), score.v.copy_(scale[None])
        reference = attnlab.attend(q, k, v, score).context
    return _check_agreement({"keras/eager": out}, reference, None, 1e-5, 1e-4, case)


# One transcendental per element: tanh, or the sigmoid that attnlab's compiled additive kernel writes tanh with
# (tanh(x) = 2 sigmoid(2x) - 1, which Inductor vectorizes faster).
_TANH_LIKE = (torch.ops.aten.tanh, torch.ops.aten.tanh_, torch.ops.aten.sigmoid, torch.ops.aten.sigmoid_)


class _TanhCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the tanh evaluations of eager ATen calls (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in _TANH_LIKE:
            self.count += out.numel()
        return out


def _counting_backend(counts: list[int]) -> Callable:
    """An AOTAutograd backend that partitions forward/backward as Inductor does (min-cut recomputation, Inductor's
    decompositions) and adds up the tanh elements of both graphs instead of compiling them."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    def count(graph: torch.fx.GraphModule, example_inputs) -> Callable:
        for node in graph.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "overloadpacket", None) in _TANH_LIKE:
                counts.append(node.meta["val"].numel())
        return make_boxed_func(graph.forward)

    return aot_autograd(
        fw_compiler=count,
        bw_compiler=count,
        partition_fn=min_cut_rematerialization_partition,
        decompositions=select_decomp_table(),
    )


def tanh_passes(names: tuple[str, ...], device: str) -> dict[str, float | None]:
    """Tanh evaluations of one forward+backward, in units of ``B*Tq*Tk*A``, measured at a tiny size."""
    batch, length, dim = 2, 8, 8
    unit = batch * length * length * dim
    passes: dict[str, float | None] = {}
    for key in names:
        counts: list[int] = []
        try:
            impls, _ = additive_cell(batch, length, dim, device, (key,), backend=_counting_backend(counts))
            if key.endswith("/compiled"):
                impls[0].step()
                passes[key] = sum(counts) / unit
            else:
                with _TanhCounter() as counter:
                    impls[0].step()
                passes[key] = counter.count / unit
        except Exception:
            passes[key] = None
        _reset_compiled()
    return passes


def _additive_case(batch: int, length: int, dim: int) -> str:
    return f"additive-B{batch}-T{length}-D{dim}"


def _parse_additive_case(case: str) -> tuple[int, int, int]:
    _, b, t, d = case.split("-")
    return int(b[1:]), int(t[1:]), int(d[1:])


def run_additive(sizes: Sizes, args: argparse.Namespace, notes: list[str], save: Callable) -> list[dict]:
    names = tuple(n for n in ADDITIVE_IMPLS if not (args.no_keras and n.startswith("keras")))
    if "keras/eager" in names:
        try:
            _keras()
        except Exception as error:
            notes.append(
                f"additive: keras skipped ({type(error).__name__}: {_first_line(error)}); "
                "install the bench extra: pip install 'keras>=3' (KERAS_BACKEND=torch)"
            )
            names = tuple(n for n in names if not n.startswith("keras"))
    passes = tanh_passes(names, args.device)
    rows: list[dict] = []
    batch, dim = sizes.additive_batch, sizes.additive_dim
    for length in sizes.additive_lengths:
        case = _additive_case(batch, length, dim)
        impls, check = additive_cell(batch, length, dim, args.device, names)
        impls, first, outputs = _first_calls(impls, args.device, notes, case)
        diffs = check(outputs, case)
        del outputs
        medians = _step_medians(impls, args, sizes, "additive")
        if args.no_peak:
            peaks = {impl.key: None for impl in impls}
        elif args.device.startswith("cuda"):
            peaks = _peaks(impls, args.device, True)
        else:  # a fresh process per implementation: the CPU high-water mark of this one would hold the others'
            del impls
            _reset_compiled()
            peaks = {key: measure_in_subprocess("benchmarks.bench_compile", case, key, args.device) for key in medians}
        elements = batch * length * length * dim
        base_time, base_peak = medians.get(ADDITIVE_BASELINE), peaks.get(ADDITIVE_BASELINE)
        for key, seconds in medians.items():
            name, mode = key.split("/")
            speedup = base_time / seconds if base_time else None
            memory = peaks[key] / base_peak if peaks[key] is not None and base_peak else None
            met = (
                speedup is not None
                and speedup > GOAL_ADDITIVE_SPEEDUP.get(length, 1.0)
                and memory is not None
                and memory <= GOAL_ADDITIVE_MEMORY
            )
            rate = None if passes.get(key) is None else passes[key] * elements / seconds / 1e9
            rows.append(
                {
                    "case": case,
                    "impl": name,
                    "mode": mode,
                    "median_ms": round(seconds * 1e3, 1),
                    "speedup_vs_naive_compiled": "" if speedup is None else round(speedup, 3),
                    "peak_extra_mib": _mib(peaks[key]),
                    "memory_vs_naive_compiled": "" if memory is None else round(memory, 4),
                    "goal": _verdict(name == "attnlab", met),
                    "first_call_s": round(first[key], 2) if mode == "compiled" else "",
                    "tanh_passes": "" if passes.get(key) is None else round(passes[key], 2),
                    "g_tanh_per_s": "" if rate is None else round(rate, 3),
                    "max_abs_diff": f"{diffs[key]:.1e}",
                }
            )
        _reset_compiled()
        save("additive", rows)
        print(f"additive: {case} done", file=sys.stderr, flush=True)
    return rows


def additive_peak_child(case: str, key: str, device: str) -> int:
    """``--peak CASE IMPL``: the peak extra bytes of one additive implementation, in this (fresh) process."""
    batch, length, dim = _parse_additive_case(case)
    impls, _ = additive_cell(batch, length, dim, device, (key,))
    return peak_extra_bytes(impls[0].step, device)


def _floor_medians(sizes: Sizes, device: str, rounds: int, warmup: int) -> dict[str, tuple[float, int]]:
    """``{floor: (median seconds, tanh evaluations)}`` at the current thread count."""
    batch, tq, tk, width = sizes.floor_fused_shape
    cuda_scale = 16 if device.startswith("cuda") else 1  # a GPU needs more work per call to time it
    x = torch.randn(sizes.floor_eager_elements * cuda_scale, device=device)
    out = torch.empty_like(x)
    q, k = torch.randn(batch, tq, width, device=device), torch.randn(batch, tk, width, device=device)
    v = torch.randn(width, device=device)

    def reduction(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return (torch.tanh(q[:, :, None] + k[:, None]) * v).sum(-1)  # (B, Tq, Tk, A) -> (B, Tq, Tk), fused

    fused = torch.compile(reduction, fullgraph=True, dynamic=False)
    runs = {"eager torch.tanh": lambda: torch.tanh(x, out=out), "compiled fused tanh-reduction": lambda: fused(q, k, v)}
    with torch.no_grad():
        fused(q, k, v)  # compile: Inductor's CPU code is specialised to the thread count of this moment
        medians = interleaved_medians(runs, device, rounds, warmup)
    elements = {"eager torch.tanh": x.numel(), "compiled fused tanh-reduction": batch * tq * tk * width}
    return {name: (seconds, elements[name]) for name, seconds in medians.items()}


def run_tanh_floor(sizes: Sizes, args: argparse.Namespace, save: Callable) -> list[dict]:
    """Plain eager ``torch.tanh`` and a compiled fused tanh-reduction, at 1 thread and at the run's thread count."""
    cuda = args.device.startswith("cuda")
    threads_used = torch.get_num_threads()
    rows: list[dict] = []
    try:
        for threads in [threads_used] if cuda else sorted({1, threads_used}):
            if not cuda:
                torch.set_num_threads(threads)
            floors = _floor_medians(sizes, args.device, args.rounds or sizes.rounds["floor"], sizes.warmup["floor"])
            _reset_compiled()
            for name, (seconds, elements) in floors.items():
                rate = elements / seconds / 1e9
                rows.append(
                    {
                        "floor": name,
                        "threads": threads,
                        "elements": elements,
                        "median_ms": round(seconds * 1e3, 2),
                        "g_tanh_per_s": round(rate, 3),
                        "g_tanh_per_s_per_thread": round(rate / threads, 3),
                    }
                )
    finally:
        if not cuda:
            torch.set_num_threads(threads_used)
    save("tanh_floor", rows)
    return rows


# -- section sync: no forward synchronizes the host with the GPU ----------------------------------------------------
def sync_modules(device: str) -> dict[str, Callable[[], Tensor]]:
    """Forwards of attnlab modules, inputs made beforehand (making them may synchronize; calling must not)."""
    import attnlab
    from attnlab.vision import get_block

    torch.manual_seed(0)
    self_attn = attnlab.SelfAttention(256, 8).to(device)
    cross = attnlab.CrossAttention(256, 128, 1, "additive").to(device)
    botnet = get_block("botnet", 64).to(device)
    x = torch.randn(4, 128, 256, device=device, requires_grad=True)  # (B, T, D)
    context = torch.randn(4, 96, 128, device=device, requires_grad=True)  # (B, Tk, Dc)
    image = torch.randn(2, 64, 16, 16, device=device, requires_grad=True)  # (B, C, H, W)
    mask = attnlab.masks.padding(padding_lengths(4, 128).to(device), 128)  # (B, 1, T)
    context_mask = attnlab.masks.padding(padding_lengths(4, 96).to(device), 96)  # (B, 1, Tk)
    return {
        "SelfAttention(256, 8)": lambda: self_attn(x),
        "SelfAttention(256, 8), padding mask": lambda: self_attn(x, mask=mask),
        "CrossAttention(256, 128, 1, 'additive'), padding mask": lambda: cross(x, context, mask=context_mask),
        "vision botnet(64)": lambda: botnet(image),
    }


def run_sync(args: argparse.Namespace, save: Callable) -> list[dict]:
    rows = []
    for name, forward in sync_modules(args.device).items():
        forward().sum().backward()  # warm-up: library initialisation may synchronize once
        torch.cuda.synchronize()
        result = {"module": name}
        for phase in ("forward", "backward"):
            result[phase] = "not run"
        try:
            torch.cuda.set_sync_debug_mode("error")
            out = forward()
            result["forward"] = "pass"
            out.sum().backward()
            result["backward"] = "pass"
        except Exception as error:  # a synchronizing call raises RuntimeError; anything else is a failure too
            failed = "forward" if result["forward"] == "not run" else "backward"
            result[failed] = f"FAIL: {_first_line(error)}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()
        rows.append(result)
    save("sync", rows)
    return rows


# -- main -------------------------------------------------------------------------------------------------------
COLUMNS = {
    "self": [
        ("case", "case"),
        ("impl", "implementation"),
        ("mode", "mode"),
        ("median_ms", "median ms"),
        ("vs_raw_sdpa", "/ raw_sdpa (same mode)"),
        ("goal", "goal <= 1.05"),
        ("first_call_s", "first call s"),
        ("peak_extra_mib", "peak extra MiB"),
        ("max_abs_diff", "max |diff|"),
    ],
    "g2p": [
        ("case", "case"),
        ("impl", "implementation"),
        ("mode", "mode"),
        ("median_ms", "median ms per step"),
        ("vs_raw_sdpa", "/ raw_sdpa (same mode)"),
        ("first_call_s", "first call s"),
        ("peak_extra_mib", "peak extra MiB"),
        ("first_loss", "first loss"),
    ],
    "additive": [
        ("case", "case"),
        ("impl", "implementation"),
        ("mode", "mode"),
        ("median_ms", "median ms"),
        ("speedup_vs_naive_compiled", "naive compiled / this"),
        ("peak_extra_mib", "peak extra MiB"),
        ("memory_vs_naive_compiled", "memory / naive compiled"),
        ("goal", "goal"),
        ("first_call_s", "first call s"),
        ("tanh_passes", "tanh passes"),
        ("g_tanh_per_s", "G tanh/s"),
        ("max_abs_diff", "max |diff|"),
    ],
    "tanh_floor": [
        ("floor", "floor"),
        ("threads", "threads"),
        ("elements", "tanh evaluations"),
        ("median_ms", "median ms"),
        ("g_tanh_per_s", "G tanh/s"),
        ("g_tanh_per_s_per_thread", "G tanh/s per thread"),
    ],
    "sync": [("module", "module"), ("forward", "forward"), ("backward", "backward")],
}
TITLES = {
    "self": "Self-attention, D={dim}, H={heads}, forward + backward",
    "g2p": "G2P Transformer training step (forward, loss, backward, clip, AdamW)",
    "additive": "Additive attention, one head, D=A={adim}, forward + backward (baseline: naive compiled)",
    "tanh_floor": "tanh floor",
    "sync": "No host sync under torch.cuda.set_sync_debug_mode('error')",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_compile",
        description="attnlab vs raw SDPA / nn.MultiheadAttention / the naive additive broadcast / Keras, eager and "
        "torch.compile'd, interleaved in one run (see the module docstring for what each section measures).",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default: cpu)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke test of every path, times meaningless"
    )
    parser.add_argument("--out", metavar="FILE", help="write the run record and every row to this JSON file")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which sections to run (default: all; 'sync' runs on cuda only)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="timed rounds per cell for every section (default: self 15, g2p 10, additive 5, floor 5; --quick: 3)",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N) before anything runs (CPU)")
    parser.add_argument("--no-peak", action="store_true", help="skip peak-memory measurements")
    parser.add_argument("--no-keras", action="store_true", help="leave Keras out of the additive section")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="keep Inductor's and Triton's disk caches (default: fresh ones: cold compile times)",
    )
    parser.add_argument("--peak", metavar=("CASE", "IMPL"), nargs=2, help=argparse.SUPPRESS)  # child: one peak
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the peak-memory subprocesses inherit it
    if args.peak:  # child process of the additive section: one peak-memory measurement
        pin_malloc()
        configure_compile(warm_cache=True)
        print(json.dumps({"peak_extra_bytes": additive_peak_child(*args.peak, args.device)}))
        return 0
    pin_malloc()  # freed large blocks go back to the OS: the in-process peaks of self and g2p follow live tensors
    cache = configure_compile(args.warm_cache)
    sizes = QUICK if args.quick else Sizes()
    notes: list[str] = []
    results: dict = {"record": run_record(args.device), "quick": args.quick, "args": vars(args), "notes": notes}
    results["record"]["compile"] = "torch.compile(fullgraph=True, dynamic=False), inductor, " + (
        "warm caches" if args.warm_cache else "cold caches"
    )

    def save(section: str, rows: list[dict]) -> None:
        results[section] = rows
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(results, handle, indent=1, default=str)

    print(f"device: {results['record']['device']}", flush=True)
    results["record"]["compiler_warm_up_s"] = round(warm_up_compiler(args.device), 2)
    failed, finished = False, False
    try:
        for section in args.sections:
            try:
                if section == "self":
                    run_self(sizes, args, notes, save)
                elif section == "g2p":
                    run_g2p(sizes, args, notes, save)
                elif section == "additive":
                    run_additive(sizes, args, notes, save)
                    run_tanh_floor(sizes, args, save)
                elif section == "sync":
                    if args.device != "cuda":
                        notes.append("sync: skipped (the no-host-sync check needs --device cuda)")
                    else:
                        run_sync(args, save)
            except AssertionError:
                raise  # a disagreement between implementations: the numbers would be meaningless
            except Exception as error:
                failed = True
                notes.append(f"{section}: FAILED {type(error).__name__}: {_first_line(error)}")
                traceback.print_exc()
                _reset_compiled()
        finished = True
    finally:  # also when interrupted (a time limit's SIGINT): keep and print what was measured
        results["complete"] = finished and not failed
        save("notes", notes)
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
        print_tables(results, sizes)
    return 1 if failed else 0


def print_tables(results: dict, sizes: Sizes) -> None:
    for section, columns in COLUMNS.items():
        rows = results.get(section)
        if not rows:
            continue
        title = TITLES[section].format(dim=sizes.self_dim, heads=sizes.self_heads, adim=sizes.additive_dim)
        print(f"\n### {title}\n\n{markdown_table(rows, columns)}", flush=True)
    cpu = results["record"].get("cpu")
    if cpu:
        print(
            f"\nCPU: {cpu['aten_cpu_capability']}, flags {' '.join(cpu['isa_flags'])}, {cpu['torch_threads']} "
            f"threads, load average {cpu['load_average_1_5_15']} at start"
        )
    for note in results["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
