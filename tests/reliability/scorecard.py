"""The reliability scorecard: the grid of cases, the covering design of the CPU tier, the oracles and the checks.

A *case* is one module x one dtype x one mask pattern x one shape. :func:`run_case` builds the module, feeds it
inputs rounded to the dtype, and checks every criterion of the scorecard (RELIABILITY.md, "Scorecard"):

- agreement with an independent float64 reference (float64: rtol = atol = 1e-7; float32: rtol 1.3e-6,
  atol 1e-5; bfloat16/float16: error at most 2x the error of the reference's own math run in that dtype + 1e-5,
  gradients 3x + 1e-4), outputs, weights and input gradients, on the fused path and on the weights path;
- zero NaN/Inf in outputs, weights and gradients;
- rows with nothing to attend to: context exactly the module's value for a zero context, weights exactly 0 at
  every disallowed entry, query gradient exactly 0;
- keys/values masked for a row, changed by +-1e4, change that row not at all (bit for bit);
- NaN in keys/values that no query may read changes nothing and stays out of the gradients;
- NaN in an unmasked query, key or value propagates to the rows that read it;
- analytic identities: equal keys give the (masked) mean of the values, one key gives its value exactly,
  zero-initialized gates and residual branches give the identity exactly.

References: ``tests/reference.py`` (einsum oracles, themselves checked against its per-pair loops),
``tests/vision/vision_reference.py`` and ``tests/seq/test_seq_reference.py`` (imported, not copied), plus the
Transformer-layer and batched LSTMN references below, written from the modules' parameters with plain torch ops.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math
import random
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TESTS = Path(__file__).resolve().parents[1]
for _folder in (TESTS, TESTS / "seq", TESTS / "vision"):  # the shared references live next to their own tests
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import test_seq_reference as seq_ref  # noqa: E402
import vision_reference as vision_ref  # noqa: E402

import attnlab  # noqa: E402
from attnlab import CrossAttention, KVCache, SelfAttention, context_and_weights, masks  # noqa: E402
from attnlab.seq import BlockConfig, DecoderLayer, EncoderLayer, LSTMNLayer, RNNConfig, RNNSeq2Seq  # noqa: E402
from attnlab.vision import get_block  # noqa: E402
from reference import reference_attend_einsum, reference_module_einsum  # noqa: E402

# -- the grid ----------------------------------------------------------------------------------------------------
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOW_PRECISION = ("bfloat16", "float16")
SCORES = ("dot", "scaled_dot", "general", "additive", "cosine", "location")
BATCHES = (1, 3)
LENGTHS = (1, 2, 3, 7, 33, 97)  # 3 only with B = 3: the B == T shape
HEAD_DIMS = (1, 3, 8, 59, 64)
HEADS = (1, 3)
MAX_LEN = 100  # location score and learned positions: covers the longest length
MASKS = (
    "none",
    "random",  # Bernoulli(0.6), at least one key per row
    "causal",  # Tq == Tk
    "causal_rect",  # Tq != Tk, end-aligned (a KV cache for self-attention)
    "pad1",  # item 0 has 1 padded key
    "pad_last",  # item 0 has L - 1 padded keys
    "pad_random",  # every item a random number of padded keys
    "full_row",  # one query row with no key at all
    "empty_item",  # one batch item that is all padding
    "bias",  # additive float bias (with a -inf row and a few -inf entries); the core only
    "stride0",  # one key pattern broadcast with stride 0 over batch, heads and queries
)
PAD_MASKS = ("pad1", "pad_last", "pad_random")
# Attention-level kinds: the core called two ways, the two modules with and without projections, two layers.
KINDS = (
    "attend-self",
    "attend-cross",
    "CrossAttention",
    "CrossAttention-noproj",
    "SelfAttention",
    "SelfAttention-noproj",
    "EncoderLayer",
    "DecoderLayer",
)
SELF_KINDS = ("attend-self", "SelfAttention", "SelfAttention-noproj", "EncoderLayer")
LAYER_KINDS = ("EncoderLayer", "DecoderLayer")
VISION_BLOCKS = (
    "se",
    "eca",
    "cbam",
    "nonlocal-embedded_gaussian",
    "nonlocal-gaussian",
    "nonlocal-dot",
    "nonlocal-concatenation",
    "sagan",
    "aa_conv",
    "sasa",
    "botnet",
    "criss_cross",
    "vit",
)
VISION_SIZES = (1, 2, 7, 33, 97)
VISION_MAX_PIXELS = 256  # the references hold [N, N] (relative blocks: [N, N, D]) float64 matrices
BN_BLOCKS = (
    "cbam",
    "nonlocal-embedded_gaussian",
    "nonlocal-gaussian",
    "nonlocal-dot",
    "nonlocal-concatenation",
    "botnet",
)
GATED_BLOCKS = {  # zero-initialized gates: the fresh block is exactly this function of its input
    "sagan": lambda x: x,
    "criss_cross": lambda x: x,
    "nonlocal-embedded_gaussian": lambda x: x,
    "nonlocal-gaussian": lambda x: x,
    "nonlocal-dot": lambda x: x,
    "nonlocal-concatenation": lambda x: x,
    "botnet": torch.relu,
}
RNN_STYLES = ("bahdanau-additive", "luong-general")  # the decoders tests/seq/test_seq_reference.py has oracles for
RNN_MASKS = ("none", *PAD_MASKS)


@dataclass(frozen=True)
class Case:
    """One cell of the grid. ``tq``/``tk`` are query/key lengths (vision: map height/width; RNN: target/source
    steps) and ``dim`` the per-head feature size (vision: per-head channels; RNN/LSTMN: hidden size)."""

    family: str  # "attention" | "vision" | "rnn" | "lstmn"
    module: str  # e.g. "attend-cross/additive/h3", "vision/sagan", "rnn/bahdanau-additive", "lstmn"
    dtype: str
    mask: str
    batch: int
    tq: int
    tk: int
    dim: int

    def __str__(self) -> str:
        return f"{self.module}|{self.dtype}|{self.mask}|B{self.batch}-Tq{self.tq}-Tk{self.tk}-D{self.dim}"

    @property
    def seed(self) -> int:
        return zlib.crc32(str(self).encode())

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.tq, self.tk, self.dim)


def attention_module(kind: str, score: str, heads: int) -> str:
    return f"{kind}/{score}/h{heads}"


def _valid_attention(kind: str, mask: str, batch: int, tq: int, tk: int) -> bool:
    if 3 in (tq, tk) and batch != 3:
        return False  # length 3 is the B == T shape
    if kind in SELF_KINDS and tq != tk and not (mask == "causal_rect" and kind.startswith("SelfAttention")):
        return False
    if mask == "causal" and tq != tk:
        return False
    if mask == "causal_rect" and (tq == tk or (kind in SELF_KINDS and not tq < tk)):
        return False
    if mask in PAD_MASKS and tk < 2:
        return False
    return not (mask == "bias" and not kind.startswith("attend"))


def _valid_vision(block: str, batch: int, height: int, width: int, dim: int) -> bool:
    if height * width > VISION_MAX_PIXELS:
        return False
    if block in BN_BLOCKS and batch * height * width == 1:
        return False  # BatchNorm in training mode: PyTorch refuses one value per channel
    return not (block == "sasa" and dim < 2)  # sasa splits each head between row and column offsets


@dataclass(frozen=True)
class Space:
    """Factors of one family, the subset that constraints couple, and the constraint on that subset."""

    factors: dict[str, tuple]
    constrained: tuple[str, ...]
    valid: Callable[..., bool]
    extra_groups: tuple[tuple[str, ...], ...] = ()
    make: Callable[[dict], Case] = field(default=lambda values: values)
    cost: Callable[[dict], float] = field(default=lambda values: 1.0)  # rough seconds, to prefer cheap cases

    def feasible(self) -> list[dict]:
        combos = itertools.product(*(self.factors[name] for name in self.constrained))
        return [dict(zip(self.constrained, c, strict=True)) for c in combos if self.valid(*c)]

    def full(self) -> Iterator[Case]:
        """The cartesian grid, minus the invalid combinations."""
        free = [name for name in self.factors if name not in self.constrained]
        for fixed in self.feasible():
            for values in itertools.product(*(self.factors[name] for name in free)):
                yield self.make({**fixed, **dict(zip(free, values, strict=True))})


def _groups(space: Space) -> list[tuple[str, ...]]:
    return [*itertools.combinations(space.factors, 2), *space.extra_groups]


def required_tuples(space: Space) -> list[tuple[tuple[str, ...], tuple]]:
    """Every pair of factor values (and every extra group's combination) that some valid case contains."""
    feasible = space.feasible()
    required = []
    for group in _groups(space):
        tied = [name for name in group if name in space.constrained]
        seen = {tuple(f[name] for name in tied) for f in feasible}
        for values in itertools.product(*(space.factors[name] for name in group)):
            assignment = dict(zip(group, values, strict=True))
            if tuple(assignment[name] for name in tied) in seen:
                required.append((group, values))
    return required


def covered_tuples(space: Space, case_values: dict) -> list[tuple[tuple[str, ...], tuple]]:
    return [(group, tuple(case_values[name] for name in group)) for group in _groups(space)]


def covering_design(space: Space, seed: int, candidates: int = 12) -> list[dict]:
    """A cheap set of valid cases containing every required tuple: greedy AETG (each step takes, among a few
    candidates seeded by uncovered tuples, the one covering most new tuples per unit of estimated cost).
    Deterministic for a seed."""
    rng = random.Random(seed)
    feasible = space.feasible()
    index: dict[tuple[str, object], set[int]] = {}
    for i, f in enumerate(feasible):
        for name, value in f.items():
            index.setdefault((name, value), set()).add(i)
    free = [name for name in space.factors if name not in space.constrained]
    groups = _groups(space)
    order = required_tuples(space)
    uncovered = set(order)
    chosen: list[dict] = []
    while uncovered:
        pending = [t for t in order if t in uncovered]
        best, best_gain = None, -1
        for _ in range(candidates):
            group, values = rng.choice(pending[: max(1, len(pending) // 4)])  # bias toward the oldest tuples
            start = dict(zip(group, values, strict=True))
            tied = [index[(name, start[name])] for name in group if name in space.constrained]
            pool = sorted(set.intersection(*tied)) if tied else range(len(feasible))
            case = {**feasible[rng.choice(pool)], **start}
            for name in rng.sample(free, len(free)):
                if name in start:
                    continue
                options = list(space.factors[name])
                rng.shuffle(options)
                ready = [g for g in groups if name in g and all(n in case or n == name for n in g)]
                gains = []
                for value in options:
                    case[name] = value
                    gains.append(sum((g, tuple(case[n] for n in g)) in uncovered for g in ready))
                case[name] = options[max(range(len(options)), key=gains.__getitem__)]
            gain = sum(t in uncovered for t in covered_tuples(space, case)) / space.cost(case)
            if gain > best_gain:
                best, best_gain = case, gain
        chosen.append(best)
        uncovered -= set(covered_tuples(space, best))
    return chosen


def _attention_cost(v: dict) -> float:
    work = v["batch"] * v["heads"] * v["tq"] * v["tk"] * (v["dim"] + 8)
    return 0.05 + work * (5 if v["score"] == "additive" else 1) * (3 if v["kind"] in LAYER_KINDS else 1) / 2e6


def _attention_case(v: dict) -> Case:
    module = attention_module(v["kind"], v["score"], v["heads"])
    return Case("attention", module, v["dtype"], v["mask"], v["batch"], v["tq"], v["tk"], v["dim"])


ATTENTION = Space(
    factors={
        "kind": KINDS,
        "mask": MASKS,
        "batch": BATCHES,
        "tq": LENGTHS,
        "tk": LENGTHS,
        "score": SCORES,
        "heads": HEADS,
        "dtype": tuple(DTYPES),
        "dim": HEAD_DIMS,
    },
    constrained=("kind", "mask", "batch", "tq", "tk"),
    valid=_valid_attention,
    # every module (kind x score x heads) at least once; with the pairs: every kind and every score with every
    # dtype and with every mask pattern, every shape factor with every other factor
    extra_groups=(("kind", "score", "heads"),),
    make=_attention_case,
    cost=_attention_cost,
)
VISION = Space(
    factors={
        "block": VISION_BLOCKS,
        "batch": BATCHES,
        "tq": VISION_SIZES,
        "tk": VISION_SIZES,
        "dim": HEAD_DIMS,
        "dtype": tuple(DTYPES),
    },
    constrained=("block", "batch", "tq", "tk", "dim"),
    valid=_valid_vision,
    make=lambda v: Case("vision", f"vision/{v['block']}", v["dtype"], "none", v["batch"], v["tq"], v["tk"], v["dim"]),
    cost=lambda v: 0.05 + v["batch"] * (v["tq"] * v["tk"]) ** 2 * v["dim"] / 2e6,
)
RNN = Space(
    factors={
        "style": RNN_STYLES,
        "mask": RNN_MASKS,
        "tk": VISION_SIZES,
        "batch": BATCHES,
        "tq": VISION_SIZES,
        "dim": HEAD_DIMS,
        "dtype": tuple(DTYPES),
    },
    constrained=("mask", "tk"),
    valid=lambda mask, tk: not (mask in PAD_MASKS and tk < 2),
    make=lambda v: Case("rnn", f"rnn/{v['style']}", v["dtype"], v["mask"], v["batch"], v["tq"], v["tk"], v["dim"]),
    cost=lambda v: 0.05 + v["batch"] * v["tq"] * v["tk"] / 5e3,
)
LSTMN = Space(
    factors={"batch": BATCHES, "tq": VISION_SIZES, "dim": HEAD_DIMS, "dtype": tuple(DTYPES)},
    constrained=(),
    valid=lambda: True,
    make=lambda v: Case("lstmn", "lstmn", v["dtype"], "causal", v["batch"], v["tq"], v["tq"], v["dim"]),
    cost=lambda v: 0.05 + v["tq"] * (1 + v["batch"] * v["tq"] / 50) / 100,
)
SPACES = {"attention": ATTENTION, "vision": VISION, "rnn": RNN, "lstmn": LSTMN}


@functools.cache
def cpu_design() -> dict[str, list[dict]]:
    """The CI subsample, as factor values: a covering design of each family (see :func:`covering_design`)."""
    return {name: covering_design(space, seed=20240607 + i) for i, (name, space) in enumerate(SPACES.items())}


def cpu_tier() -> list[Case]:
    return [SPACES[name].make(values) for name, design in cpu_design().items() for values in design]


def full_groups() -> list[tuple[str, ...]]:
    """The full grid in groups of one module x dtype x mask pattern (each group: every shape)."""
    groups = []
    for kind, score, heads, dtype, mask in itertools.product(KINDS, SCORES, HEADS, DTYPES, MASKS):
        if any(_valid_attention(kind, mask, *shape) for shape in itertools.product(BATCHES, LENGTHS, LENGTHS)):
            groups.append(("attention", attention_module(kind, score, heads), dtype, mask))
    groups += [("vision", f"vision/{block}", dtype, "none") for block in VISION_BLOCKS for dtype in DTYPES]
    groups += [("rnn", f"rnn/{style}", d, m) for style in RNN_STYLES for d in DTYPES for m in RNN_MASKS]
    groups += [("lstmn", "lstmn", dtype, "causal") for dtype in DTYPES]
    return groups


def group_cases(group: tuple[str, ...]) -> list[Case]:
    """Every valid shape of one group of :func:`full_groups`."""
    family, module, dtype, mask = group
    if family == "attention":
        kind = module.split("/")[0]
        shapes = [s for s in itertools.product(BATCHES, LENGTHS, LENGTHS) if _valid_attention(kind, mask, *s)]
        return [Case(family, module, dtype, mask, b, tq, tk, d) for b, tq, tk in shapes for d in HEAD_DIMS]
    if family == "vision":
        block = module.split("/", 1)[1]
        return [
            Case(family, module, dtype, mask, b, h, w, d)
            for b, h, w, d in itertools.product(BATCHES, VISION_SIZES, VISION_SIZES, HEAD_DIMS)
            if _valid_vision(block, b, h, w, d)
        ]
    if family == "rnn":
        return [
            Case(family, module, dtype, mask, b, tq, tk, d)
            for b, tq, tk, d in itertools.product(BATCHES, VISION_SIZES, VISION_SIZES, HEAD_DIMS)
            if RNN.valid(mask, tk)
        ]
    return [
        Case(family, module, dtype, mask, b, t, t, d) for b, t, d in itertools.product(BATCHES, VISION_SIZES, HEAD_DIMS)
    ]


# -- the tally behind the printed scorecard line --------------------------------------------------------------
@dataclass
class Result:
    case: Case
    checks: int = 0
    nan: list[str] = field(default_factory=list)
    mismatch: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # passes worth a line: float32 gradients within the naive rule

    def failures(self) -> list[str]:
        return [f"NaN/Inf: {m}" for m in self.nan] + [f"mismatch: {m}" for m in self.mismatch]


@dataclass
class Tally:
    """What the scorecard line reports, per tier."""

    results: dict[str, list[Result]] = field(default_factory=dict)
    crashes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, tier: str, result: Result) -> None:
        self.results.setdefault(tier, []).append(result)

    def crash(self, tier: str, case: Case, error: BaseException) -> None:
        self.crashes.setdefault(tier, []).append(f"{case}: {type(error).__name__}: {error}")

    def lines(self) -> list[str]:
        out = []
        for tier in sorted(set(self.results) | set(self.crashes)):
            results = self.results.get(tier, [])
            cases = [r.case for r in results]
            crashes = self.crashes.get(tier, [])
            line = (
                f"scorecard [{tier}]: {len({c.module for c in cases})} modules x {len({c.dtype for c in cases})} "
                f"dtypes x {len({c.mask for c in cases})} mask patterns x {len({c.shape for c in cases})} shapes: "
                f"{len(cases)} cases, {sum(r.checks for r in results)} checks: "
                f"{sum(len(r.nan) for r in results)} NaN, {sum(len(r.mismatch) for r in results)} mismatches, "
                f"{len(crashes)} crashes ({sum(len(r.not_applicable) for r in results)} checks n/a)"
            )
            out.append(line)
            notes = [f"{r.case}: {m}" for r in results for m in r.notes]
            if notes:
                out.append(
                    f"  float32 values past rtol/atol, within 2x (gradients 3x) the naive float32 error: {len(notes)}, "
                    f"e.g. {notes[0]}"
                )
            by_family: dict[str, list[Case]] = {}
            for c in cases:
                by_family.setdefault(c.family, []).append(c)
            for family, members in sorted(by_family.items()):
                out.append(
                    f"  {family}: {len({c.module for c in members})} modules, {len(members)} cases, "
                    f"dtypes {sorted({c.dtype for c in members})}, {len({c.mask for c in members})} mask patterns"
                )
            out += [f"  FAIL {r.case}: {m}" for r in results for m in r.failures()][:20]
            out += [f"  CRASH {c}" for c in crashes][:20]
        return out


TALLY = Tally()


# -- comparison helpers -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny tensors on a shared machine: one intra-op thread is faster and deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def wake(module: nn.Module) -> nn.Module:
    """Random values for every all-zero parameter (gates, biases, LayerNorm shifts), so none is trivially 0."""
    with torch.no_grad():
        for param in module.parameters():
            if param.numel() and not param.any():
                param.normal_(0.0, 0.5)
    return module


def rounded(module: nn.Module, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """``(module in dtype, float64 copy of exactly those rounded parameters)``."""
    low = copy.deepcopy(module).to(dtype)
    return low, copy.deepcopy(low).double()


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype, scale: float = 1.0) -> Tensor:
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


def max_error(got: Tensor, want: Tensor) -> float:
    if got.numel() == 0:
        return 0.0
    return float((got.detach().double() - want.detach().double()).abs().nan_to_num(nan=math.inf).max())


def finite(result: Result, what: str, tensor: Tensor | None) -> bool:
    """The zero-NaN/Inf criterion: counts a check, records a NaN failure. Returns whether the tensor is finite."""
    if tensor is None:
        return True
    result.checks += 1
    bad = ~torch.isfinite(tensor)
    if bad.any():
        result.nan.append(f"{what}: {int(bad.sum())} of {tensor.numel()} entries are NaN/Inf")
        return False
    return True


DRAW_ELEMENTS, MAX_DRAWS = 16384, 64


def draws(dtype: str, numel: int, cap: int = MAX_DRAWS) -> int:
    """Input draws for the half-precision rule: enough that each compared maximum covers ~16384 entries (at most
    ``cap``: 64; 256 for attention outputs of fewer than 64 live entries, which are cheap; 16 for the recurrent
    models, smooth and slow to run step by step in Python)."""
    return 1 if dtype not in LOW_PRECISION else max(1, min(cap, math.ceil(DRAW_ELEMENTS / max(1, numel))))


def redraw(inputs: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Fresh inputs of the same shapes and dtypes."""
    gen = torch.Generator().manual_seed(seed)
    return {name: randn(gen, *t.shape, dtype=t.dtype) for name, t in inputs.items()}


@dataclass
class Pooled:
    """The half-precision rule on maximum errors pooled over several input draws. Over a handful of entries the
    maximum is decided by one ill-conditioned entry (a softmax over 2 keys, a LayerNorm over 3 features) or by one
    kink crossed by a rounding (a ReLU or a max that flips and routes the gradient elsewhere), and the ratio of two
    such maxima swings by 10-80x from draw to draw. Pooled over ~16384 entries it settles (measured: 7% of single
    draws of SDPA at Tk = 2 break the 3x rule, none of the pools of 16; CBAM at 7x2 pixels: 78x over 13 draws,
    0.5x over 49). Module and naive errors are pooled over the same draws."""

    dtype: str
    degenerate: str | None = None  # why the rule does not apply (see :func:`degenerate_norm`)
    kinked: str | None = None  # why the gradient rule does not apply (see KINKED)
    errors: dict[str, list] = field(default_factory=dict)  # what -> [module err, naive err, is a gradient, draws]

    def add(self, what: str, got: Tensor, want: Tensor, naive: Tensor | None, grad: bool) -> None:
        if self.degenerate or (grad and self.kinked):
            return
        entry = self.errors.setdefault(what, [0.0, 0.0, grad, 0])
        if not torch.isfinite(naive).all():
            return  # the naive math overflowed on this draw: it gives no yardstick
        entry[0] = max(entry[0], max_error(got, want))
        entry[1] = max(entry[1], max_error(naive, want))
        entry[3] += 1

    def check(self, result: Result) -> None:
        if self.degenerate and self.dtype in LOW_PRECISION:
            result.not_applicable.append(f"half-precision rule: {self.degenerate}")
        if self.kinked and self.dtype in LOW_PRECISION:
            result.not_applicable.append(f"half-precision gradient rule: {self.kinked}")
        for what, (err, naive_err, grad, used) in self.errors.items():
            if not used:
                result.not_applicable.append(f"half-precision rule for {what}: the naive math is not finite")
                continue
            result.checks += 1
            factor, slack = (3.0, 1e-4) if grad else (2.0, 1e-5)
            if err > factor * naive_err + slack:
                result.mismatch.append(
                    f"{what}: max |err| {err:.3g} > {factor:g} x naive {self.dtype} error {naive_err:.3g} + {slack:g}"
                )


QUERY_ONLY_KINDS = ("attend-cross", "CrossAttention", "CrossAttention-noproj")  # the query input feeds queries only
KINKED = {  # blocks whose gradient passes through a kink on the data: a rounding across it reroutes the gradient
    "cbam": "its channel and spatial max-pooling and ReLU route the gradient through one element: a half-precision "
    "rounding that flips the maximum sends it elsewhere (measured: up to 100x the naive error, pooled over 16384 "
    "entries)",
    "nonlocal-concatenation": "relu(w . [theta_i; phi_j]) on every pixel pair: a half-precision rounding across 0 "
    "flips that pair's derivative (measured: up to 12x the naive error, pooled over 16384 entries)",
}


def degenerate_norm(case: Case) -> str | None:
    """Where the half-precision rule measures PyTorch's normalization kernels, not attnlab: a LayerNorm over fewer
    than 8 features (Transformer layers and ViT of width < 8) or a BatchNorm over fewer than 16 values per channel.
    There PyTorch's own half-precision backward is less accurate than the naive formula by itself (measured over
    291 rows: LayerNorm over 3 features up to 14x in float16; BatchNorm over 2 values 2x median, 10x at worst)."""
    if case.family == "attention" and case.module.split("/")[0] in LAYER_KINDS:
        width = int(case.module.split("/h")[-1]) * case.dim
        return f"LayerNorm over {width} < 8 features" if width < 8 else None
    if case.family == "vision":
        block = case.module.split("/", 1)[1]
        if block == "vit" and 2 * case.dim < 8:
            return f"LayerNorm over {2 * case.dim} < 8 features"
        values = case.batch * case.tq * case.tk
        if block in BN_BLOCKS and values < 16:
            return f"BatchNorm over {values} < 16 values per channel"
    return None


def agree(
    result: Result,
    what: str,
    got: Tensor,
    want: Tensor,
    dtype: str,
    naive: Tensor | None,
    grad=False,
    pool: Pooled | None = None,
    naive_fn: Callable[[], Tensor] | None = None,
) -> None:
    """Agreement with the float64 reference. Half precision: against the naive error of the same math, pooled
    over draws in ``pool`` (checked by ``pool.check``). float32: rtol 1.3e-6, atol 1e-5; where the computation
    is ill-conditioned (a backward that recomputes the softmax from its log-sum-exp loses |logit| x eps, ~1e-5
    relative for unscaled dot logits of size 60; a BatchNorm over few pixels divides by a small deviation) the
    naive float32 error (``naive_fn``) can itself exceed that, and the half-precision rule with float32 as the
    low precision decides; each such pass is listed on the scorecard."""
    if not finite(result, what, got):
        return  # counted as NaN; a value comparison would count it twice
    if got.shape != want.shape:
        result.mismatch.append(f"{what}: shape {tuple(got.shape)}, reference {tuple(want.shape)}")
        return
    factor, slack = (3.0, 1e-4) if grad else (2.0, 1e-5)
    if dtype in LOW_PRECISION:
        single = pool is None  # one draw: checked at once
        pool = Pooled(dtype) if single else pool
        pool.add(what, got, want, naive, grad)
        if single:
            pool.check(result)
        return
    result.checks += 1
    rtol, atol = (1e-7, 1e-7) if dtype == "float64" else (1.3e-6, 1e-5)
    got, want = got.double(), want.double()
    bad = (got - want).abs() > atol + rtol * want.abs()
    if bad.any() and dtype == "float32" and naive_fn is not None:
        err, naive_err = max_error(got, want), max_error(naive_fn(), want)
        if err <= factor * naive_err + slack:
            result.notes.append(f"{what}: max |err| {err:.3g} (naive float32 {naive_err:.3g})")
            return
    if bad.any():
        result.mismatch.append(
            f"{what}: {int(bad.sum())} of {bad.numel()} entries outside rtol={rtol:g}, "
            f"atol={atol:g}; max |err| {max_error(got, want):.3g}"
        )


def exact(result: Result, what: str, got: Tensor, want: Tensor) -> None:
    """Bit-for-bit equality (exact zeros, invariance to masked inputs, exact identities)."""
    result.checks += 1
    if got.shape != want.shape or not torch.equal(got, want.to(got.dtype)):
        finite_got = torch.isfinite(got).all() if got.numel() else True
        note = "" if finite_got else " (NaN/Inf in the result)"
        err = max_error(got, want) if got.shape == want.shape else float("nan")
        result.mismatch.append(f"{what}: not exactly equal, max |diff| {err:.3g}{note}")


def all_nan(result: Result, what: str, rows: Tensor) -> None:
    """NaN propagation: every entry of ``rows`` must be NaN (never turned into a number)."""
    result.checks += 1
    if not rows.isnan().all():
        result.mismatch.append(f"{what}: {int((~rows.isnan()).sum())} of {rows.numel()} entries are not NaN")


def half_supported(error: BaseException) -> bool:
    return not (isinstance(error, (RuntimeError, NotImplementedError)) and "not implemented for" in str(error))


# -- Transformer-layer and LSTMN references (plain torch ops on the modules' parameters, any dtype) ----------------
def _param(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.detach().to(dtype)


def ref_layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * _param(norm.weight, x.dtype) + _param(norm.bias, x.dtype)


def ref_linear(x: Tensor, layer: nn.Linear) -> Tensor:
    out = torch.einsum("...i,oi->...o", x, _param(layer.weight, x.dtype))
    return out if layer.bias is None else out + _param(layer.bias, x.dtype)


def ref_feed_forward(x: Tensor, ffn) -> Tensor:
    up = ref_linear(x, ffn.up)
    return ref_linear(0.5 * up * (1.0 + torch.erf(up / math.sqrt(2.0))), ffn.down)  # exact GELU


def ref_encoder_layer(layer, x: Tensor, allowed: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """Pre-LN: ``x + SA(LN x)``, then ``+ FFN(LN x)``."""
    h = ref_layer_norm(x, layer.attn_norm)
    attended, weights = reference_module_einsum(layer.attn, h, h, allowed, self_attention=True)
    x = x + attended
    return x + ref_feed_forward(ref_layer_norm(x, layer.ffn_norm), layer.ffn), {"weights": weights}


def ref_decoder_layer(layer, x: Tensor, memory: Tensor, allowed: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """Pre-LN: causal self-attention, cross-attention over ``memory`` restricted to ``allowed``, FFN."""
    h = ref_layer_norm(x, layer.self_norm)
    tq = x.shape[1]
    lower = torch.tensor([[j <= i for j in range(tq)] for i in range(tq)])[None, None]
    attended, self_weights = reference_module_einsum(layer.self_attn, h, h, lower, self_attention=True)
    x = x + attended
    crossed, cross_weights = reference_module_einsum(
        layer.cross_attn, ref_layer_norm(x, layer.cross_norm), memory, allowed
    )
    x = x + crossed
    out = x + ref_feed_forward(ref_layer_norm(x, layer.ffn_norm), layer.ffn)
    return out, {"cross": cross_weights, "self": self_weights}


def ref_lstmn(layer, x: Tensor) -> tuple[Tensor, Tensor]:
    """Cheng et al. 2016 eqs. 4-7 for a batch, in ``x.dtype``: states ``[B, T, H]``, weights ``[B, 1, T, T]``.

    The float64 oracle is ``tests/seq/test_seq_reference.py::lstmn_reference`` (per item, Python floats); this
    batched, differentiable version gives reference gradients and the naive half-precision yardstick.
    """
    dtype, hidden = x.dtype, layer.hidden
    batch, length, _ = x.shape
    score = layer.attention.score
    w, u, v = (_param(t[0], dtype) for t in (score.query_weight, score.key_weight, score.v))
    gates_w, gates_b = _param(layer.gates.weight, dtype), _param(layer.gates.bias, dtype)
    hs, cs, rows = [], [], []
    h_tilde = x.new_zeros(batch, hidden)
    for t in range(length):
        query = torch.cat((x[:, t], h_tilde), dim=-1)  # (B, In+H): [x_t; h~_{t-1}]
        if t == 0:
            h_sum = c_sum = x.new_zeros(batch, hidden)
            rows.append(x.new_zeros(batch, length))
        else:
            tape_h, tape_c = torch.stack(hs, 1), torch.stack(cs, 1)  # (B, t, H)
            logits = torch.tanh((query @ w)[:, None, :] + tape_h @ u) @ v  # (B, t)
            exps = torch.exp(logits - logits.detach().amax(-1, keepdim=True))
            s = exps / exps.sum(-1, keepdim=True)
            rows.append(F.pad(s, (0, length - t)))
            h_sum = (s[..., None] * tape_h).sum(1)
            c_sum = (s[..., None] * tape_c).sum(1)
        h_tilde = h_sum
        i, f, o, g = (torch.cat((h_sum, x[:, t]), dim=-1) @ gates_w.t() + gates_b).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c_sum + torch.sigmoid(i) * torch.tanh(g)
        hs.append(torch.sigmoid(o) * torch.tanh(c))
        cs.append(c)
    return torch.stack(hs, 1), torch.stack(rows, 1)[:, None]


@contextlib.contextmanager
def vision_reference_in(dtype: torch.dtype) -> Iterator[None]:
    """Run tests/vision/vision_reference.py in ``dtype``: it reads every parameter through ``p()``, which casts to
    float64; for the naive half-precision yardstick ``p()`` casts to ``dtype`` instead."""
    original = vision_ref.p
    vision_ref.p = lambda t: None if t is None else t.detach().to(dtype)
    try:
        yield
    finally:
        vision_ref.p = original


# -- attention-level cases ----------------------------------------------------------------------------------------
DIM, CONTEXT_DIM = 6, 5  # model widths of the projected modules (head_dim comes from the case)


@dataclass
class Setup:
    """A built attention-level case: the module under test, its float64 twin, inputs and masks."""

    case: Case
    kind: str
    score: str
    heads: int
    module: nn.Module  # in the case's dtype (for the core: the score)
    twin: nn.Module  # float64, the same rounded parameters
    inputs: dict[str, Tensor]  # leaves in the case's dtype
    queries: tuple[str, ...]  # inputs whose rows are queries
    keys: tuple[str, ...]  # inputs whose rows are keys (or key/value positions)
    values: tuple[str, ...]  # inputs whose rows carry values
    call: dict  # mask / bias / causal
    allowed: Tensor  # [B, H, Tq, Tk] bool: which key each query may read
    split: bool  # inputs are [B, H, T, D] (the core with heads): rows group by (b, h), else by b
    offset: int = 0  # self-attention over a cache: query row i is input position i + offset
    grads: bool = True  # False for KV-cache decoding (inference only)
    site: str = "weights"  # the masked site's weights

    @property
    def units(self) -> int:
        return self.allowed.shape[0] * (self.heads if self.split else 1)

    def allowed_units(self) -> Tensor:
        """``[units, Tq, Tk]``: per (b, h) for split inputs, else allowed in some head."""
        a = self.allowed
        return a.reshape(-1, *a.shape[2:]) if self.split else a.any(1)

    def rows(self, t: Tensor) -> Tensor:
        """An input or output as ``[units, T, F]`` (a view)."""
        return t.reshape(self.units, t.shape[-2], t.shape[-1])


def _end_aligned(tq: int, tk: int) -> Tensor:
    return torch.tensor([[j <= i + tk - tq for j in range(tk)] for i in range(tq)])  # written apart from masks.causal


def _lengths(pattern: str, batch: int, tk: int, gen: torch.Generator) -> list[int]:
    def pick(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=gen))

    lengths = [pick(1, tk) for _ in range(batch)]
    if pattern == "pad1":
        lengths[0] = tk - 1
    elif pattern == "pad_last":
        lengths[0] = 1
    elif pattern == "pad_random":
        lengths = [pick(1, tk - 1) for _ in range(batch)]
    elif pattern == "empty_item":
        lengths[-1] = 0
    return lengths


def make_masks(case: Case, heads: int, split: bool, gen: torch.Generator, kind: str) -> tuple[dict, Tensor]:
    """The call's mask/bias/causal arguments for a pattern, and the full ``allowed [B, H, Tq, Tk]``."""
    b, tq, tk, pattern = case.batch, case.tq, case.tk, case.mask
    lead = (b, heads) if split else (b,)  # masks of the core with heads are per head; modules' are head-agnostic
    call: dict = {}
    allowed = torch.ones(b, heads, tq, tk, dtype=torch.bool)
    if pattern == "random":
        mask = torch.rand(*lead, tq, tk, generator=gen) < 0.6
        none = ~mask.any(-1)
        mask[none] = F.one_hot(torch.randint(0, tk, (int(none.sum()),), generator=gen), tk).bool()
        call["mask"] = mask
    elif pattern in ("causal", "causal_rect"):
        lower = _end_aligned(tq, tk)
        allowed &= lower
        if kind.startswith("attend") or kind in ("SelfAttention", "SelfAttention-noproj"):
            call["causal"] = True  # the flag (modules were built causal)
        else:
            call["mask"] = masks.causal(tq, tk)
    elif pattern in (*PAD_MASKS, "empty_item"):
        call["mask"] = masks.padding(_lengths(pattern, b, tk, gen), tk)  # (B, 1, Tk)
        if split:
            call["mask"] = call["mask"][:, None]  # (B, 1, 1, Tk)
    elif pattern == "full_row":
        mask = torch.ones(*lead, tq, tk, dtype=torch.bool)
        row = int(torch.randint(0, tq, (1,), generator=gen))
        if split:
            mask[-1, heads // 2, row] = False
        else:
            mask[-1, row] = False
        call["mask"] = mask
    elif pattern == "stride0":
        keys = torch.rand(tk, generator=gen) < 0.5
        keys[int(torch.randint(0, tk, (1,), generator=gen))] = True
        call["mask"] = keys.expand(*lead, tq, tk)  # stride 0 on every axis but the last
    elif pattern == "bias":
        bias = 2.0 * torch.randn(*lead, tq, tk, generator=gen, dtype=torch.float64)
        bias[(-1, heads - 1, tq // 2) if split else (-1, tq // 2)] = -math.inf  # a row with nothing to attend to
        holes = torch.rand(bias.shape, generator=gen) < 0.2
        holes[..., 0] = False  # other rows keep key 0
        bias[holes] = -math.inf
        call["bias"] = bias.to(DTYPES[case.dtype])
        allowed &= ~torch.isneginf(call["bias"]).reshape(b, heads if split else 1, tq, tk)
    if "mask" in call:
        mask = call["mask"]
        if not split:
            mask = mask.reshape((1,) * (3 - mask.dim()) + tuple(mask.shape))[:, None]  # no head axis
        allowed &= mask
    return call, allowed


def build_attention(case: Case) -> Setup:
    kind, score, heads_name = case.module.split("/")
    heads = int(heads_name[1:])
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(case.seed)
    torch.manual_seed(case.seed)
    b, tq, tk, d = case.shape
    key_dim = d + 1 if score in ("general", "additive", "location") else d  # the scores that allow Dk != Dq
    options = {"max_len": MAX_LEN} if score == "location" else {}
    split = kind.startswith("attend") and heads > 1
    call, allowed = make_masks(case, heads, split, gen, kind)
    offset, grads, site = 0, True, "weights"

    def leaf(*shape: int) -> Tensor:
        return randn(gen, *shape, dtype=dtype).requires_grad_()

    if kind.startswith("attend"):
        module = wake(
            attnlab.get_score(
                score, query_dim=d, key_dim=d if kind == "attend-self" else key_dim, heads=heads, **options
            )
        )
        lead = (b, heads) if split else (b,)
        if kind == "attend-self":
            inputs = {"x": leaf(*lead, tq, d)}
            roles = (("x",), ("x",), ("x",))
        else:
            value_dim = d + 1 if d < 8 else d // 2  # Dv != Dk: the fused path pads the narrower side
            inputs = {"q": leaf(*lead, tq, d), "k": leaf(*lead, tk, key_dim), "v": leaf(*lead, tk, value_dim)}
            roles = (("q",), ("k", "v"), ("v",))
    elif kind in ("CrossAttention", "CrossAttention-noproj"):
        if kind == "CrossAttention":
            module = CrossAttention(DIM, CONTEXT_DIM, heads, score, head_dim=d, score_options=options)
        else:
            module = CrossAttention(heads * d, heads * key_dim, heads, score, project=False, score_options=options)
        inputs = {"x": leaf(b, tq, module.dim), "context": leaf(b, tk, module.context_dim)}
        roles = (("x",), ("context",), ("context",))
    elif kind in ("SelfAttention", "SelfAttention-noproj"):
        causal = case.mask in ("causal", "causal_rect")
        if kind == "SelfAttention":
            module = SelfAttention(DIM, heads, score, head_dim=d, causal=causal, score_options=options)
        else:
            module = SelfAttention(heads * d, heads, score, causal=causal, project=False, score_options=options)
        inputs = {"x": leaf(b, tk, module.dim)}
        roles = (("x",), ("x",), ("x",))
        if case.mask == "causal_rect":  # tq < tk: a KV cache holds the first tk - tq positions
            offset, grads = tk - tq, False
    else:
        config = BlockConfig(
            dim=heads * d, heads=heads, ffn_dim=min(2 * heads * d, 64), dropout=0.0, score=score, max_len=MAX_LEN
        )
        if kind == "EncoderLayer":
            module = EncoderLayer(config)
            inputs = {"x": leaf(b, tq, config.dim)}
            roles = (("x",), ("x",), ("x",))
        else:
            module = DecoderLayer(config, cross_score=score)
            inputs = {"x": leaf(b, tq, config.dim), "memory": leaf(b, tk, config.dim)}
            roles = (("x",), ("memory",), ("memory",))
            site = "cross"
    wake(module).eval()
    low, twin = rounded(module, dtype)
    return Setup(case, kind, score, heads, low, twin, inputs, *roles, call, allowed, split, offset, grads, site)


def forward(setup: Setup, module: nn.Module, inputs: dict[str, Tensor], weights: bool):
    """The module under test: ``(output [units, Tq, F], {site: weights [B, H, Tq, Tk]})``."""
    kind, call = setup.kind, setup.call
    if kind.startswith("attend"):
        q, k, v = (inputs["x"],) * 3 if kind == "attend-self" else (inputs["q"], inputs["k"], inputs["v"])
        out = attnlab.attend(
            q,
            k,
            v,
            module,
            call.get("mask"),
            bias=call.get("bias"),
            causal=call.get("causal", False),
            return_weights=weights,
        )
        sites = {"weights": out.weights}
        out = out.context
    elif kind.startswith("CrossAttention"):
        out, w = context_and_weights(
            module(inputs["x"], inputs["context"], mask=call.get("mask"), return_weights=weights)
        )
        sites = {"weights": w}
    elif kind.startswith("SelfAttention"):
        if setup.offset:
            with torch.no_grad():
                cache = KVCache()
                module(inputs["x"][:, : setup.offset], cache=cache)
                out = module(inputs["x"][:, setup.offset :], cache=cache, return_weights=weights)
        else:
            out = module(inputs["x"], mask=call.get("mask"), return_weights=weights)
        out, w = context_and_weights(out)
        sites = {"weights": w}
    elif kind == "EncoderLayer":
        out, w = module(inputs["x"], mask=call.get("mask"), return_weights=weights)
        sites = {"weights": w}
    else:
        readable = setup.allowed.any(2).any(1)[:, None]  # (B, 1, Tk): the memory mask for precompute
        memory = module.cross_attn.precompute(inputs["memory"], mask=readable if "mask" in call else None)
        out, self_w, cross_w = module(inputs["x"], memory, memory_mask=call.get("mask"), return_weights=weights)
        sites = {"cross": cross_w, "self": self_w}
    sites = {name: w if w is None or w.dim() == 4 else w[:, None] for name, w in sites.items()}
    return setup.rows(out), sites


def reference(setup: Setup, module: nn.Module, inputs: dict[str, Tensor]):
    """The reference in the inputs' dtype (float64 inputs and twin: the oracle)."""
    kind, allowed = setup.kind, setup.allowed
    if kind.startswith("attend"):
        if kind == "attend-self":
            q = k = v = inputs["x"]
        else:
            q, k, v = inputs["q"], inputs["k"], inputs["v"]
        if not setup.split:
            q, k, v = q[:, None], k[:, None], v[:, None]  # (B, 1, T, D)
        bias = setup.call.get("bias")
        if bias is not None:
            bias = bias.reshape(allowed.shape[0], -1, *bias.shape[-2:]).to(q.dtype)  # (B, H|1, Tq, Tk)
        out, w = reference_attend_einsum(q, k, v, module, allowed, bias)
        return setup.rows(out), {"weights": w}
    if kind.startswith("CrossAttention"):
        out, w = reference_module_einsum(module, inputs["x"], inputs["context"], allowed)
        return setup.rows(out), {"weights": w}
    if kind.startswith("SelfAttention"):
        x = inputs["x"]
        if setup.offset:
            tk = x.shape[1]
            out, w = reference_module_einsum(module, x, x, _end_aligned(tk, tk)[None, None], self_attention=True)
            return setup.rows(out[:, setup.offset :]), {"weights": w[:, :, setup.offset :]}
        out, w = reference_module_einsum(module, x, x, allowed, self_attention=True)
        return setup.rows(out), {"weights": w}
    if kind == "EncoderLayer":
        out, sites = ref_encoder_layer(module, inputs["x"], allowed)
        return setup.rows(out), sites
    out, sites = ref_decoder_layer(module, inputs["x"], inputs["memory"], allowed)
    return setup.rows(out), sites


def _detached(inputs: dict[str, Tensor], dtype: torch.dtype | None = None, grad: bool = False) -> dict[str, Tensor]:
    return {k: v.detach().to(dtype or v.dtype).clone().requires_grad_(grad) for k, v in inputs.items()}


def _backward(out: Tensor, inputs: dict[str, Tensor], cotangent: Tensor) -> dict[str, Tensor]:
    leaves = [t for t in inputs.values() if t.requires_grad]
    grads = torch.autograd.grad(out, leaves, cotangent.to(out.dtype), allow_unused=True)
    return {k: torch.zeros_like(t) if g is None else g for (k, t), g in zip(inputs.items(), grads, strict=True)}


def empty_value(setup: Setup) -> Tensor | None:
    """What a row with nothing to attend to must output, exactly: the output projection of a zero context."""
    if setup.kind in LAYER_KINDS:
        return None  # residual layers: covered by the reference and the exact-zero weights
    proj = getattr(setup.module, "out_proj", None)
    if proj is None:
        return torch.zeros(())
    with torch.no_grad():
        return proj(torch.zeros(1, proj.in_features, dtype=proj.weight.dtype))[0]


def run_attention(case: Case, result: Result) -> None:
    setup = build_attention(case)
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(case.seed + 1)
    a_u = setup.allowed_units()  # (U, Tq, Tk)
    empty = ~a_u.any(-1)  # (U, Tq): rows with nothing to attend to
    base, kept = {}, {}
    pool, draw, count = Pooled(case.dtype, degenerate_norm(case)), 0, 1
    while draw < count:  # 1. agreement with the float64 reference (several draws in half precision, see Pooled)
        source = setup.inputs if draw == 0 else redraw(setup.inputs, case.seed + 100 + draw)
        twin_inputs = _detached(source, torch.float64, grad=setup.grads)
        with torch.set_grad_enabled(setup.grads):
            want, want_sites = reference(setup, setup.twin, twin_inputs)
        cotangent = randn(torch.Generator().manual_seed(case.seed + 2 + draw), *want.shape, dtype=dtype)
        want_grads = _backward(want, twin_inputs, cotangent.double()) if setup.grads else {}
        naive, naive_sites, naive_grads = None, {}, {}
        if case.dtype in LOW_PRECISION and not pool.degenerate:  # the same math done naively: the yardstick
            naive_inputs = _detached(source, grad=setup.grads)
            with torch.set_grad_enabled(setup.grads):
                naive, naive_sites = reference(setup, setup.module, naive_inputs)
            naive_grads = _backward(naive, naive_inputs, cotangent) if setup.grads else {}
        lazy: dict[str, Tensor] = {}

        def naive32(key: str, source=source, cotangent=cotangent, lazy=lazy) -> Tensor:
            if not lazy:  # the reference in float32, for the float32 fallback of agree()
                naive_inputs = _detached(source, grad=setup.grads)
                with torch.set_grad_enabled(setup.grads):
                    again, again_sites = reference(setup, setup.module, naive_inputs)
                lazy["output"] = again.detach()
                lazy.update({f"weights:{k}": w.detach() for k, w in again_sites.items()})
                if setup.grads:
                    lazy.update({f"grad:{k}": g for k, g in _backward(again, naive_inputs, cotangent).items()})
            return lazy[key]

        for weights in (False, True):
            path = "weights path" if weights else "fused path"
            inputs = _detached(source, grad=setup.grads)
            with torch.set_grad_enabled(setup.grads):
                out, sites = forward(setup, setup.module, inputs, weights)
            grads = _backward(out, inputs, cotangent) if setup.grads else {}
            agree(
                result,
                f"{path} output",
                out.detach(),
                want.detach(),
                case.dtype,
                naive,
                pool=pool,
                naive_fn=lambda: naive32("output"),
            )
            for name, w in sites.items():
                if w is not None:
                    label = "weights" if name == "weights" else f"{name} weights"
                    agree(
                        result,
                        f"{path} {label}",
                        w.detach(),
                        want_sites[name].detach(),
                        case.dtype,
                        naive_sites.get(name),
                        pool=pool,
                        naive_fn=lambda name=name: naive32(f"weights:{name}"),
                    )
            for name, g in grads.items():
                got_g, want_g, naive_g = g, want_grads[name], naive_grads.get(name)
                if case.dtype in LOW_PRECISION and name in setup.queries and setup.kind in QUERY_ONLY_KINDS:
                    # A row with one readable key has query gradient 0 in exact arithmetic; the fused backward
                    # computes it as a difference of equal terms (noise), the naive formula as exactly 0.
                    rows = a_u.sum(-1) >= 2  # (U, Tq)
                    got_g, want_g = setup.rows(g)[rows], setup.rows(want_g)[rows]
                    naive_g = None if naive_g is None else setup.rows(naive_g)[rows]
                agree(
                    result,
                    f"{path} grad {name}",
                    got_g,
                    want_g,
                    case.dtype,
                    naive_g,
                    grad=True,
                    pool=pool,
                    naive_fn=lambda name=name: naive32(f"grad:{name}"),
                )
            if draw == 0:
                kept[weights] = (out, sites, grads)
                base[weights] = (out.detach(), {k: None if w is None else w.detach() for k, w in sites.items()})
        if draw == 0 and not pool.degenerate:
            live = want.numel() * float((~empty).float().mean())  # rows with nothing to attend to are exact zeros
            count = draws(case.dtype, math.ceil(live), cap=MAX_DRAWS if live >= 64 else 4 * MAX_DRAWS)
        draw += 1
    pool.check(result)

    for weights in (False, True):
        path = "weights path" if weights else "fused path"
        out, sites, grads = kept[weights]
        # 2. rows with nothing to attend to: exactly the empty value, weights exactly 0 wherever disallowed,
        #    and no gradient through them
        target = empty_value(setup)
        if empty.any() and target is not None:
            exact(
                result,
                f"{path} output of fully masked rows",
                out.detach()[empty],
                target.to(out.dtype).expand_as(out.detach()[empty]),
            )
        w = sites.get(setup.site)
        if w is not None:
            disallowed = ~setup.allowed.expand_as(w)
            exact(
                result,
                f"{path} weights at disallowed entries",
                w.detach()[disallowed],
                torch.zeros_like(w.detach()[disallowed]),
            )
        if sites.get("self") is not None:  # the decoder's causal self-attention: no weight on the future
            future = ~_end_aligned(case.tq, case.tq).expand_as(sites["self"])
            on_future = sites["self"].detach()[future]
            exact(result, f"{path} self weights on the future", on_future, torch.zeros_like(on_future))
        if empty.any() and setup.grads and setup.kind not in LAYER_KINDS:
            query = setup.queries[0]
            if setup.kind not in SELF_KINDS:  # the query input feeds only queries: its rows' gradient is 0
                exact(
                    result,
                    f"{path} query gradient of fully masked rows",
                    setup.rows(grads[query])[empty],
                    torch.zeros_like(setup.rows(grads[query])[empty]),
                )
            again = _detached(setup.inputs, grad=True)
            rows_out, _ = forward(setup, setup.module, again, weights)
            for name, g in _backward(rows_out[empty], again, torch.ones_like(rows_out[empty])).items():
                exact(result, f"{path} gradient of fully masked rows w.r.t. {name}", g, torch.zeros_like(g))
        elif not empty.any():
            result.not_applicable.append("fully masked rows")

    check_masked_inputs(setup, result, base, a_u, gen)
    check_nan_propagation(setup, result, a_u, empty, gen)
    check_identities(setup, result, a_u, empty)


def _key_inputs(setup: Setup) -> list[str]:
    return list(dict.fromkeys(setup.keys + setup.values))


def check_masked_inputs(setup: Setup, result: Result, base: dict, a_u: Tensor, gen: torch.Generator) -> None:
    """Keys/values a row may not read, changed by +-1e4, leave that row bit for bit; NaN in keys/values that no
    query may read changes nothing and stays out of the gradients."""
    if not setup.grads:  # KV-cache decoding: no mask beyond causality
        result.not_applicable += ["masked keys +-1e4", "NaN in unreadable keys"]
        return
    self_kind = setup.kind in SELF_KINDS
    perturbed = torch.zeros(a_u.shape[0], a_u.shape[2], dtype=torch.bool)  # (U, Tk)
    for u in range(a_u.shape[0]):
        candidates = (~a_u[u]).any(-1).nonzero().flatten()
        if len(candidates):
            row = int(candidates[int(torch.randint(0, len(candidates), (1,), generator=gen))])
            perturbed[u] = ~a_u[u, row]
            if self_kind:
                perturbed[u, row] = False
    protected = (~a_u | ~perturbed[:, None, :]).all(-1)  # (U, Tq): rows that may read no perturbed key
    if self_kind:
        protected &= ~perturbed
    if perturbed.any() and protected.any():
        changed = _detached(setup.inputs)
        for name in _key_inputs(setup):
            rows = setup.rows(changed[name].detach())
            sign = torch.randint(0, 2, rows.shape, generator=gen).to(rows.dtype) * 2 - 1
            rows.add_(1e4 * sign * perturbed[..., None].to(rows.dtype))
        for weights in (False, True):
            with torch.no_grad():
                out, sites = forward(setup, setup.module, changed, weights)
            path = "weights path" if weights else "fused path"
            exact(
                result, f"{path} rows that mask the keys changed by +-1e4", out[protected], base[weights][0][protected]
            )
            w = sites.get(setup.site)
            if w is not None:
                sel = _site_rows(setup, protected, w)
                exact(
                    result,
                    f"{path} weights of rows that mask the keys changed by +-1e4",
                    w[sel],
                    base[weights][1][setup.site][sel],
                )
    else:
        result.not_applicable.append("masked keys +-1e4")

    unreadable = ~a_u.any(1)  # (U, Tk): positions no query may read
    if not unreadable.any():
        result.not_applicable.append("NaN in unreadable keys")
        return
    poisoned = _detached(setup.inputs)
    for name in _key_inputs(setup):
        setup.rows(poisoned[name].detach())[unreadable] = float("nan")
    compared = torch.ones_like(protected)
    if setup.kind in ("attend-self", "EncoderLayer"):  # those positions are also NaN queries / residuals there
        compared = ~unreadable
    with_grads = setup.kind not in ("attend-self", "EncoderLayer")
    for weights in (False, True):
        path = "weights path" if weights else "fused path"
        inputs = _detached(poisoned, grad=with_grads)
        module = setup.module
        for p in module.parameters():
            p.grad = None
        with torch.set_grad_enabled(with_grads):
            out, _ = forward(setup, module, inputs, weights)
        exact(
            result,
            f"{path} output with NaN in unreadable keys/values",
            out.detach()[compared],
            base[weights][0][compared],
        )
        if with_grads:
            leaves = [*inputs.values(), *(p for p in module.parameters() if p.requires_grad)]
            grads = torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
            flat = torch.cat([g.detach().flatten().double() for g in grads if g is not None])
            finite(result, f"{path} gradients (inputs and parameters) with NaN in unreadable keys/values", flat)


def _site_rows(setup: Setup, rows: Tensor, w: Tensor) -> Tensor:
    """A [U, Tq] row selection as a [B, H, Tq] selection of a weights tensor."""
    b, h = w.shape[:2]
    if setup.split:
        return rows.reshape(b, h, -1)
    return rows[:, None, :].expand(b, h, rows.shape[-1])


def check_nan_propagation(setup: Setup, result: Result, a_u: Tensor, empty: Tensor, gen: torch.Generator) -> None:
    """NaN in a query, or in a key/value that a row reads, makes that row NaN on every path; a NaN key leaves the
    rows that mask it unchanged."""
    live = ~empty
    if setup.kind in ("SelfAttention", "SelfAttention-noproj"):  # unreadable positions are zeroed, as queries too
        live &= a_u.any(1)[:, setup.offset :]
    live = live.nonzero()
    if not len(live):
        result.not_applicable.append("NaN propagation")
        return
    u, row = (int(t) for t in live[int(torch.randint(0, len(live), (1,), generator=gen))])
    readable = a_u[u, row].nonzero().flatten()
    key = int(readable[int(torch.randint(0, len(readable), (1,), generator=gen))])
    trials = [("query", setup.queries, row + setup.offset), ("value", setup.values, key)]
    if setup.kind == "attend-cross" and setup.score != "location":  # location logits do not read keys
        trials.append(("key", ("k",), key))
        with torch.no_grad():
            base_rows = {w: forward(setup, setup.module, _detached(setup.inputs), w)[0][u] for w in (False, True)}
    for label, names, position in trials:
        poisoned = _detached(setup.inputs)
        for name in names:
            setup.rows(poisoned[name].detach())[u, position] = float("nan")
        for weights in (False, True):
            with torch.no_grad():
                out, _ = forward(setup, setup.module, poisoned, weights)
            path = "weights path" if weights else "fused path"
            all_nan(result, f"{path} row reading a NaN {label}", out[u, row])
            if label == "key":  # a NaN key reaches exactly the rows that may read it
                masking = ~a_u[u, :, key]  # (Tq,): rows of this item that mask the poisoned key
                same = torch.equal(out[u][masking], base_rows[weights][masking])
                result.checks += 1
                if not same:
                    result.mismatch.append(f"{path} rows that mask a NaN key (another row reads it) changed")


def check_identities(setup: Setup, result: Result, a_u: Tensor, empty: Tensor) -> None:
    """The core: equal keys give the masked mean of the values; one key gives its value exactly. Layers: with
    zero residual branches the layer is exactly the identity."""
    case = setup.case
    if setup.kind in LAYER_KINDS:
        gated = copy.deepcopy(setup.module)
        with torch.no_grad():
            for proj in (m for name, m in gated.named_modules() if name.endswith(("out_proj", "ffn.down"))):
                proj.weight.zero_()
                proj.bias.zero_()
            out, _ = forward(setup, gated, _detached(setup.inputs), False)
        exact(result, "zero residual branches give the identity", out, setup.rows(setup.inputs["x"].detach()))
        return
    if not setup.kind.startswith("attend"):
        return
    if case.tk == 1:
        value = setup.rows(setup.inputs[setup.values[0]].detach())  # (U, 1, Dv)
        want = torch.where(empty[..., None], torch.zeros((), dtype=value.dtype), value.expand(-1, case.tq, -1))
        for weights in (False, True):
            with torch.no_grad():
                out, _ = forward(setup, setup.module, _detached(setup.inputs), weights)
            exact(result, f"{'weights' if weights else 'fused'} path: one key gives its value", out, want)
    if setup.score == "location" or "bias" in setup.call:
        result.not_applicable.append("equal keys give the mean")
        return
    same = _detached(setup.inputs)
    for name in ("x",) if setup.kind == "attend-self" else ("k",):  # keys only: the values stay distinct
        rows = setup.rows(same[name].detach())
        rows.copy_(rows[:, :1].expand_as(rows))
    value = setup.rows(same[setup.values[0]].detach()).double()  # (U, Tk, Dv)
    weights_mean = a_u.double() / a_u.sum(-1, keepdim=True).clamp_min(1)
    want = weights_mean @ value  # (U, Tq, Dv): the masked mean, 0 for empty rows
    naive = None
    if case.dtype in LOW_PRECISION:
        with torch.no_grad():
            naive, _ = reference(setup, setup.module, same)
    for weights in (False, True):
        with torch.no_grad():
            out, _ = forward(setup, setup.module, same, weights)
        agree(
            result,
            f"{'weights' if weights else 'fused'} path: equal keys give the mean of the values",
            out,
            want,
            case.dtype,
            naive,
        )


# -- vision blocks --------------------------------------------------------------------------------------------------
def vision_block(name: str, dim: int) -> tuple[str, int, dict]:
    """``(registry name, channels, options)`` giving ``dim`` features per head (per attention channel)."""
    if name.startswith("nonlocal-"):
        return "nonlocal", 2 * dim, {"pairwise": name.split("-", 1)[1]}  # reduction 2: inner = dim
    return {
        "se": ("se", dim, {"reduction": min(4, dim)}),
        "eca": ("eca", dim, {}),
        "cbam": ("cbam", dim, {"reduction": min(4, dim)}),
        "sagan": ("sagan", 8 * dim, {}),  # query/key 8 * dim // 8, value 4 * dim
        "aa_conv": ("aa_conv", 4 * dim, {"heads": 2, "max_offset": 8}),  # attention channels 2 * dim
        "sasa": ("sasa", 2 * dim, {"heads": 2, "kernel_size": 5}),
        "botnet": ("botnet", 8 * dim, {"heads": 2, "max_offset": 8}),  # bottleneck 2 * dim
        "criss_cross": ("criss_cross", 8 * dim, {}),
        "vit": ("vit", 3, {"dim": 2 * dim, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16}),
    }[name]


def vision_reference(name: str, block: nn.Module, x: Tensor) -> Tensor:
    if name == "vit":
        return vision_ref.vit(block, x)[0]
    return vision_ref.REFERENCES[vision_block(name, 1)[0]](block, x)[0]


def run_vision(case: Case, result: Result) -> None:
    name = case.module.split("/", 1)[1]
    dtype = DTYPES[case.dtype]
    registry, channels, options = vision_block(name, case.dim)
    gen = torch.Generator().manual_seed(case.seed)
    torch.manual_seed(case.seed)
    fresh = get_block(registry, channels, **options)
    low, twin = rounded(wake(copy.deepcopy(fresh)), dtype)  # training mode: BatchNorm uses batch statistics
    x = randn(gen, case.batch, channels, case.tq, case.tk, dtype=dtype)
    pool, draw, count = Pooled(case.dtype, degenerate_norm(case), KINKED.get(name)), 0, 1
    while draw < count:
        sample = x if draw == 0 else randn(torch.Generator().manual_seed(case.seed + 100 + draw), *x.shape, dtype=dtype)
        leaf = sample.clone().requires_grad_()
        out = low(leaf)
        cotangent = randn(torch.Generator().manual_seed(case.seed + 2 + draw), *out.shape, dtype=dtype)
        (grad,) = torch.autograd.grad(out, leaf, cotangent)
        leaf64 = sample.double().requires_grad_()
        want = vision_reference(name, twin, leaf64)
        (want_grad,) = torch.autograd.grad(want, leaf64, cotangent.double())
        naive = naive_grad = None
        if case.dtype in LOW_PRECISION and not pool.degenerate:
            leaf_low = sample.clone().requires_grad_()
            with vision_reference_in(dtype):
                naive = vision_reference(name, low, leaf_low)
            (naive_grad,) = torch.autograd.grad(naive, leaf_low, cotangent)
        naive = None if naive is None else naive.detach()
        lazy: list[Tensor] = []

        def naive32(index: int, sample=sample, cotangent=cotangent, lazy=lazy) -> Tensor:
            if not lazy:  # the reference in float32, for the float32 fallback of agree()
                leaf32 = sample.clone().requires_grad_()
                with vision_reference_in(torch.float32):
                    again = vision_reference(name, low, leaf32)
                lazy += [again.detach(), torch.autograd.grad(again, leaf32, cotangent)[0]]
            return lazy[index]

        agree(result, "output", out.detach(), want.detach(), case.dtype, naive, pool=pool, naive_fn=lambda: naive32(0))
        agree(
            result,
            "input gradient",
            grad,
            want_grad,
            case.dtype,
            naive_grad,
            grad=True,
            pool=pool,
            naive_fn=lambda: naive32(1),
        )
        count = draws(case.dtype, out.numel()) if draw == 0 and not pool.degenerate else count
        draw += 1
    pool.check(result)

    # NaN in one pixel propagates to that pixel's output (the pooled features for ViT)
    b, row, col = case.batch - 1, case.tq // 2, case.tk // 2
    poisoned = x.clone()
    poisoned[b, :, row, col] = float("nan")
    with torch.no_grad():
        out = low(poisoned)
    all_nan(result, "output at a NaN pixel", out[b] if name == "vit" else out[b, :, row, col])

    if name in GATED_BLOCKS:  # zero-initialized gates: exactly the identity (botnet: relu) of the input
        with torch.no_grad():
            exact(result, "zero-initialized gate gives the identity", fresh.to(dtype)(x), GATED_BLOCKS[name](x))
    else:
        result.not_applicable.append("zero-initialized gate")
    result.not_applicable += ["masks (vision blocks take none)"]


# -- RNN encoder-decoders and the LSTMN ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seq2SeqBatch:
    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor


SRC_VOCAB, TGT_VOCAB, PAD, BOS, UNUSED = 13, 11, 0, 1, 4  # real tokens are drawn from 5..; UNUSED never is


def run_rnn(case: Case, result: Result) -> None:
    style, score = case.module.split("/", 1)[1].split("-")
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(case.seed)
    torch.manual_seed(case.seed)
    config = RNNConfig(
        src_vocab=SRC_VOCAB,
        tgt_vocab=TGT_VOCAB,
        embed_dim=6,
        hidden=case.dim,
        cell="gru",
        attention=style,
        score=score,
        heads=1,
        project=False,
        dropout=0.0,
        max_len=MAX_LEN,
    )
    low, twin = rounded(RNNSeq2Seq(config).eval(), dtype)
    lengths = torch.tensor(
        _lengths(case.mask, case.batch, case.tk, gen) if case.mask != "none" else [case.tk] * case.batch
    )
    padded = torch.arange(case.tk)[None, :] >= lengths[:, None]  # (B, S)

    def tokens(g: torch.Generator) -> Seq2SeqBatch:
        src = torch.randint(5, SRC_VOCAB, (case.batch, case.tk), generator=g).masked_fill(padded, PAD)
        tgt = torch.randint(5, TGT_VOCAB, (case.batch, case.tq), generator=g)
        tgt[:, 0] = BOS
        return Seq2SeqBatch(src, lengths, tgt)

    batch = tokens(gen)
    src, tgt = batch.src, batch.tgt_in
    out = low(batch, return_weights=True)
    logits, weights = out.logits, out.weights["decoder.cross"][:, 0]  # (B, T, V), (B, T, S)
    pool = Pooled(case.dtype)
    for draw in range(draws(case.dtype, logits.numel() + weights.numel(), cap=16)):
        sample = batch if draw == 0 else tokens(torch.Generator().manual_seed(case.seed + 100 + draw))
        with torch.no_grad():
            got = low(sample, return_weights=True) if draw else out
            want_logits, want_weights = seq_ref.decoder_reference(twin, sample)
            # half precision: the yardstick; float32: the fallback of agree() (the same loops in float32)
            naive = seq_ref.decoder_reference(low, sample) if case.dtype != "float64" else (None, None)
        got_weights = got.weights["decoder.cross"][:, 0].detach()
        agree(
            result,
            "logits",
            got.logits.detach(),
            want_logits,
            case.dtype,
            naive[0],
            pool=pool,
            naive_fn=lambda naive=naive: naive[0],
        )
        agree(
            result,
            "cross weights",
            got_weights,
            want_weights,
            case.dtype,
            naive[1],
            pool=pool,
            naive_fn=lambda naive=naive: naive[1],
        )
    pool.check(result)
    exact(
        result,
        "weights at padded source positions",
        weights.detach()[padded[:, None].expand_as(weights)],
        torch.zeros(int(padded.sum()) * case.tq, dtype=weights.dtype),
    )
    params = [p for p in low.parameters() if p.requires_grad]
    grads = torch.autograd.grad(logits, params, randn(gen, *logits.shape, dtype=dtype), allow_unused=True)
    finite(result, "parameter gradients", torch.cat([g.flatten().double() for g in grads if g is not None]))
    result.not_applicable += ["reference gradients (the loop reference is not differentiable)", "fully masked rows"]

    if padded.any():  # padding tokens changed, or made NaN through their embedding, change nothing
        changed = Seq2SeqBatch(src.masked_fill(padded, UNUSED), lengths, tgt)
        poisoned_model = copy.deepcopy(low)
        with torch.no_grad():
            poisoned_model.encoder.embed.weight[UNUSED] = float("nan")
            for model, label in ((low, "other padding tokens"), (poisoned_model, "NaN padding embeddings")):
                again = model(changed, return_weights=True)
                exact(result, f"logits with {label}", again.logits, logits.detach())
                exact(result, f"weights with {label}", again.weights["decoder.cross"][:, 0], weights.detach())
    else:
        result.not_applicable += ["masked keys changed", "NaN in unreadable keys"]
    nan_model = copy.deepcopy(low)
    b = case.batch - 1
    with torch.no_grad():
        nan_model.encoder.embed.weight[int(src[b, 0])] = float("nan")  # a real token of item b
        all_nan(result, "logits of an item reading a NaN embedding", nan_model(batch)[b])


def run_lstmn(case: Case, result: Result) -> None:
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(case.seed)
    torch.manual_seed(case.seed)
    low, twin = rounded(LSTMNLayer(4, case.dim).eval(), dtype)
    x = randn(gen, case.batch, case.tq, 4, dtype=dtype)
    # The batched reference is the oracle over the whole length; it must agree with the per-item loop oracle of
    # tests/seq on the first steps (causal: the first steps of a long sequence are those of a short one).
    prefix = min(case.tq, 12)
    with torch.no_grad():
        loop = [seq_ref.lstmn_reference(twin, x[b, :prefix].double()) for b in range(case.batch)]
        batched_states, batched_weights = ref_lstmn(twin, x[:, :prefix].double())
    agree(
        result,
        "batched reference states vs the loop oracle",
        batched_states,
        torch.stack([s for s, _ in loop]),
        "float64",
        None,
    )
    agree(
        result,
        "batched reference weights vs the loop oracle",
        batched_weights[:, 0],
        torch.stack([w for _, w in loop]),
        "float64",
        None,
    )
    pool, draw, count = Pooled(case.dtype), 0, 1
    while draw < count:
        sample = x if draw == 0 else randn(torch.Generator().manual_seed(case.seed + 100 + draw), *x.shape, dtype=dtype)
        leaf = sample.clone().requires_grad_()
        states, weights = low(leaf, return_weights=True)
        cotangent = randn(torch.Generator().manual_seed(case.seed + 2 + draw), *states.shape, dtype=dtype)
        (grad,) = torch.autograd.grad(states, leaf, cotangent)
        leaf64 = sample.double().requires_grad_()
        want_states, want_weights = ref_lstmn(twin, leaf64)
        (want_grad,) = torch.autograd.grad(want_states, leaf64, cotangent.double())
        naive = (None, None, None)
        if case.dtype in LOW_PRECISION:
            leaf_low = sample.clone().requires_grad_()
            naive_states, naive_weights = ref_lstmn(low, leaf_low)
            (naive_grad,) = torch.autograd.grad(naive_states, leaf_low, cotangent)
            naive = (naive_states.detach(), naive_weights.detach(), naive_grad)
        lazy: list[Tensor] = []

        def naive32(index: int, sample=sample, cotangent=cotangent, lazy=lazy) -> Tensor:
            if not lazy:  # the reference in float32, for the float32 fallback of agree()
                leaf32 = sample.clone().requires_grad_()
                again, again_w = ref_lstmn(low, leaf32)
                lazy += [again.detach(), again_w.detach(), torch.autograd.grad(again, leaf32, cotangent)[0]]
            return lazy[index]

        agree(
            result,
            "states",
            states.detach(),
            want_states.detach(),
            case.dtype,
            naive[0],
            pool=pool,
            naive_fn=lambda: naive32(0),
        )
        agree(
            result,
            "weights",
            weights.detach(),
            want_weights.detach(),
            case.dtype,
            naive[1],
            pool=pool,
            naive_fn=lambda: naive32(1),
        )
        agree(
            result,
            "input gradient",
            grad,
            want_grad,
            case.dtype,
            naive[2],
            grad=True,
            pool=pool,
            naive_fn=lambda: naive32(2),
        )
        if draw == 0:
            states, weights = states.detach(), weights.detach()
            kept = (states, weights)
            count = draws(case.dtype, states.numel() + weights.numel(), cap=16)
        draw += 1
    pool.check(result)
    states, weights = kept
    future = ~torch.tensor([[j < i for j in range(case.tq)] for i in range(case.tq)])  # history: j < t only
    exact(
        result,
        "weights on the present and future (row 0: nothing to attend to)",
        weights.detach()[:, 0][future.expand(case.batch, -1, -1)],
        torch.zeros(case.batch * int(future.sum()), dtype=weights.dtype),
    )

    t = case.tq // 2
    for label, fill in (("+-1e4", None), ("NaN", float("nan"))):
        changed = x.clone()
        if fill is None:
            sign = torch.randint(0, 2, changed[:, t + 1 :].shape, generator=gen).to(dtype) * 2 - 1
            changed[:, t + 1 :] += 1e4 * sign
        else:
            changed[:, t + 1 :] = fill
        with torch.no_grad():
            again, again_w = low(changed, return_weights=True)
        exact(result, f"states up to t with the future changed by {label}", again[:, : t + 1], states[:, : t + 1])
        exact(
            result,
            f"weights up to t with the future changed by {label}",
            again_w[:, :, : t + 1],
            weights[:, :, : t + 1],
        )
    poisoned = x.clone()
    poisoned[-1, t] = float("nan")
    with torch.no_grad():
        all_nan(result, "states from a NaN input on", low(poisoned)[0][-1, t:])


# -- entry point -------------------------------------------------------------------------------------------------
RUNNERS = {"attention": run_attention, "vision": run_vision, "rnn": run_rnn, "lstmn": run_lstmn}


def run_case(case: Case, tier: str) -> Result:
    """Run every check of ``case``; record it in the tally. Crashes are recorded, then re-raised."""
    result = Result(case)
    try:
        with one_thread():
            RUNNERS[case.family](case, result)
    except Exception as error:
        if case.dtype == "float16" and not half_supported(error):
            result.not_applicable.append(f"float16 not supported: {error}")
            TALLY.add(tier, result)
            return result
        TALLY.crash(tier, case, error)
        raise
    TALLY.add(tier, result)
    return result


def report(results: Sequence[Result]) -> str:
    return "\n".join(f"{r.case}: {m}" for r in results for m in r.failures())


__all__ = ["SPACES", "TALLY", "Case", "cpu_tier", "report", "run_case"]
